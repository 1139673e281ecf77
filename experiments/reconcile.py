"""Make MLflow match the Optuna study again: every trial gets exactly one complete run.

    python -m experiments.reconcile --study-name softmaxreg-mnist
    python -m experiments.reconcile --study-name shared --storage postgresql://postgres@db/optuna \\
        --tracking-uri http://127.0.0.1:5000

Optuna's storage is the source of truth. For each trial, the run is found by (study UUID, trial
number) and rebuilt from the trial's record where it is missing, empty or out of date (a
tracking outage, a crash half-way through a mirror); a RUNNING trial whose worker stopped
beating (kill -9, preemption) is first marked FAIL, and its run closed with the reason (one
whose worker still beats is left to that worker);
duplicate runs of one trial are deleted, keeping the oldest. Running it twice changes nothing
the second time. Every worker does the same at its start and end; this command is for after an
outage, or to check (it prints how many runs it repaired).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

import optuna

from experiments.common import say
from experiments.config import SweepConfig
from experiments.locks import store_lock
from experiments.mirror import Mirror
from experiments.process_exit import exit_without_teardown
from experiments.store_faults import is_store_failure, store_failure_line
from experiments.store_urls import Stores
from experiments.stores import (
    ServerRefused,
    StoreError,
    check_optuna_storage,
    check_tracking_uri,
)
from experiments.study import OPTUNA_SCHEMA_LOCK, find_study
from experiments.third_party_warnings import hide_third_party_warnings
from experiments.worker_registry import live_workers
from softmaxreg.cli import add_dataclass_arguments, dataclass_from_args
from softmaxreg.config import ConfigError


@dataclass(frozen=True)
class ReconcileConfig:
    """Which study to reconcile, in which stores."""

    study_name: str = "softmaxreg-mnist"
    """Optuna study (and MLflow experiment) to reconcile."""

    storage: str = SweepConfig.storage
    """Optuna storage URL the sweep used."""

    tracking_uri: str = SweepConfig.tracking_uri
    """MLflow tracking URI the sweep used."""

    heartbeat_seconds: int = SweepConfig.heartbeat_seconds
    """The sweep's --heartbeat-seconds: a RUNNING trial silent for 3 of them is failed."""

    tracking_wait_seconds: float = SweepConfig.tracking_wait_seconds
    """How long to wait for an unreachable tracking store before giving up (exit 1)."""

    def sweep(self) -> SweepConfig:
        """The same settings as a `SweepConfig`, which validates them (retries are off: a
        repair never queues trials again)."""
        return SweepConfig(
            study_name=self.study_name,
            storage=self.storage,
            tracking_uri=self.tracking_uri,
            heartbeat_seconds=self.heartbeat_seconds,
            tracking_wait_seconds=self.tracking_wait_seconds,
            retries=0,
        )


def reconcile_study(sweep: SweepConfig, log=print) -> tuple[Mirror, int, int]:
    """Reconcile `sweep.study_name`; return (mirror, trials, runs repaired)."""
    stores = Stores.from_config(sweep)
    study = find_study(stores.optuna_url, sweep.study_name, sweep)
    if study is None:
        raise StoreError(f"--study-name {sweep.study_name}: no such study in {stores.shown()[0]}")
    mirror = Mirror.open(stores, study, wait_seconds=sweep.tracking_wait_seconds, log=log)
    with store_lock(stores.optuna_url, OPTUNA_SCHEMA_LOCK):  # who creates a missing parent
        mirror.ensure_parent_run(study, {"optuna.study_name": sweep.study_name}, reopen=False)
    repaired = 0
    parent = mirror.call(mirror.client.get_run, mirror.parent_run_id)
    if parent.info.status == "RUNNING" and not live_workers(study):
        # Every worker is gone (killed, preempted) without closing the study's run. Closed
        # first, so this same pass also keeps the best model, which waits for a closed parent.
        mirror.call(mirror.client.set_terminated, mirror.parent_run_id, "KILLED")
        repaired += 1
    report = mirror.reconcile(study)
    return mirror, report.trials, repaired + report.mismatches


def main(argv: Sequence[str] | None = None) -> int:
    hide_third_party_warnings()
    parser = argparse.ArgumentParser(
        prog="python -m experiments.reconcile",
        description="Rebuild a study's MLflow runs from its Optuna trials (idempotent).",
    )
    add_dataclass_arguments(parser, ReconcileConfig, title="reconcile")
    config = dataclass_from_args(parser, ReconcileConfig, parser.parse_args(argv))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        sweep = config.sweep()
        stores = Stores.from_config(sweep)
        check_optuna_storage(stores.optuna_url, "--storage")
        check_tracking_uri(stores.tracking_uri, "--tracking-uri")
        _, trials, repaired = reconcile_study(sweep, log=say)
    except ServerRefused as error:  # one line: nothing about the flags is wrong
        say(f"{parser.prog}: error: {error}")
        return 2
    except (StoreError, ConfigError) as error:
        parser.error(str(error))
    except Exception as error:  # either store out of reach (past the wait) or full
        if not is_store_failure(error):
            raise
        say(f"error: {store_failure_line(error)}")
        return 1
    print(f"study {config.study_name}: {trials} trials, {repaired} runs repaired")
    return 0


if __name__ == "__main__":
    exit_without_teardown(main())
