"""The sweep's settings: `SweepConfig`, every flag with its default, validated on creation.

    sweep = SweepConfig(n_trials=10, workers=2)      # validates every value, names a bad one
    stores = Stores.from_config(sweep)               # experiments.store_urls: typed URLs

Parsing and validating happen here, once; nothing here touches a file, a database or the
network.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal, get_args

from experiments.store_urls import Stores
from experiments.stores import (
    DEFAULT_OPTUNA_STORAGE,
    DEFAULT_TRACKING_URI,
    parse_sql_url,
    validate_tracking_uri,
)
from softmaxreg.config import (
    LR_SCHEDULE_CHOICES,
    TRAIN_SET_SIZE,
    DataConfig,
    LrScheduleName,
    TrainConfig,
    require,
    require_int,
)

SamplerName = Literal["tpe", "random", "grid", "gp"]
PrunerName = Literal["none", "median", "hyperband"]
ObjectiveName = Literal["val_accuracy", "accuracy_vs_time"]

SAMPLER_CHOICES: tuple[str, ...] = get_args(SamplerName)
PRUNER_CHOICES: tuple[str, ...] = get_args(PrunerName)
OBJECTIVE_CHOICES: tuple[str, ...] = get_args(ObjectiveName)
GRACE_HEARTBEATS = 3
"""A trial or worker silent for this many heartbeats counts as dead."""
STUDY_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
WORKER_SEED_STRIDE = 1_000_003
"""Sampler seeds of different workers are this far apart (a prime), so no two workers of a study
draw the same sequence; worker k of a study seeded s uses s + k * stride."""


@dataclass(frozen=True)
class SweepConfig:
    """The study: which settings to try, how to choose them, and where results are kept."""

    study_name: str = ""
    """Optuna study and MLflow experiment name; running again with the same name resumes the
    study. Empty means softmaxreg-<dataset> (plus -accuracy-vs-time for that objective)."""

    n_trials: int = 40
    """Trials to run in this invocation (added to any the study already has). --workers claim
    them from one shared count as they go, so a worker that draws slow passes runs fewer and
    all end together."""

    timeout: float = 0.0
    """Stop starting new trials after this many seconds; 0 means no time limit."""

    batch_sizes: tuple[int, ...] = (16, 64, 256, 1024)
    """Batch sizes to choose from (categorical). Compared at their own best learning rate. A
    study keeps the choices it was created with."""

    lr_range: tuple[float, float] = (0.003, 1.0)
    """Learning-rate search range, sampled on a log scale."""

    sampler: SamplerName = "tpe"
    """Optuna sampler: tpe (Bayesian, the default), random, grid (every batch size × grid_lr_points
    log-spaced learning rates (× every --lr-schedules choice), each run once across all workers),
    gp (Gaussian process)."""

    grid_lr_points: int = 6
    """Learning rates per batch size for --sampler grid, log-spaced over lr_range."""

    sampler_seed: int = 0
    """Seed of the sampler. Worker k uses sampler_seed + k * 1000003, and on resume the seed is
    offset by the trials already run, so no two workers and no two invocations repeat a draw.
    The grid sampler keeps this seed everywhere: trial n runs the n-th point of its shuffled
    grid in every worker."""

    pruner: PrunerName = "median"
    """Stop unpromising trials early: median (against COMPLETE trials of the same batch size, from
    epoch 2), hyperband, or none. Must be none for --objective accuracy_vs_time."""

    objective: ObjectiveName = "val_accuracy"
    """val_accuracy: maximise validation accuracy. accuracy_vs_time: also minimise
    time-to-accuracy (seconds to reach --target-accuracy; +inf if never reached)."""

    repeats: int = 1
    """Seeds trained per configuration (seed, seed+1, ...); the objective is their mean."""

    population: int = 8
    """Trials trained together in one pass (softmaxreg.train_population): the worker asks Optuna
    for up to this many trials at once, all with one batch size, trains them on the same batches
    (one matmul for all), reports each one's epochs to its own trial for pruning and tells each
    its result. 1 trains every trial alone, and times it alone: a member's time figures are
    those of the shared pass. 8 by default: the default study ran 1.6x faster than with 1 and
    as well (benchmarks.population_sweep, README). Needs --model logits and --objective
    val_accuracy."""

    lr_schedules: tuple[LrScheduleName, ...] = ()
    """Learning-rate schedules the study chooses from per trial (categorical, beside batch size
    and lr); empty: every trial uses --lr-schedule."""

    workers: int = 0
    """Worker processes on this machine, all running trials of the same study through its
    storage. They are forked once imports and data are loaded, so each extra worker costs
    little memory and no start-up (README: summed PSS 1.27 GB with 1, 1.35 with 2). Each gets
    max(1, cores // workers) torch threads (or --threads if given), so the cores are not
    oversubscribed. 0 (auto): one per usable CPU core on the CPU, at most --n-trials; 1 on
    CUDA and MPS (one device). Why: on 2 cores, 100 random trials x 10 epochs ran 1.59-1.74x
    as fast with 2 workers as with 1 (benchmarks.sweep_workers, an AMD and an Intel VM; the
    hardware's two-process matmul ratio was 1.88-1.98x), and a population trains on one
    thread, so a single worker leaves the other core to its MLflow writes and little else.
    With a core busy elsewhere, one-thread workers lose no more than one worker would
    (README, "Several workers")."""

    worker_id: int = 0
    """Number of the first worker started by this command: it seeds that worker's sampler and is
    recorded on its trials. On several machines sharing a study, give each its own range (the
    second machine of two running 4 workers each: --worker-id 4)."""

    heartbeat_seconds: int = 10
    """Each running trial records a heartbeat this often; a trial silent for 3 heartbeats (its
    worker was killed or preempted) is marked FAIL by the next worker or reconcile."""

    retries: int = 1
    """Times a trial whose worker died is queued again for another worker (same batch size and
    learning rate); 0 leaves it FAIL."""

    tracking_wait_seconds: float = 60.0
    """How long to keep retrying an unreachable MLflow store before the worker stops with exit
    status 1. Finished trials are safe in Optuna; the next start or `python -m
    experiments.reconcile` copies them to MLflow."""

    storage_wait_seconds: float = 60.0
    """How long to wait for Optuna's storage when it stops answering (a database restart, a
    network cut) before the worker stops with exit status 1, saying so in one line. The trial
    the worker held is failed with the reason once the storage answers again (or, if it never
    does in time, by the heartbeat check of the next worker or reconcile); finished trials are
    untouched."""

    storage: str = DEFAULT_OPTUNA_STORAGE
    """Optuna storage URL (SQLAlchemy), the study's source of truth: sqlite:///optuna.db is one
    file in the current folder; postgresql://user@host/db shares a study between machines."""

    tracking_uri: str = DEFAULT_TRACKING_URI
    """MLflow tracking URI, a mirror of the study that can be rebuilt from it: a database
    (sqlite:///mlflow.db, MLflow's default; artifacts go to ./mlruns) or a tracking server
    (http://host:port)."""

    refit: bool = True
    """When the study ends, train its best trial's configuration again on train + validation
    (60,000 MNIST images) with the trial's seed, score it on the test split, and register that
    model instead of the trial's own (55,000 images); --no-refit registers the trial's."""

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
        require_seconds(self.timeout, "timeout", "a finite number of seconds >= 0 (0: no limit)")
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
        require_int(self.population, "population", 1)
        require(
            self.population == 1 or not self.multi_objective,
            "population",
            self.population,
            "1 with --objective accuracy_vs_time (a member's time-to-accuracy is the shared "
            "pass's, not its own): add --population 1",
        )
        require(
            isinstance(self.lr_schedules, tuple)
            and all(s in LR_SCHEDULE_CHOICES for s in self.lr_schedules)
            and len(set(self.lr_schedules)) == len(self.lr_schedules),
            "lr_schedules",
            self.lr_schedules,
            f"distinct choices among {', '.join(LR_SCHEDULE_CHOICES)} (or none)",
        )
        require_int(self.workers, "workers", 0)
        require_int(self.worker_id, "worker_id", 0)
        require_int(self.heartbeat_seconds, "heartbeat_seconds", 1)
        require_int(self.retries, "retries", 0)
        require_seconds(self.tracking_wait_seconds, "tracking_wait_seconds", "seconds >= 0")
        require_seconds(self.storage_wait_seconds, "storage_wait_seconds", "seconds >= 0")
        require(isinstance(self.storage, str), "storage", self.storage, "a database URL")
        parse_sql_url(self.storage, "storage")
        require(isinstance(self.tracking_uri, str), "tracking_uri", self.tracking_uri, "a URI")
        validate_tracking_uri(self.tracking_uri, "tracking_uri")
        require(isinstance(self.refit, bool), "refit", self.refit, "true or false")
        require(isinstance(self.quiet, bool), "quiet", self.quiet, "true or false")
        Stores.from_config(self)  # the two stores must be two different databases

    @property
    def multi_objective(self) -> bool:
        return self.objective == "accuracy_vs_time"

    @property
    def directions(self) -> list[str]:
        return ["maximize", "minimize"] if self.multi_objective else ["maximize"]

    @property
    def grace_seconds(self) -> int:
        """Silence after which a running trial's worker counts as dead."""
        return GRACE_HEARTBEATS * self.heartbeat_seconds

    def grid_learning_rates(self) -> list[float]:
        low, high = self.lr_range
        if self.grid_lr_points == 1:
            return [math.sqrt(low * high)]
        ratio = (high / low) ** (1 / (self.grid_lr_points - 1))
        # The last point is set exactly, so float error cannot push it past the range.
        return [low * ratio**i for i in range(self.grid_lr_points - 1)] + [high]

    def grid_size(self) -> int:
        return len(self.batch_sizes) * self.grid_lr_points * max(1, len(self.lr_schedules))

    def worker_seed(self, worker_id: int, existing_trials: int) -> int:
        return self.sampler_seed + worker_id * WORKER_SEED_STRIDE + existing_trials


def check_train_config(
    sweep: SweepConfig, train_config: TrainConfig, data_config: DataConfig | None = None
) -> None:
    """Raise `ConfigError` where the sweep's settings clash with the fixed training settings
    (or, given `data_config`, with the data: a batch larger than the training split would train
    full-batch while every record said otherwise)."""
    if data_config is not None:
        too_large = [b for b in sweep.batch_sizes if b > data_config.train_size]
        require(
            not too_large,
            "batch_sizes",
            tuple(too_large),
            f"batch sizes up to {data_config.train_size}, the training split "
            f"({TRAIN_SET_SIZE} images less --val-size {data_config.val_size})",
        )
    require(
        sweep.population == 1 or train_config.model == "logits",
        "population",
        sweep.population,
        f"1 with --model {train_config.model} (a population trains the logits model only): "
        "add --population 1",
    )


def require_seconds(value: object, field_name: str, expected: str) -> None:
    require(
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0,
        field_name,
        value,
        expected,
    )


def study_name_for(sweep: SweepConfig, data_config: DataConfig) -> str:
    """The study (and MLflow experiment) name: --study-name, else derived from the dataset."""
    if sweep.study_name:
        return sweep.study_name
    suffix = "-accuracy-vs-time" if sweep.multi_objective else ""
    return f"softmaxreg-{data_config.dataset.replace('_', '-')}{suffix}"
