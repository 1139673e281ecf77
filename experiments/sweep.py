"""The sweep: an Optuna study over batch size × learning rate, every trial tracked in MLflow.

    python -m experiments.sweep                  # the default study: about two minutes on 2 CPUs
    python -m experiments.sweep --n-trials 10 --epochs 3 --batch-sizes 64 256 --lr-range 0.01 1
    python -m experiments.sweep --objective accuracy_vs_time --pruner none --target-accuracy 0.91
    python -m experiments.sweep --storage postgresql://postgres@127.0.0.1:5432/test \\
        --tracking-uri http://127.0.0.1:5000 --study-name shared-study
    mlflow ui --backend-store-uri sqlite:///mlflow.db  # then compare the runs (printed at the end)

Every flag comes from `SweepConfig` (the sweep) plus `TrainConfig` and `DataConfig` (fixed for
every trial; batch size and learning rate are what the study chooses), so `--help` lists them all
with their defaults. Invalid values, an unreachable store or a study that cannot be resumed end
the process with status 2 before any file, database or data folder is created.

What a run does:
1. loads the data once (`experiments.common.load_data_or_exit`);
2. creates the Optuna study `--study-name`, or resumes it if it exists (`--n-trials` more trials);
3. each trial trains `--repeats` seeds with `softmaxreg.trainer.train`, reports validation
   accuracy per epoch to the pruner (first seed only: one curve per trial), and returns the mean
   best validation accuracy. Test accuracy is recorded, never optimised;
4. a diverging trial becomes FAIL with its reason (user attribute `fail_reason`, MLflow tag
   `optuna.fail_reason`) and the study goes on; a pruned one becomes PRUNED;
5. MLflow gets one parent run per study and one child run per trial (see `experiments.tracking`);
   at the end the parent run receives Optuna's plots and the tables of `experiments.results`;
6. prints the best trial, the best learning rate per batch size, where everything was written and
   the `mlflow ui` command.

Objectives (`--objective`):
- `val_accuracy`: maximise the best validation accuracy (mean over the seeds).
- `accuracy_vs_time`: maximise it and minimise time-to-accuracy (training seconds until
  validation accuracy first reaches `--target-accuracy`, mean over the seeds). A trial in which a
  seed never reaches the target gets +inf seconds: Optuna accepts it, it is never on the Pareto
  front unless no trial reached the target, and the export shows `inf`. Optuna cannot prune
  multi-objective studies, so this objective requires `--pruner none` (anything else exits 2).

Pruners (`--pruner`): `median` stops a trial whose validation accuracy after epoch 2 or later is
below the median, at the same epoch, of COMPLETE trials *with the same batch size* (small batches
take more steps per epoch and lead early on, so a median over all batch sizes would prune the
large ones before their learning rate had a chance); `hyperband` is Optuna's HyperbandPruner over
epochs, which does not group by batch size; `none` trains every trial to the end.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal, get_args

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import event
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from experiments.common import load_data_or_exit
from experiments.plots import write_study_plots
from experiments.results import (
    SETTING_COLUMNS,
    SUMMARY_FIGURES,
    best_per_batch_size,
    best_per_batch_size_markdown,
    best_per_batch_size_text,
    trials_table,
    write_csv_atomically,
    write_text_atomically,
)
from experiments.stores import (
    DEFAULT_OPTUNA_STORAGE,
    DEFAULT_TRACKING_URI,
    StoreError,
    absolute_sqlite_url,
    check_optuna_storage,
    check_tracking_uri,
    display_url,
    mlflow_ui_command,
    normalise_sql_url,
    parse_sql_url,
    sqlite_file,
    store_exists,
    validate_tracking_uri,
)
from experiments.tracking import FAIL_REASON_TAG, RUN_STATUS_OF_STATE, SweepTracker
from softmaxreg.cli import add_dataclass_arguments, dataclass_from_args
from softmaxreg.config import ConfigError, DataConfig, TrainConfig, require, require_int
from softmaxreg.data import DataSplits
from softmaxreg.device import DeviceUnavailableError, environment, resolve_device
from softmaxreg.trainer import EpochMetrics, TrainingDiverged, TrainResult, train

SamplerName = Literal["tpe", "random", "grid", "gp"]
PrunerName = Literal["none", "median", "hyperband"]
ObjectiveName = Literal["val_accuracy", "accuracy_vs_time"]

SAMPLER_CHOICES: tuple[str, ...] = get_args(SamplerName)
PRUNER_CHOICES: tuple[str, ...] = get_args(PrunerName)
OBJECTIVE_CHOICES: tuple[str, ...] = get_args(ObjectiveName)
STUDY_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")

SWEPT_FIELDS = ("batch_size", "lr")
"""TrainConfig fields the study chooses per trial; they have no flag of their own here."""

MEDIAN_PRUNER_STARTUP_TRIALS = 2  # COMPLETE trials per batch size before pruning starts
MEDIAN_PRUNER_WARMUP_EPOCHS = 2  # never prune on the first epoch's noisy figure


@dataclass(frozen=True)
class SweepConfig:
    """The study: which settings to try, how to choose them, and where results are kept."""

    study_name: str = ""
    """Optuna study and MLflow experiment name; running again with the same name resumes the
    study. Empty means softmaxreg-<dataset> (plus -accuracy-vs-time for that objective)."""

    n_trials: int = 40
    """Trials to run in this invocation (added to any the study already has)."""

    timeout: float = 0.0
    """Stop starting new trials after this many seconds; 0 means no time limit."""

    batch_sizes: tuple[int, ...] = (16, 64, 256, 1024)
    """Batch sizes to choose from (categorical). Compared at their own best learning rate."""

    lr_range: tuple[float, float] = (0.003, 1.0)
    """Learning-rate search range, sampled on a log scale."""

    sampler: SamplerName = "tpe"
    """Optuna sampler: tpe (Bayesian, the default), random, grid (every batch size × grid_lr_points
    log-spaced learning rates), gp (Gaussian process)."""

    grid_lr_points: int = 6
    """Learning rates per batch size for --sampler grid, log-spaced over lr_range."""

    sampler_seed: int = 0
    """Seed of the sampler; on resume it is offset by the trials already run, so new trials do not
    repeat old ones."""

    pruner: PrunerName = "median"
    """Stop unpromising trials early: median (against COMPLETE trials of the same batch size, from
    epoch 2), hyperband, or none. Must be none for --objective accuracy_vs_time."""

    objective: ObjectiveName = "val_accuracy"
    """val_accuracy: maximise validation accuracy. accuracy_vs_time: also minimise
    time-to-accuracy (seconds to reach --target-accuracy; +inf if never reached)."""

    repeats: int = 1
    """Seeds trained per configuration (seed, seed+1, ...); the objective is their mean."""

    storage: str = DEFAULT_OPTUNA_STORAGE
    """Optuna storage URL (SQLAlchemy): sqlite:///optuna.db is one file in the current folder;
    postgresql://user@host/db shares a study between machines."""

    tracking_uri: str = DEFAULT_TRACKING_URI
    """MLflow tracking URI: a database (sqlite:///mlflow.db, MLflow's default; artifacts go to
    ./mlruns) or a tracking server (http://host:port)."""

    quiet: bool = False
    """Silence the progress bar and Optuna's per-trial log lines; the final report still prints."""

    def __post_init__(self) -> None:
        require(
            isinstance(self.study_name, str)
            and (self.study_name == "" or STUDY_NAME_PATTERN.fullmatch(self.study_name)),
            "study_name",
            self.study_name,
            "letters, digits, '.', '_' or '-' (at most 100, starting with a letter or digit)",
        )
        require_int(self.n_trials, "n_trials", 1)
        require(
            isinstance(self.timeout, (int, float))
            and math.isfinite(self.timeout)
            and self.timeout >= 0,
            "timeout",
            self.timeout,
            "a finite number of seconds >= 0 (0: no limit)",
        )
        require(
            isinstance(self.batch_sizes, tuple) and len(self.batch_sizes) > 0,
            "batch_sizes",
            self.batch_sizes,
            "at least one batch size",
        )
        for batch_size in self.batch_sizes:
            require_int(batch_size, "batch_sizes", 1)
        require(
            len(set(self.batch_sizes)) == len(self.batch_sizes),
            "batch_sizes",
            self.batch_sizes,
            "distinct batch sizes",
        )
        require(
            isinstance(self.lr_range, tuple)
            and len(self.lr_range) == 2
            and all(
                isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in self.lr_range
            )
            and self.lr_range[0] < self.lr_range[1],
            "lr_range",
            self.lr_range,
            "MIN MAX with 0 < MIN < MAX (sampled on a log scale)",
        )
        require(self.sampler in SAMPLER_CHOICES, "sampler", self.sampler, "tpe, random, grid, gp")
        require_int(self.grid_lr_points, "grid_lr_points", 1)
        require_int(self.sampler_seed, "sampler_seed", 0)
        require(self.pruner in PRUNER_CHOICES, "pruner", self.pruner, "none, median, hyperband")
        require(
            self.objective in OBJECTIVE_CHOICES,
            "objective",
            self.objective,
            "val_accuracy or accuracy_vs_time",
        )
        require(
            self.objective != "accuracy_vs_time" or self.pruner == "none",
            "pruner",
            self.pruner,
            "none with --objective accuracy_vs_time (Optuna cannot prune multi-objective "
            "studies): add --pruner none",
        )
        require_int(self.repeats, "repeats", 1)
        require(isinstance(self.storage, str), "storage", self.storage, "a database URL")
        parse_sql_url(self.storage, "storage")
        require(isinstance(self.tracking_uri, str), "tracking_uri", self.tracking_uri, "a URI")
        validate_tracking_uri(self.tracking_uri, "tracking_uri")
        require(
            self.tracking_uri != self.storage,
            "tracking_uri",
            self.tracking_uri,
            "a different database from --storage (Optuna and MLflow both keep an "
            "alembic_version table, so they cannot share one)",
        )
        require(isinstance(self.quiet, bool), "quiet", self.quiet, "true or false")

    @property
    def multi_objective(self) -> bool:
        return self.objective == "accuracy_vs_time"

    @property
    def directions(self) -> list[str]:
        return ["maximize", "minimize"] if self.multi_objective else ["maximize"]

    def grid_learning_rates(self) -> list[float]:
        low, high = self.lr_range
        if self.grid_lr_points == 1:
            return [math.sqrt(low * high)]
        ratio = (high / low) ** (1 / (self.grid_lr_points - 1))
        # The last point is set exactly, so float error cannot push it past the range.
        return [low * ratio**i for i in range(self.grid_lr_points - 1)] + [high]


class SweepError(RuntimeError):
    """The sweep cannot start as asked (e.g. a study that cannot be resumed); exit status 2."""


def study_name_for(sweep: SweepConfig, data_config: DataConfig) -> str:
    """The study (and MLflow experiment) name: --study-name, else derived from the dataset."""
    if sweep.study_name:
        return sweep.study_name
    suffix = "-accuracy-vs-time" if sweep.multi_objective else ""
    return f"softmaxreg-{data_config.dataset.replace('_', '-')}{suffix}"


# ------------------------------------------------------------------------------ command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.sweep",
        description="Optuna study over batch size × learning rate for softmax regression, "
        "every trial tracked in MLflow.",
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


# ----------------------------------------------------------------------------- Optuna pieces


def _sqlite_pragmas(connection, _record) -> None:
    # WAL with synchronous=NORMAL makes each of the study's many small commits (one per epoch
    # report) a few milliseconds instead of tens, without risking the database on a crash.
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage for `url` (tables are created if the database is new)."""
    storage = optuna.storages.RDBStorage(normalise_sql_url(url))
    if sqlite_file(url) is not None:
        event.listen(storage.engine, "connect", _sqlite_pragmas)
        storage.engine.dispose()  # so every later connection gets the pragmas
    return storage


def load_existing_study(url: str, study_name: str) -> optuna.Study | None:
    """The study if it exists already; never creates a database file to find out."""
    if not store_exists(url):
        return None
    storage = open_storage(url)
    if study_name not in {s.study_name for s in storage.get_all_studies()}:
        return None
    return optuna.load_study(study_name=study_name, storage=storage)


def check_resumable(
    study: optuna.Study, sweep: SweepConfig, train_config: TrainConfig, checksum: str | None
) -> list[str]:
    """Raise `SweepError` if `study` cannot be resumed with `sweep`; return warnings."""
    wanted = [d.upper() for d in sweep.directions]
    found = [d.name for d in study.directions]
    if wanted != found:
        raise SweepError(
            f"study {study.study_name!r} in {display_url(sweep.storage)} optimises {found}, but "
            f"--objective {sweep.objective} needs {wanted}; use another --study-name"
        )
    stored = study.user_attrs
    if checksum is not None and stored.get("dataset_checksum") not in (None, checksum):
        raise SweepError(
            f"study {study.study_name!r} was run on {stored.get('dataset')} with checksum "
            f"{stored.get('dataset_checksum')}, but this data has checksum {checksum}; results "
            "would not be comparable: use another --study-name"
        )
    notes = []
    for name, value in _search_settings(sweep, train_config).items():
        before = stored.get("search_settings", {}).get(name)
        if before is not None and before != value:
            notes.append(
                f"note: resuming {study.study_name!r} with {name} {value} (earlier trials used "
                f"{before}); the comparison table mixes both"
            )
    return notes


def _search_settings(sweep: SweepConfig, train_config: TrainConfig) -> dict[str, object]:
    """What makes trials comparable; a resumed study that changes any of it gets a note."""
    return {
        "batch_sizes": list(sweep.batch_sizes),
        "lr_range": list(sweep.lr_range),
        "repeats": sweep.repeats,
        "epochs": train_config.epochs,
        "target_accuracy": train_config.target_accuracy,
        "model": train_config.model,
        "momentum": train_config.momentum,
        "weight_decay": train_config.weight_decay,
    }


class _SameBatchSizeView:
    """A study seen through one batch size: what `SameBatchSizeMedianPruner` compares against."""

    def __init__(self, study: optuna.Study, batch_size: object) -> None:
        self._study = study
        self._batch_size = batch_size

    @property
    def direction(self) -> optuna.study.StudyDirection:
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


def make_sampler(sweep: SweepConfig, existing_trials: int) -> optuna.samplers.BaseSampler:
    seed = sweep.sampler_seed + existing_trials
    if sweep.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if sweep.sampler == "grid":
        space = {"batch_size": list(sweep.batch_sizes), "lr": sweep.grid_learning_rates()}
        return optuna.samplers.GridSampler(space, seed=seed)
    if sweep.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(sweep: SweepConfig, epochs: int) -> optuna.pruners.BasePruner:
    if sweep.pruner == "median":
        return SameBatchSizeMedianPruner(
            MEDIAN_PRUNER_STARTUP_TRIALS, min(MEDIAN_PRUNER_WARMUP_EPOCHS, epochs)
        )
    if sweep.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    return optuna.pruners.NopPruner()


class _QuietDivergence(logging.Filter):
    """Optuna logs a caught exception with its traceback; a diverging lr needs one line, not a
    stack trace (the reason is in the trial's `fail_reason`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], TrainingDiverged):
            record.exc_info = None
            record.exc_text = None
        return True


# ------------------------------------------------------------------------------- one trial

EPOCH_FIGURES = (
    "train_loss",
    "val_loss",
    "val_accuracy",
    "test_loss",
    "test_accuracy",
    "epoch_seconds",
    "eval_seconds",
    "samples_per_second",
    "train_seconds_total",
)
"""Per-epoch metrics of every child run (MLflow step = epoch); means over the seeds."""


@dataclass
class TrialLog:
    """What one trial produced, gathered during training and logged to MLflow in one batch."""

    run_id: str
    params: dict[str, object]
    tags: dict[str, str]
    started: float
    histories: list[list[tuple[EpochMetrics, int]]] = field(default_factory=list)
    results: list[TrainResult] = field(default_factory=list)
    summary: dict[str, float] = field(default_factory=dict)

    def epoch_metrics(self) -> list[tuple[int, int, dict[str, float]]]:
        """(epoch, timestamp ms, metrics) per epoch: the mean over the seeds that reached it,
        plus each seed's validation accuracy when there are several."""
        rows = []
        longest = max((len(h) for h in self.histories), default=0)
        for index in range(longest):
            reached = [h[index] for h in self.histories if len(h) > index]
            values = {
                name: statistics.fmean(getattr(m, name) for m, _ in reached)
                for name in EPOCH_FIGURES
            }
            if len(self.histories) > 1:
                for seed_index, history in enumerate(self.histories):
                    if len(history) > index:
                        seed = self.params["seeds"].split(",")[seed_index]  # type: ignore[union-attr]
                        values[f"seed_{seed}.val_accuracy"] = history[index][0].val_accuracy
            rows.append((index + 1, reached[0][1], values))
        return rows


def summarise(results: list[TrainResult]) -> dict[str, float]:
    """Trial figures over its seeds: means (std for best validation accuracy)."""

    def mean(values) -> float:
        return statistics.fmean(values)

    best_val = [r.best_val_accuracy for r in results]
    times = [r.time_to_target_seconds for r in results]
    return {
        "best_val_accuracy": mean(best_val),
        "best_val_accuracy_std": statistics.pstdev(best_val) if len(best_val) > 1 else 0.0,
        "test_accuracy_at_best_val": mean(r.test_accuracy_at_best_val for r in results),
        "final_val_accuracy": mean(r.final_val_accuracy for r in results),
        "final_test_accuracy": mean(r.final_test_accuracy for r in results),
        "time_to_target_seconds": (
            math.nan if any(t is None for t in times) else mean(t for t in times if t is not None)
        ),
        "total_train_seconds": mean(r.total_train_seconds for r in results),
        "steady_epoch_seconds": mean(r.steady_epoch_seconds for r in results),
        "steady_samples_per_second": mean(r.steady_samples_per_second for r in results),
        "warmup_epoch_seconds": mean(r.warmup_epoch_seconds for r in results),
        "final_train_loss": mean(r.last.train_loss for r in results),
        "epochs_completed": float(len(results[0].epochs)),
        "reached_target": mean(float(t is not None) for t in times),
    }


# --------------------------------------------------------------------------------- the sweep


@dataclass
class SweepOutcome:
    """What `run_sweep` did and where it put it."""

    study: optuna.Study
    study_name: str
    trials: pd.DataFrame
    best_per_batch_size: pd.DataFrame
    parent_run_id: str
    experiment_id: str
    new_trials: int
    wall_seconds: float
    trial_seconds: float
    tracking_seconds: float
    artifact_uri: str
    notes: list[str] = field(default_factory=list)

    @property
    def tracking_overhead_fraction(self) -> float:
        return self.tracking_seconds / self.trial_seconds if self.trial_seconds else math.nan


def _environment_tags(data: DataSplits) -> dict[str, str]:
    env = environment(data.device)
    return {
        **env,
        "dataset": data.name,
        "dataset_checksum": data.checksum,
        "mlflow.source.name": "experiments.sweep",
        "mlflow.source.type": "LOCAL",
        "mlflow.source.git.commit": env["git_commit"],
    }


def run_sweep(
    sweep: SweepConfig,
    train_config: TrainConfig,
    data_config: DataConfig,
    data: DataSplits,
    *,
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
) -> SweepOutcome:
    """Run (or resume) the study on preloaded `data`; the Python entry point tests call.

    Raises `SweepError` before creating anything if the study cannot be resumed as asked.
    """
    started = time.perf_counter()
    study_name = study_name_for(sweep, data_config)
    device = resolve_device(train_config.device)
    if data.device != device:
        data = data.to(device)
    notes: list[str] = []
    existing = load_existing_study(sweep.storage, study_name)
    if existing is not None:
        notes += check_resumable(existing, sweep, train_config, data.checksum)

    optuna_logger = logging.getLogger("optuna")
    optuna.logging.set_verbosity(logging.WARNING if sweep.quiet else logging.INFO)
    logging.getLogger("mlflow").setLevel(logging.WARNING if sweep.quiet else logging.INFO)
    divergence_filter = _QuietDivergence()
    optuna_logger.addFilter(divergence_filter)

    storage = open_storage(sweep.storage)
    existing_trials = len(existing.trials) if existing is not None else 0
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        directions=sweep.directions,
        sampler=make_sampler(sweep, existing_trials),
        pruner=make_pruner(sweep, train_config.epochs),
        load_if_exists=True,
    )
    if "study_uuid" not in study.user_attrs:
        study.set_user_attr("study_uuid", uuid.uuid4().hex)
        study.set_user_attr("dataset", data.name)
        study.set_user_attr("dataset_checksum", data.checksum)
        study.set_user_attr("search_settings", _search_settings(sweep, train_config))
    study_uuid = study.user_attrs["study_uuid"]

    env_tags = _environment_tags(data)
    tracker = SweepTracker(sweep.tracking_uri, study_name)
    parent_tags = {
        **env_tags,
        "optuna.study_name": study_name,
        "optuna.storage": display_url(sweep.storage),
        **{f"sweep.{k}": str(v) for k, v in asdict(sweep).items() if k != "quiet"},
        **{f"train.{k}": str(v) for k, v in asdict(train_config).items() if k not in SWEPT_FIELDS},
    }
    parent_run_id = tracker.open_parent_run(study_uuid, parent_tags)
    if study.user_attrs.get("mlflow_parent_run_id") != parent_run_id:
        study.set_user_attr("mlflow_parent_run_id", parent_run_id)

    base_params: dict[str, object] = {
        **{k: v for k, v in asdict(train_config).items() if k not in SWEPT_FIELDS},
        **asdict(data_config),
        "optimizer": "sgd",
        "repeats": sweep.repeats,
        "objective": sweep.objective,
    }
    seeds = [train_config.seed + k for k in range(sweep.repeats)]
    pending: dict[int, TrialLog] = {}
    clock = {"trial_seconds": 0.0}

    def objective(trial: optuna.Trial) -> float | tuple[float, float]:
        trial_started = time.perf_counter()
        batch_size = trial.suggest_categorical("batch_size", list(sweep.batch_sizes))
        lr = trial.suggest_float("lr", *sweep.lr_range, log=True)
        config = replace(train_config, batch_size=batch_size, lr=lr)
        trial_tags = {**env_tags, "optuna.study_name": study_name}
        run_id = tracker.start_trial_run(trial.number, trial_tags)
        trial.set_user_attr("mlflow_run_id", run_id)
        record = TrialLog(
            run_id=run_id,
            params={
                **base_params,
                "batch_size": batch_size,
                "lr": lr,
                "trial_number": trial.number,
                "seeds": ",".join(map(str, seeds)),
            },
            tags=trial_tags,
            started=trial_started,
        )
        pending[trial.number] = record
        for index, seed in enumerate(seeds):
            history: list[tuple[EpochMetrics, int]] = []
            record.histories.append(history)

            def on_epoch(
                metrics: EpochMetrics,
                history: list[tuple[EpochMetrics, int]] = history,
                first_seed: bool = index == 0,
            ) -> bool:
                history.append((metrics, int(time.time() * 1000)))
                if first_seed and not sweep.multi_objective:
                    # Only the first seed's curve is reported: one learning curve per trial.
                    trial.report(metrics.val_accuracy, metrics.epoch)
                    return sweep.pruner != "none" and trial.should_prune()
                return False

            try:
                result = train(replace(config, seed=seed), data, on_epoch)
            except TrainingDiverged as error:
                trial.set_user_attr("fail_reason", str(error))
                raise
            record.results.append(result)
            if result.stopped_early:
                break
        record.summary = summarise(record.results)
        for name in SUMMARY_FIGURES:
            value = record.summary[name]
            trial.set_user_attr(name, None if math.isnan(value) else value)
        trial.set_user_attr(
            "settings",
            {
                name: sweep.repeats if name == "repeats" else getattr(config, name)
                for name in SETTING_COLUMNS
            },
        )
        if len(seeds) > 1:
            trial.set_user_attr("per_seed", [r.summary() for r in record.results])
        if record.results[-1].stopped_early:
            last = record.results[-1].last
            raise optuna.TrialPruned(
                f"pruned after epoch {last.epoch}: val accuracy {last.val_accuracy:.4f}"
            )
        accuracy = record.summary["best_val_accuracy"]
        if sweep.multi_objective:
            seconds = record.summary["time_to_target_seconds"]
            return accuracy, (math.inf if math.isnan(seconds) else seconds)
        return accuracy

    progress = tqdm(
        total=sweep.n_trials,
        desc=study_name,
        unit="trial",
        disable=sweep.quiet,
        file=sys.stderr,
        dynamic_ncols=True,
    )

    def finish_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        record = pending.pop(trial.number, None)
        if record is not None:
            tags = dict(record.tags)
            reason = trial.user_attrs.get("fail_reason") or trial.system_attrs.get("fail_reason")
            if trial.state == TrialState.FAIL and reason:
                tags[FAIL_REASON_TAG] = str(reason)
            tracker.finish_trial_run(
                record.run_id,
                trial.state,
                record.params,
                record.epoch_metrics(),
                record.summary,
                tags,
            )
            clock["trial_seconds"] += time.perf_counter() - record.started
        progress.update()
        progress.set_postfix_str(_best_so_far(study), refresh=True)

    interrupted_status = None
    try:
        with logging_redirect_tqdm(loggers=[optuna_logger]):
            study.optimize(
                objective,
                n_trials=sweep.n_trials,
                timeout=sweep.timeout or None,
                catch=(TrainingDiverged,),
                callbacks=[finish_trial],
            )
    except KeyboardInterrupt:
        interrupted_status = "KILLED"
        raise
    except BaseException:
        interrupted_status = "FAILED"
        raise
    finally:
        progress.close()
        optuna_logger.removeFilter(divergence_filter)
        if interrupted_status is not None:
            _close_interrupted(study, tracker, pending, interrupted_status)

    new_trials = sum(1 for t in study.trials if t.number >= existing_trials)
    trials = trials_table(study, tracker.search_trial_runs())
    best = best_per_batch_size(trials)
    with tempfile.TemporaryDirectory(prefix="softmaxreg-sweep-") as folder:
        artifacts = Path(folder)
        _, plot_notes = write_study_plots(study, artifacts)
        notes += plot_notes
        write_csv_atomically(trials, artifacts / "trials.csv")
        write_csv_atomically(best, artifacts / "best_per_batch_size.csv")
        write_text_atomically(
            artifacts / "best_per_batch_size.md", best_per_batch_size_markdown(best)
        )
        if plot_notes:
            write_text_atomically(artifacts / "plot_notes.txt", "\n".join(plot_notes) + "\n")
        counts = trials["state"].value_counts()
        parent_metrics = {
            "trials_total": float(len(trials)),
            "trials_complete": float(counts.get("COMPLETE", 0)),
            "trials_pruned": float(counts.get("PRUNED", 0)),
            "trials_failed": float(counts.get("FAIL", 0)),
            "trial_seconds": clock["trial_seconds"],
            "tracking_seconds": tracker.seconds,
        }
        if clock["trial_seconds"]:
            parent_metrics["tracking_overhead_fraction"] = tracker.seconds / clock["trial_seconds"]
        complete = trials[trials["state"] == "COMPLETE"]
        if not complete.empty:
            top = complete.loc[complete["best_val_accuracy"].idxmax()]
            parent_metrics["best_val_accuracy"] = float(top["best_val_accuracy"])
            parent_metrics["test_accuracy_at_best_val"] = float(top["test_accuracy_at_best_val"])
        tracker.finish_parent_run("FINISHED", parent_metrics, len(trials), artifacts)
    parent = tracker.client.get_run(parent_run_id)
    return SweepOutcome(
        study=study,
        study_name=study_name,
        trials=trials,
        best_per_batch_size=best,
        parent_run_id=parent_run_id,
        experiment_id=str(tracker.experiment_id),
        new_trials=new_trials,
        wall_seconds=time.perf_counter() - started,
        trial_seconds=clock["trial_seconds"],
        tracking_seconds=tracker.seconds,
        artifact_uri=parent.info.artifact_uri,
        notes=notes,
    )


def _close_interrupted(
    study: optuna.Study, tracker: SweepTracker, pending: dict[int, TrialLog], status: str
) -> None:
    """After Ctrl-C or an unexpected error: end the open runs so none stays RUNNING."""
    states = {trial.number: trial.state for trial in study.get_trials(deepcopy=False)}
    for number, record in list(pending.items()):
        state = states.get(number, TrialState.FAIL)
        state = state if state in RUN_STATUS_OF_STATE else TrialState.FAIL
        tags = {**record.tags, FAIL_REASON_TAG: "interrupted" if status == "KILLED" else "error"}
        tracker.finish_trial_run(
            record.run_id, state, record.params, record.epoch_metrics(), record.summary, tags
        )
    if tracker.parent_run_id is not None:
        tracker.client.set_terminated(tracker.parent_run_id, status=status)


def _best_so_far(study: optuna.Study) -> str:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return "best: none yet"
    if len(study.directions) > 1:
        return f"Pareto front: {len(study.best_trials)} trials"
    best = study.best_trial
    return (
        f"best val acc {best.value:.4f} (#{best.number}: bs {best.params['batch_size']}, "
        f"lr {best.params['lr']:.3g})"
    )


# ---------------------------------------------------------------------------------- report


def format_report(outcome: SweepOutcome, sweep: SweepConfig) -> str:
    """The end-of-run summary: best trial, comparison table, where things are, what to run."""
    trials = outcome.trials
    counts = trials["state"].value_counts()
    lines = [
        f"study {outcome.study_name}: {outcome.new_trials} new trials in "
        f"{outcome.wall_seconds:.1f} s; {len(trials)} in total ("
        + ", ".join(f"{counts.get(s, 0)} {s.lower()}" for s in ("COMPLETE", "PRUNED", "FAIL"))
        + ")",
    ]
    complete = trials[trials["state"] == "COMPLETE"]
    if complete.empty:
        lines.append("no trial completed, so there is no best trial yet")
    elif sweep.multi_objective:
        lines.append("Pareto front (validation accuracy vs time-to-accuracy):")
        for trial in sorted(outcome.study.best_trials, key=lambda t: -t.values[0]):
            row = trials[trials["trial_number"] == trial.number].iloc[0]
            seconds = "not reached" if math.isinf(trial.values[1]) else f"{trial.values[1]:.2f} s"
            lines.append(
                f"  trial {trial.number}: batch size {trial.params['batch_size']}, lr "
                f"{trial.params['lr']:.3g} -> val accuracy {trial.values[0]:.4f}, test "
                f"{row['test_accuracy_at_best_val']:.4f}, time to target {seconds}"
            )
    else:
        top = complete.loc[complete["best_val_accuracy"].idxmax()]
        lines.append(
            f"best trial {int(top['trial_number'])}: batch size {int(top['batch_size'])}, lr "
            f"{top['lr']:.4g} -> best val accuracy {top['best_val_accuracy']:.4f}; test "
            f"accuracy {top['test_accuracy_at_best_val']:.4f} at that epoch, "
            f"{top['final_test_accuracy']:.4f} after the last epoch"
        )
    lines += [
        "",
        "best learning rate per batch size (chosen by validation accuracy; test is only reported):",
        best_per_batch_size_text(outcome.best_per_batch_size),
        "",
        f"tracking: {outcome.tracking_seconds:.2f} s in MLflow calls over "
        f"{outcome.trial_seconds:.1f} s of trials ({outcome.tracking_overhead_fraction:.1%})",
        *outcome.notes,
        "",
        "written:",
        f"  Optuna study   {display_url(absolute_sqlite_url(sweep.storage))}",
        f"  MLflow runs    {display_url(absolute_sqlite_url(sweep.tracking_uri))} (experiment "
        f"{outcome.study_name!r} id {outcome.experiment_id}, parent run {outcome.parent_run_id})",
        f"  plots, tables  {outcome.artifact_uri}",
        "",
        f"compare the runs:  {mlflow_ui_command(sweep.tracking_uri)}",
        "export the table:  python -m experiments.export --study-name "
        f"{outcome.study_name}"
        + (
            f" --storage {display_url(sweep.storage)}"
            if sweep.storage != DEFAULT_OPTUNA_STORAGE
            else ""
        )
        + (
            f" --tracking-uri {display_url(sweep.tracking_uri)}"
            if sweep.tracking_uri != DEFAULT_TRACKING_URI
            else ""
        ),
    ]
    return "\n".join(lines)


def check_before_start(
    sweep: SweepConfig, train_config: TrainConfig, data_config: DataConfig
) -> None:
    """Everything that can be checked before data or stores are touched; raises on failure."""
    check_optuna_storage(sweep.storage, "--storage")
    check_tracking_uri(sweep.tracking_uri, "--tracking-uri")
    existing = load_existing_study(sweep.storage, study_name_for(sweep, data_config))
    if existing is not None:
        check_resumable(existing, sweep, train_config, checksum=None)


def main(argv: Sequence[str] | None = None) -> int:
    parser, sweep, train_config, data_config = parse_args(argv)
    try:
        device = resolve_device(train_config.device)
        check_before_start(sweep, train_config, data_config)
    except (DeviceUnavailableError, StoreError, SweepError, ConfigError) as error:
        parser.error(str(error))
    data = load_data_or_exit(data_config, device)
    try:
        outcome = run_sweep(sweep, train_config, data_config, data)
    except SweepError as error:
        parser.error(str(error))
    except KeyboardInterrupt:
        print(
            "\ninterrupted: finished trials are kept; run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    print(format_report(outcome, sweep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
