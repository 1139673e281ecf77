"""One worker's life on a study: open it, run trials, mirror them, close up.

    outcome = run_sweep(sweep, train_config, data_config, data)   # what the CLI runs per worker

`python -m experiments.sweep` calls `run_sweep` once per worker process (see
`experiments.workers` for several). The study and its parent run are opened under the study
lock; each trial is mirrored to MLflow as it starts and ends; every trial of the study is
reconciled at the start and the end; the last worker of the study closes the parent run with a
summary of the whole study. Interrupted (Ctrl-C, SIGTERM, SIGHUP) or cut off from MLflow, the
worker closes what it can in one attempt and re-raises; what it could not close, the next
worker or `python -m experiments.reconcile` closes. Every step that reads or writes Optuna's
storage waits out an outage of it (`experiments.store_faults.StorageWatch`); the trial loop
then fails the trials it held and goes on.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict

import optuna
from optuna.trial import TrialState

from experiments.common import say
from experiments.config import SweepConfig, check_train_config, study_name_for
from experiments.finish_handoff import FinishHandoff
from experiments.interrupts import GATE
from experiments.locks import store_lock
from experiments.mirror import Mirror
from experiments.objective import Objective
from experiments.report import (
    SweepOutcome,
    opening_line,
)
from experiments.results import best_per_batch_size, trials_table
from experiments.store_faults import StorageWatch, is_store_failure
from experiments.store_urls import Stores
from experiments.stores import display_url
from experiments.study import (
    OPTUNA_SCHEMA_LOCK,
    DataIdentity,
    make_sampler,
    open_or_create_study,
    open_storage,
)
from experiments.study_end import StudyEnd
from experiments.trial_budget import SharedProgress, TrialBudget
from experiments.trial_loop import run_trials_through_outages
from experiments.trial_tracker import TrialTracker
from experiments.worker_registry import WorkerRegistry
from softmaxreg.config import DataConfig, TrainConfig
from softmaxreg.data import DataSplits
from softmaxreg.device import environment, resolve_device

SWEPT_FIELDS = ("batch_size", "lr")
"""TrainConfig fields the study chooses per trial; they have no flag of their own."""


def environment_tags(data: DataSplits) -> dict[str, str]:
    env = environment(data.device)
    return {
        **env,
        "dataset": data.name,
        "dataset_checksum": data.checksum,
        "mlflow.source.name": "experiments.sweep",
        "mlflow.source.type": "LOCAL",
        "mlflow.source.git.commit": env["git_commit"],
    }


def parent_tags(sweep: SweepConfig, train_config: TrainConfig, data: DataSplits, stores: Stores):
    settings = {
        **{f"sweep.{k}": v for k, v in asdict(sweep).items() if k not in ("quiet", "storage")},
        **{f"train.{k}": v for k, v in asdict(train_config).items() if k not in SWEPT_FIELDS},
    }
    # A URL's password is never recorded: --storage is the optuna.storage tag (normalised),
    # --tracking-uri as given, both shown without it.
    settings["sweep.tracking_uri"] = display_url(sweep.tracking_uri)
    return {
        **environment_tags(data),
        "optuna.storage": stores.shown()[0],
        **{k: str(v) for k, v in settings.items() if str(v) != ""},  # no empty tags
    }


def fixed_settings(sweep: SweepConfig, data_config: DataConfig) -> dict[str, object]:
    """What every trial records besides its training settings (no empty values)."""
    data = {k: v for k, v in asdict(data_config).items() if v != ""}
    return {**data, "optimizer": "sgd", "objective": sweep.objective}


def open_study_and_mirror(
    sweep: SweepConfig,
    stores: Stores,
    study_name: str,
    train_config: TrainConfig,
    data: DataSplits,
    worker_id: int,
    log: Callable[[str], None],
    data_config: DataConfig | None = None,
) -> tuple[optuna.Study, Mirror, list[str]]:
    """Open or create the study, its MLflow experiment and parent run, under the study lock."""
    identity = DataIdentity(data.name, data.checksum)
    with store_lock(stores.optuna_url, OPTUNA_SCHEMA_LOCK):
        storage = open_storage(stores.optuna_url, sweep)
        study, notes = open_or_create_study(
            sweep,
            storage,
            study_name,
            train_config,
            identity,
            optuna.samplers.RandomSampler(),
            data_config,
        )
        study.sampler = make_sampler(sweep, worker_id, len(study.trials))
        mirror = Mirror.open(stores, study, wait_seconds=sweep.tracking_wait_seconds, log=log)
        mirror.ensure_parent_run(study, parent_tags(sweep, train_config, data, stores))
    return study, mirror, notes


def trials_to_run(study: optuna.Study, sweep: SweepConfig, wanted: int) -> int:
    """`wanted`, or fewer when a grid study has fewer points (and retries) left than that."""
    if sweep.sampler != "grid":
        return wanted
    trials = study.get_trials(deepcopy=False)
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    started = sum("failed_trial" not in t.system_attrs for t in trials)
    return min(wanted, max(sweep.grid_size() - started, 0) + waiting)


def study_outcome(
    study: optuna.Study,
    mirror: Mirror,
    own_states: Mapping[str, int],
    trial_seconds: float,
    started: float,
    notes: list[str],
    *,
    with_runs: bool = True,
) -> SweepOutcome:
    """What this invocation did (`own_states`) beside what the whole study holds; without
    `with_runs`, from Optuna's records alone (no read of the study's MLflow runs)."""
    runs = None
    artifact_uri = ""
    if with_runs:
        runs = mirror.trial_runs()
        artifact_uri = mirror.call(mirror.client.get_run, mirror.parent_run_id).info.artifact_uri
    trials = trials_table(study, runs)
    return SweepOutcome(
        study=study,
        study_name=study.study_name,
        trials=trials,
        best_per_batch_size=best_per_batch_size(trials),
        parent_run_id=str(mirror.parent_run_id),
        experiment_id=str(mirror.experiment_id),
        new_trials=sum(own_states.values()),
        wall_seconds=time.perf_counter() - started,
        trial_seconds=trial_seconds,
        tracking_seconds=mirror.seconds,
        artifact_uri=artifact_uri,
        notes=notes,
        own_states=dict(own_states),
    )


def close_after_interrupt(mirror: Mirror, tracker: TrialTracker, registry: WorkerRegistry) -> None:
    """After Ctrl-C, a signal or an outage: one try to close this worker's open runs."""
    registry.abandon()
    try:
        tracker.sync_unsynced(patient=False)
        if not registry.others_alive():
            mirror.call(mirror.client.set_terminated, mirror.parent_run_id, "KILLED", patient=False)
    except Exception as error:  # either store out of reach or full
        if not is_store_failure(error):
            raise
        # The next start or `python -m experiments.reconcile` closes them.


def run_sweep(
    sweep: SweepConfig,
    train_config: TrainConfig,
    data_config: DataConfig,
    data: DataSplits,
    *,
    log: Callable[[str], None] = say,
    handoff: FinishHandoff | None = None,
    budget: TrialBudget | None = None,
) -> SweepOutcome:
    """Run one worker on the study (creating or resuming it) on preloaded `data`.

    A worker forked by `--workers N` gets its command's `handoff`: if it is the study's last
    worker it hands the end of the study to the command, and its outcome is Optuna's record
    alone (its command reports on the study), and its command's `budget`: it claims trials
    from the --n-trials its command shares between its workers; alone, it has its own.

    Raises `SweepError` before creating anything if the study cannot be resumed as asked,
    `TrackingUnavailable` after an outage outlasting --tracking-wait-seconds,
    `StorageUnavailable` after one of Optuna's storage outlasting --storage-wait-seconds,
    `DiskFull` when a write finds no space, and KeyboardInterrupt (`Terminated` for
    SIGTERM/SIGHUP) when interrupted."""
    started = time.perf_counter()
    check_train_config(sweep, train_config)
    stores = Stores.from_config(sweep)
    study_name = study_name_for(sweep, data_config)
    device = resolve_device(train_config.device)
    data = data if data.device == device else data.to(device)
    optuna.logging.set_verbosity(logging.WARNING if sweep.quiet else logging.INFO)
    # Every call on Optuna's storage below waits out an outage (--storage-wait-seconds).
    watch = StorageWatch(stores.optuna_url, wait_seconds=sweep.storage_wait_seconds, log=log)
    study, mirror, notes = watch.call(
        open_study_and_mirror,
        sweep, stores, study_name, train_config, data, sweep.worker_id, log, data_config,
    )  # fmt: skip
    log(watch.call(opening_line, study))
    registry = WorkerRegistry(study, sweep.worker_id, sweep, stores.optuna_url)
    watch.call(registry.start)
    budget = budget or TrialBudget(sweep.n_trials)
    n_trials = watch.call(trials_to_run, study, sweep, sweep.n_trials)
    budget.limit(n_trials)  # a grid's points left, as this worker found them
    progress = SharedProgress(
        budget,
        total=n_trials,
        desc=study_name,
        unit="trial",
        disable=sweep.quiet,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    tracker = TrialTracker(study, mirror, progress, log)
    objective = Objective(
        sweep,
        train_config,
        data,
        environment_tags(data),
        sweep.worker_id,
        fixed_settings(sweep, data_config),
        tracker.on_start,
    )
    try:
        watch.call(mirror.reconcile, study)
        GATE.raise_pending()  # a signal during start-up: no trial starts
        trials_started = time.perf_counter()
        run_trials_through_outages(study, objective, tracker, budget, watch)
        # Wall time of the loop: members of a population overlap, so their durations do not add.
        trial_seconds = time.perf_counter() - trials_started
        GATE.raise_pending()  # one that came during the last trial's mirror: the parent is KILLED
    except BaseException:
        progress.close()
        close_after_interrupt(mirror, tracker, registry)
        raise
    progress.close()
    last = watch.call(registry.end)
    if n_trials < sweep.n_trials:
        notes.append(f"note: the grid has {sweep.grid_size()} points; every one is taken")
    own_outcome = functools.partial(
        study_outcome, study, mirror, tracker.own_states, trial_seconds, started, notes
    )
    if last and handoff is None:
        # The refit and the plots run beside the end's reconcile and reads (experiments.study_end).
        with StudyEnd.begin(
            study, sweep, objective.train_config, data, stores.optuna_url, log
        ) as end:  # fmt: skip
            # One reconcile at the study's end, by its last worker, repairs what any other
            # left (a dead worker's trials): every worker's own runs were mirrored as its
            # trials ended (an outage that kept one from it fails the worker). Workers ending
            # together each reconciled under the study lock, one after another (0.3-0.9 s each
            # at 100 trials, 16 s at 2,000). A forked last worker leaves it to its command.
            watch.call(mirror.reconcile, study)
            outcome = watch.call(own_outcome)
            watch.call(end.finish, mirror, outcome)
        return outcome
    outcome = watch.call(own_outcome, with_runs=handoff is None)
    if last and handoff is not None:
        handoff.hand_over()
    return outcome
