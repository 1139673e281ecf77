"""Open, create or resume the Optuna study, race-free; its samplers and pruners.

    with store_lock(stores.optuna_url, study_lock_name(name)):
        study, created = open_or_create_study(sweep, stores, name, identity, worker_seed)

Any number of workers may start the same new study at the same moment, on SQLite or
PostgreSQL: the storage's schema and the study are created under `experiments.locks.store_lock`,
and the study's unique name decides which worker created it (Optuna's `DuplicatedStudyError`),
so exactly one sets its attributes, among them every fixed setting. A study resumed with other
settings (another objective, other batch sizes, epochs, data...: `experiments.study_settings`)
is refused with `SweepError` before any trial exists.

Liveness: every storage opened here has Optuna's trial heartbeat on. A trial whose worker stops
beating for `SweepConfig.grace_seconds` (kill -9, preemption) is marked FAIL by the next worker
or reconcile and, with `--retries`, queued again (`RetryHeartbeatStaleTrialCallback`). One that
never beat at all (its worker stopped between asking for it and the first beat: the storage cut
off or full right then) is failed by a reconcile once the grace period has passed since it
started (`fail_unbeaten_trials`).
"""

from __future__ import annotations

import contextlib
import datetime
import uuid
import warnings

import optuna
import sqlalchemy
from optuna.exceptions import DuplicatedStudyError, ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import event
from sqlalchemy.pool import NullPool

from experiments.config import GRACE_HEARTBEATS, SweepConfig
from experiments.locks import store_lock
from experiments.store_faults import is_store_failure
from experiments.stores import connect_args, sqlite_file, store_exists
from experiments.study_settings import (
    FIXED_SETTINGS_ATTR,
    DataIdentity,
    SweepError,
    check_resumable,
    fixed_settings,
    search_settings,
)
from softmaxreg.config import DataConfig, TrainConfig

__all__ = ["DataIdentity", "SweepError", "check_resumable", "open_or_create_study"]

MEDIAN_PRUNER_STARTUP_TRIALS = 2  # COMPLETE trials per batch size before pruning starts
MEDIAN_PRUNER_WARMUP_EPOCHS = 2  # never prune on the first epoch's noisy figure
SQLITE_BUSY_SECONDS = 60  # several workers write one SQLite file: wait for the lock, not fail


OPTUNA_SCHEMA_LOCK = "softmaxreg-optuna-schema"
"""Held while anything may create Optuna's tables or a study (start-up, whatever the study)."""


def study_lock_name(study_name: str) -> str:
    """Held while a study's MLflow runs are created or repaired."""
    return f"softmaxreg-study:{study_name}"


def _sqlite_pragmas(connection, _record) -> None:
    # WAL lets the workers read while one writes, and synchronous=NORMAL makes each of the many
    # small commits (one per epoch report) milliseconds instead of tens, still crash-safe.
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
    # Transactions are begun by `_begin_immediate` instead of the driver, which would start
    # them only at the first write: Optuna reads a row "for update" and then writes it (a
    # queued trial taken by a worker), and SQLite ignores FOR UPDATE, so two workers could both
    # take the same queued trial. SQLAlchemy's documented recipe for pysqlite.
    connection.isolation_level = None


def _begin_immediate(connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock first, then read, then write


class SweepStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage whose heartbeat outlives a passing outage.

    Optuna's heartbeat thread (and ours, `experiments.population_trials.Heartbeats`) calls
    `record_heartbeat` every interval; raised there, an outage would end the thread with a
    traceback and the trial would beat no more, to be failed as stale while it still trains.
    A missed beat is harmless: the worker's own next write meets the outage and waits for it
    (`experiments.store_faults`), and an outage outlasting the grace period fails the trial as
    stale, which is then right."""

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except Exception as error:
            if not is_store_failure(error):
                raise


def open_storage(
    url: str, sweep: SweepConfig | None = None, read_only: bool = False
) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage for the normalised `url`; with `sweep`, heartbeat and retries on.
    `read_only` (export) takes no write lock, so a file in a read-only folder can be read."""
    engine_kwargs: dict[str, object] = {"connect_args": connect_args(url)}
    if sqlite_file(url) is not None:
        engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_SECONDS}}
    else:
        # Each pooled connection is tested before use: after a database restart (or a proxy's)
        # the pool's dead connections are replaced instead of failing the next write.
        engine_kwargs["pool_pre_ping"] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeat is "experimental"
        liveness: dict[str, object] = {}
        if sweep is not None:
            retry = RetryHeartbeatStaleTrialCallback(max_retry=sweep.retries)
            liveness = {
                "heartbeat_interval": sweep.heartbeat_seconds,
                "grace_period": sweep.grace_seconds,
                "heartbeat_stale_trial_callback": retry if sweep.retries else None,
            }
        storage = SweepStorage(url, engine_kwargs=engine_kwargs, **liveness)
    if sqlite_file(url) is not None and not read_only:
        event.listen(storage.engine, "connect", _sqlite_pragmas)
        event.listen(storage.engine, "begin", _begin_immediate)
        storage.engine.dispose()  # so every later connection gets the pragmas
    return storage


def fail_unbeaten_trials(study: optuna.Study, url: str) -> int:
    """Fail the RUNNING trials that never recorded a heartbeat and started more than the grace
    period ago; return how many. Their worker stopped between Optuna creating the trial and its
    first beat (the storage cut off or full right then), and Optuna's stale check, which sees
    only trials with a heartbeat, would leave them RUNNING for ever. A live worker records the
    first beat within milliseconds of asking (Optuna's heartbeat thread, `Heartbeats.add`)."""
    interval = study._storage.get_heartbeat_interval()  # type: ignore[attr-defined]
    if not interval:
        return 0
    cutoff = datetime.datetime.now() - datetime.timedelta(seconds=GRACE_HEARTBEATS * interval)
    old = {
        t._trial_id
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t.datetime_start is not None and t.datetime_start < cutoff
    }
    if not old:
        return 0
    query = sqlalchemy.text("SELECT trial_id FROM trial_heartbeats WHERE trial_id IN :ids")
    query = query.bindparams(sqlalchemy.bindparam("ids", expanding=True))
    engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=connect_args(url))
    try:
        with engine.connect() as connection:
            beaten = {row[0] for row in connection.execute(query, {"ids": sorted(old)})}
    finally:
        engine.dispose()
    for trial_id in old - beaten:
        with contextlib.suppress(UpdateFinishedTrialError):  # another worker failed it first
            study._storage.set_trial_state_values(trial_id, TrialState.FAIL)
    return len(old - beaten)


def _has_optuna_tables(url: str) -> bool:
    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        inspector = sqlalchemy.inspect(engine)
        return inspector.has_table("studies") and inspector.has_table("alembic_version")
    finally:
        engine.dispose()


def find_study(url: str, study_name: str, sweep: SweepConfig | None = None) -> optuna.Study | None:
    """The study if it exists already; never creates a file, a table or a study to find out.
    With `sweep`, its storage has the sweep's heartbeat on (to fail stale trials)."""
    if not store_exists(url) or not _has_optuna_tables(url):
        return None
    with store_lock(url, OPTUNA_SCHEMA_LOCK):  # a worker may be creating the schema right now
        storage = open_storage(url, sweep)
    if study_name not in {s.study_name for s in storage.get_all_studies()}:
        return None
    return optuna.load_study(study_name=study_name, storage=storage)


def open_or_create_study(
    sweep: SweepConfig,
    storage: optuna.storages.RDBStorage,
    study_name: str,
    train_config: TrainConfig,
    data: DataIdentity,
    sampler: optuna.samplers.BaseSampler,
    data_config: DataConfig | None = None,
) -> tuple[optuna.Study, list[str]]:
    """The study, created with its attributes by exactly one caller; call under the study lock.

    Records its fixed settings (`experiments.study_settings`) when created; raises `SweepError`
    if it exists with other ones. Returns the study and notes for the report."""
    directions = [StudyDirection[d.upper()] for d in sweep.directions]
    try:
        storage.create_new_study(directions, study_name)
        created = True
    except DuplicatedStudyError:
        created = False
    study = optuna.load_study(
        study_name=study_name,
        storage=storage,
        sampler=sampler,
        pruner=make_pruner(sweep, train_config.epochs),
    )
    if created or "study_uuid" not in study.user_attrs:
        study.set_user_attr("dataset", data.name)
        study.set_user_attr("dataset_checksum", data.checksum)
        study.set_user_attr("search_settings", search_settings(sweep, train_config))
        if data_config is not None:
            settings = fixed_settings(sweep, train_config, data_config)
            study.set_user_attr(FIXED_SETTINGS_ATTR, settings)
        study.set_user_attr("sampler_seed", sweep.sampler_seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)  # printed on every new study
            study.set_metric_names(
                ["best_val_accuracy", "time_to_target_seconds"][: len(directions)]
            )
        study.set_user_attr("study_uuid", uuid.uuid4().hex)  # last: marks the study complete
        return study, []
    check_resumable(study, sweep, train_config, data_config, data)
    return study, []


class _SameBatchSizeView:
    """A study seen through one batch size: what `SameBatchSizeMedianPruner` compares against."""

    def __init__(self, study: optuna.Study, batch_size: object) -> None:
        self._study = study
        self._batch_size = batch_size

    @property
    def direction(self) -> StudyDirection:
        return self._study.direction

    def get_trials(self, deepcopy: bool = True, states=None) -> list[FrozenTrial]:
        return [
            trial
            for trial in self._study.get_trials(deepcopy=deepcopy, states=states)
            if trial.params.get("batch_size") == self._batch_size
        ]


class SameBatchSizeMedianPruner(optuna.pruners.BasePruner):
    """Median pruning against COMPLETE trials with the same batch size only.

    Small batches take more steps per epoch, so early on they lead at any reasonable learning
    rate; a median over all batch sizes would prune large batch sizes before they caught up.
    """

    def __init__(self, n_startup_trials: int, n_warmup_steps: int) -> None:
        self._median = optuna.pruners.MedianPruner(
            n_startup_trials=n_startup_trials, n_warmup_steps=n_warmup_steps
        )

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        view = _SameBatchSizeView(study, trial.params.get("batch_size"))
        return self._median.prune(view, trial)  # type: ignore[arg-type]


def make_sampler(
    sweep: SweepConfig, worker_id: int, existing_trials: int
) -> optuna.samplers.BaseSampler:
    """The sampler of one worker, seeded with `SweepConfig.worker_seed` (the grid excepted)."""
    seed = sweep.worker_seed(worker_id, existing_trials)
    if sweep.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if sweep.sampler == "grid":
        # Optuna gives trial number n < grid size the n-th point of the grid as shuffled by the
        # seed: with one seed for every worker and every resume, unique trial numbers (handed
        # out by the storage) mean no two workers ever run the same point.
        space: dict[str, list] = {
            "batch_size": list(sweep.batch_sizes),
            "lr": sweep.grid_learning_rates(),
        }
        if sweep.lr_schedules:
            space["lr_schedule"] = list(sweep.lr_schedules)
        return optuna.samplers.GridSampler(space, seed=sweep.sampler_seed)
    if sweep.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    # constant_liar: trials running on other workers count as (pessimistic) results, so
    # concurrent workers do not all propose the same promising point.
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def make_pruner(sweep: SweepConfig, epochs: int) -> optuna.pruners.BasePruner:
    if sweep.pruner == "median":
        return SameBatchSizeMedianPruner(
            MEDIAN_PRUNER_STARTUP_TRIALS, min(MEDIAN_PRUNER_WARMUP_EPOCHS, epochs)
        )
    if sweep.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    return optuna.pruners.NopPruner()
