"""The sweep: an Optuna study over batch size × learning rate, every trial mirrored to MLflow.

    python -m experiments.sweep                  # the default study: about two minutes on 2 CPUs
    python -m experiments.sweep --workers 2      # two worker processes on the same study
    python -m experiments.sweep --population 8   # 8 trials of one batch size per training pass
    python -m experiments.sweep --n-trials 10 --epochs 3 --batch-sizes 64 256 --lr-range 0.01 1
    python -m experiments.sweep --storage postgresql://postgres@127.0.0.1:5432/optuna \\
        --tracking-uri http://127.0.0.1:5000 --worker-id 4   # one of several machines
    python -m experiments.reconcile --study-name softmaxreg-mnist   # repair MLflow from Optuna

Every flag comes from `SweepConfig` plus `TrainConfig` and `DataConfig` (see `--help`). Invalid
values, an unreachable store or a study that cannot be resumed exit with status 2 before any
file, database or data folder is created.

Data flow, one way: flags → `SweepConfig` + `Stores` → the study, opened race-free under the
study lock (`experiments.study`) → per trial, `experiments.objective` trains and stores every
figure on the trial → `experiments.mirror` copies the trial to its MLflow run → reconcile at
start and end → `experiments.report`. Optuna's storage is the source of truth; MLflow is a
mirror that `python -m experiments.reconcile` can always rebuild.

Exit status: 0 done; 1 the tracking store stayed unreachable for --tracking-wait-seconds (the
finished trials are safe in Optuna), Optuna's storage for --storage-wait-seconds, or a disk is
full (one line naming the path); 2 bad input; 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP (the
running trial is stored as FAIL with the reason; run the same command again to resume).
"""

from __future__ import annotations

from experiments.plot_server import PlotServer, fork_plot_server_early

AS_COMMAND = __name__ == "__main__"
"""True in `python -m experiments.sweep`. Imported (by a test, a notebook), `main` takes none of
the command's process-wide steps: no early plot server, no frozen heap."""

EARLY_PLOT_SERVER: PlotServer | None = fork_plot_server_early() if AS_COMMAND else None
"""The command's plot server, forked before the imports below (torch and MLflow, ~2 s here) so
that its own imports run on the core they leave idle (`experiments.plot_server`); `main` keeps
it or stops it once the flags and the device are known. Not when imported: only the command
forks first thing."""

import argparse
import functools
import gc
import os
import sys
from collections.abc import Sequence
from dataclasses import fields, replace

import torch

from experiments.common import load_data_or_exit, say
from experiments.config import SweepConfig, check_train_config, study_name_for
from experiments.coordinator import run_coordinator
from experiments.finish_handoff import FinishHandoff
from experiments.interrupts import Terminated, install_signal_handlers
from experiments.mirror import TrackingUnavailable
from experiments.plot_process import discard_plot_server, prepare_plot_server
from experiments.process_exit import exit_without_teardown
from experiments.report import format_report, this_run_line
from experiments.store_code import preload_store_code
from experiments.store_faults import (
    StorageUnavailable,
    disk_full,
)
from experiments.store_files import create_stores_or_exit
from experiments.store_urls import Stores
from experiments.stores import (
    ServerRefused,
    StoreError,
    check_optuna_storage,
    check_tracking_uri,
)
from experiments.study import (
    SweepError,
    check_resumable,
    find_study,
)
from experiments.third_party_warnings import hide_third_party_warnings
from experiments.trial_budget import TrialBudget
from experiments.worker import SWEPT_FIELDS, run_sweep
from experiments.workers import (
    resolve_workers,
)
from softmaxreg.cli import add_dataclass_arguments, dataclass_from_args, with_flag_names
from softmaxreg.config import ConfigError, DataConfig, TrainConfig
from softmaxreg.data import DataSplits
from softmaxreg.device import DeviceUnavailableError, git_commit, resolve_device


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.sweep",
        description="Optuna study over batch size × learning rate for softmax regression, "
        "every trial mirrored to MLflow; run it on several processes or machines at once.",
    )
    add_dataclass_arguments(parser, SweepConfig, title="sweep")
    add_dataclass_arguments(
        parser, TrainConfig, title="training (the same for every trial)", skip=SWEPT_FIELDS
    )
    add_dataclass_arguments(parser, DataConfig, title="data")
    return parser


def parse_args(
    argv: Sequence[str] | None = None,
) -> tuple[argparse.ArgumentParser, SweepConfig, TrainConfig, DataConfig]:
    """Parse and validate the flags; invalid values exit with status 2 naming the flag."""
    parser = build_parser()
    args = parser.parse_args(argv)
    sweep = dataclass_from_args(parser, SweepConfig, args)
    train_config = dataclass_from_args(parser, TrainConfig, args)
    data_config = dataclass_from_args(parser, DataConfig, args)
    return parser, sweep, train_config, data_config


def check_before_start(
    sweep: SweepConfig, train_config: TrainConfig, data_config: DataConfig
) -> Stores:
    """Everything that can be checked before data or stores are touched; raises on failure."""
    check_train_config(sweep, train_config, data_config)
    stores = Stores.from_config(sweep)
    check_optuna_storage(stores.optuna_url, "--storage")
    check_tracking_uri(stores.tracking_uri, "--tracking-uri")
    existing = find_study(stores.optuna_url, study_name_for(sweep, data_config))
    if existing is not None:
        check_resumable(existing, sweep, train_config, data_config, data=None)
    return stores


def run_one_worker(
    parser: argparse.ArgumentParser,
    train_config: TrainConfig,
    data_config: DataConfig,
    data: DataSplits,
    stores: Stores,
    sweep: SweepConfig,
    threads: int = 0,
    *,
    handoff: FinishHandoff | None = None,
    budget: TrialBudget | None = None,
) -> int:
    """One worker on the study, then its report; the exit status. In this process (--workers
    1) or in a worker forked by `run_workers` (with its own `sweep` and `threads`, and its
    command's `handoff`: its report is then the one line its command collects, and `budget`,
    the --n-trials it shares with its command's other workers)."""
    install_signal_handlers()
    if threads:
        train_config = replace(train_config, threads=threads)
    try:
        outcome = run_sweep(sweep, train_config, data_config, data, handoff=handoff, budget=budget)
    except SweepError as error:
        parser.error(str(error))
    except Terminated as stop:
        say(
            f"\nstopped by {stop.signal_name}: the running trial is stored as FAIL; run the "
            "same command again to resume"
        )
        return stop.exit_status
    except KeyboardInterrupt:
        say("\ninterrupted: finished trials are kept; run the same command again to resume")
        return 130
    except TrackingUnavailable as error:
        say(
            f"error: {error}; every finished trial is safe in Optuna: run the same command "
            "or python -m experiments.reconcile once MLflow is back"
        )
        return 1
    except StorageUnavailable as error:
        say(
            f"error: {error}; every finished trial is kept there: run the same command once "
            "it answers (it, or python -m experiments.reconcile, closes what this worker "
            "left open)"
        )
        return 1
    except Exception as error:  # a full disk wherever it surfaced: one line, not a traceback
        fault = disk_full(error, where=os.getcwd())
        if fault is None:
            raise
        say(f"error: {fault}")
        return 1
    print(this_run_line(outcome) if handoff is not None else format_report(outcome, sweep, stores))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    hide_third_party_warnings()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, sweep, train_config, data_config = parse_args(argv)
    try:
        device = resolve_device(train_config.device)
        stores = check_before_start(sweep, train_config, data_config)
    except ConfigError as error:  # settings that clash between the configs: name the flag
        parser.error(with_flag_names(str(error), {f.name for f in fields(SweepConfig)}))
    except ServerRefused as error:  # one line: nothing about the flags is wrong
        say(f"{parser.prog}: error: {error}")
        return 2
    except (DeviceUnavailableError, StoreError, SweepError) as error:
        parser.error(str(error))
    sweep = replace(sweep, workers=resolve_workers(sweep, device))  # 0 (auto) made a count here
    if sweep.workers > 1:
        # Workers are forked from this process: torch's thread pool must not exist yet (a
        # forked OpenMP pool hangs), and the data stays on the CPU until each worker moves it.
        torch.set_num_threads(1)
        device = torch.device("cpu")
    # The commit every record carries, read (and cached) before any child exists: forked
    # workers inherit it rather than each forking git twice, and no git runs beside them.
    git_commit()
    prepare_plot_server(device, EARLY_PLOT_SERVER)  # its imports on the core left idle
    try:
        data = load_data_or_exit(data_config, device)  # once, before any worker: no race
        create_stores_or_exit(stores.optuna_url, stores.tracking_uri)  # whole, or not at all
        # The stores' code, loaded here once rather than by every forked worker after the fork.
        preload_store_code(stores)
        if AS_COMMAND:
            # What is loaded by now (torch, MLflow, SQLAlchemy: millions of objects) lives as
            # long as the command, so the collector is told never to look at it again. Each full
            # collection otherwise walked all of it: 0.23 s each, 7 of them (1.6 s) in a
            # 100-trial one-worker sweep, on the thread that trains. Not in a caller's process:
            # its garbage of the moment would be frozen with it, never to be freed.
            gc.freeze()
        worker = functools.partial(run_one_worker, parser, train_config, data_config, data, stores)
        if sweep.workers > 1:
            name = study_name_for(sweep, data_config)
            return run_coordinator(worker, sweep, train_config, data, stores, name)
        return worker(sweep)
    finally:
        discard_plot_server()


if __name__ == "__main__":
    exit_without_teardown(main())
