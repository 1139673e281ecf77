"""The benchmark suite's configuration: `BenchConfig` (the command line) and `Settings` (sizes).

`BenchConfig` is the single source of the CLI: every field becomes a flag through
`softmaxreg.cli`, with its docstring as help; invalid values exit with status 2 before any work.
`Settings` holds the sizes of every benchmark (batch sizes, repeats, seeds, ...), one preset per
`--profile`: `STANDARD` (the default, ~10 minutes here: every headline figure with at least three
rounds or seeds, so that `benchmarks.compare` has noise bands), `FULL` (the committed report,
35-45 minutes) and `QUICK` (`--quick`, the under-a-minute smoke check). A few `BenchConfig`
fields override them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, get_args

from softmaxreg.config import DEVICE_CHOICES, DeviceName, require, require_choice, require_int

SectionName = Literal[
    "tutorial_speed",
    "scaling",
    "time_to_accuracy",
    "tutorial_bug",
    "tracking_overhead",
    "sweep_throughput",
    "sweep_workers",
    "fashion_mnist",
    "accuracy_ceiling",
    "contention",
    "population",
    "population_sweep",
    "startup",
    "bookkeeping",
]
SECTIONS: tuple[str, ...] = get_args(SectionName)  # one list: the Literal is the source
ProfileName = Literal["quick", "standard", "full"]
PROFILES: tuple[str, ...] = get_args(ProfileName)


@dataclass(frozen=True)
class BenchConfig:
    """Run the softmaxreg benchmark suite and write its report."""

    out: str = "./benchmark-results"
    """Results folder for report.md, one CSV per table and the PNG plots (created if missing;
    files of an earlier run are overwritten)."""

    data_root: str = ""
    """Data folder with MNIST and Fashion-MNIST (fetched and verified like experiments.train when
    missing). Empty means $SOFTMAXREG_DATA if set, else ./data."""

    tracking_uri: str = ""
    """MLflow tracking URI of the `benchmarks` experiment. Empty means sqlite:///<out>/mlflow.db
    with artifacts in <out>/mlartifacts."""

    profile: ProfileName = "standard"
    """Sizes of every benchmark: standard (~10 min here, every headline figure with enough
    rounds to compare runs), full (the committed report, 35-45 min) or quick (as --quick)."""

    quick: bool = False
    """Smoke check in under a minute (the same as --profile quick): tiny sizes, one repeat; its
    figures mean nothing."""

    synthetic: bool = False
    """Use small synthetic IDX data written to a temporary folder instead of (Fashion-)MNIST, so
    no download is needed (tests use it with --quick)."""

    sections: tuple[SectionName, ...] = SECTIONS  # type: ignore[assignment]
    """Benchmarks to run, in the report's order."""

    device: DeviceName = "auto"
    """Device of every benchmark except scaling, which runs on each available device."""

    threads: int = 0
    """torch intra-op threads for every benchmark except scaling (which measures 1 and all); 0
    keeps torch's default. 1 avoids multi-threaded slowdowns when other processes load the
    CPUs."""

    seeds: int | None = None
    """Seeds per configuration in time-to-accuracy and the tutorial ablation (unset: 5, quick 2)."""

    repeats: int | None = None
    """Interleaved passes of the scaling benchmark, each timing 2 epochs per configuration after
    a warm-up epoch (unset: 3, quick 1)."""

    rounds: int | None = None
    """Alternating rounds of tutorial vs trainer, at each thread count (unset: 3, quick 1)."""

    def __post_init__(self) -> None:
        require(bool(self.out), "out", self.out, "a folder path")
        require(
            len(self.sections) > 0 and len(set(self.sections)) == len(self.sections),
            "sections",
            self.sections,
            "one or more distinct section names",
        )
        for section in self.sections:
            require_choice(section, "sections", SECTIONS)
        require_choice(self.device, "device", DEVICE_CHOICES)
        require_choice(self.profile, "profile", PROFILES)
        require(
            not self.quick or self.profile in ("quick", "standard"),
            "quick",
            self.quick,
            f"--quick alone: it is --profile quick, and contradicts --profile {self.profile}",
        )
        require_int(self.threads, "threads", 0)
        for name in ("seeds", "repeats", "rounds"):
            value = getattr(self, name)
            if value is not None:
                require_int(value, name, 1)

    @property
    def profile_name(self) -> ProfileName:
        """The profile this run uses: --quick is --profile quick."""
        return "quick" if self.quick else self.profile

    @property
    def is_quick(self) -> bool:
        return self.profile_name == "quick"

    @property
    def settings(self) -> Settings:
        """The sizes this run uses: the preset, with any overrides from the flags applied."""
        preset = {"quick": QUICK, "standard": STANDARD, "full": FULL}[self.profile_name]
        overrides = {
            "seeds": self.seeds,
            "scaling_passes": self.repeats,
            "tutorial_rounds": self.rounds,
        }
        return dataclasses.replace(preset, **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True)
class Settings:
    """Sizes of every benchmark."""

    batch_sizes: tuple[int, ...]
    """Batch sizes of the scaling and time-to-accuracy benchmarks."""
    tutorial_rounds: int
    """Alternating rounds of tutorial epoch vs trainer epoch; medians are reported."""
    scaling_passes: int
    """Interleaved passes over every (device, threads, batch size) in the scaling benchmark."""
    scaling_epochs_per_pass: int
    """Timed epochs per configuration and pass, after one warm-up epoch."""
    floor_repeats: int
    """Timed repeats of the matmul floor per pass (after two warm-up repeats)."""
    sweep_lrs: tuple[float, ...]
    """Learning-rate grid searched for each batch size on the validation split."""
    sweep_epochs: int
    """Epochs per grid point; the score is the best validation accuracy within them."""
    seeds: int
    """Seeds (1..seeds, disjoint from the sweep's seed 0) per time-to-accuracy and ablation cell."""
    tta_max_epochs: int
    """Epoch budget of a time-to-accuracy run that has not reached its targets yet."""
    ablation_epochs: int
    """Epochs of the tutorial reproduction (the tutorial trains 10)."""
    tracking_repeats: int
    """Alternating repeats of one trial with and without MLflow logging."""
    tracking_epochs: int
    """Epochs of that trial."""
    sweep_trials: int | None
    """Trials of the sweep whose throughput is measured (None: the sweep's default)."""
    sweep_epochs_per_trial: int | None
    """Epochs per trial of that sweep (None: TrainConfig's default)."""
    max_train_examples: int | None
    """Real data only: keep the first this many training examples (None: all). Quick mode uses a
    slice so that it stays under a minute; the tutorial pipeline then reads the same number."""
    max_eval_examples: int | None
    """Real data only: keep the first this many validation and test examples (None: all)."""
    synthetic_train: int
    """Training examples (before the validation split) of synthetic data."""
    synthetic_test: int
    """Test examples of synthetic data."""
    synthetic_val: int
    """Validation examples carved from the synthetic training set."""
    ceiling_batch_sizes: tuple[int, ...]
    """Batch sizes of the accuracy-ceiling selection grid."""
    ceiling_lrs: tuple[float, ...]
    """Learning rates of that grid (each under every schedule)."""
    ceiling_epochs: tuple[int, ...]
    """Epoch budgets of that grid."""
    ceiling_weight_decays: tuple[float, ...]
    """Weight decays of that grid."""
    sklearn_cs: tuple[float, ...]
    """Inverse L2 strengths of scikit-learn's LogisticRegression, chosen on validation."""
    sklearn_max_iter: int
    """lbfgs iterations per scikit-learn fit."""
    contention_batch_sizes: tuple[int, ...]
    """Batch sizes of the contention benchmark."""
    contention_epochs: int
    """Epochs per timed trial under contention."""
    contention_examples: int
    """Training examples per epoch under contention, the same for every pipeline (the first of
    the training split): with threads waiting on a busy core, a full epoch of a 2-thread
    pipeline at batch 16 takes minutes here."""
    contention_rounds: int
    """Alternating quiet/busy rounds; medians are compared."""
    contention_min_seconds: float
    """Each contention measurement repeats its trial until this many training seconds have
    passed (at least once) and reports seconds per trial: one trial at batch 256 lasts ~20 ms,
    a few scheduler slices, which a single lost slice doubles."""
    population_sizes: ProfileName
    """Sizes of the population benchmark (`benchmarks.population.PRESETS`)."""
    population_sweep_trials: int
    """Trials of the sweep run with and without --population (the same configurations)."""
    population_sweep_epochs: int
    """Epochs per trial of that sweep."""
    population_sweep_sizes: tuple[int, ...]
    """--population values of that sweep, each against --population 1."""
    population_sweep_rounds: int
    """Rounds of one run per mode, the order reversed every other round; medians are compared."""
    limit_trials: int
    """Random trials of the study the sweep-workers section runs with 1 and 2 workers."""
    limit_epochs: int
    """Epochs per trial of that study (no pruning: every trial trains them all)."""
    limit_probe_seconds: float
    """Seconds each matmul-rate probe runs per shape (`benchmarks.matmul_limit`)."""
    startup_rounds: int
    """Alternated rounds of a 1-trial sweep and the bare imports it is measured against."""
    startup_workers: tuple[int, ...]
    """`--workers` counts whose summed memory the startup section samples (none: skipped)."""
    bookkeeping_trials: int
    """Timed one-epoch trials per run of the bookkeeping section (after a warm-up pass)."""
    bookkeeping_population: int
    """--population of those runs."""
    bookkeeping_rounds: int
    """Rounds of one run before and one after (order reversed every other round); 0 skips
    the section."""


FULL = Settings(
    batch_sizes=(16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
    tutorial_rounds=3,
    scaling_passes=3,
    scaling_epochs_per_pass=2,
    floor_repeats=10,
    sweep_lrs=(0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0),
    sweep_epochs=10,
    seeds=5,
    tta_max_epochs=20,
    ablation_epochs=10,
    tracking_repeats=5,
    tracking_epochs=10,
    sweep_trials=None,
    sweep_epochs_per_trial=None,
    max_train_examples=None,
    max_eval_examples=None,
    synthetic_train=12000,
    synthetic_test=2000,
    synthetic_val=2000,
    ceiling_batch_sizes=(64, 128),
    ceiling_lrs=(0.03, 0.1, 0.3),
    ceiling_epochs=(10, 20, 40),
    # 2e-3 is scikit-learn's C = 0.01 (its choice on validation) as SGD weight decay,
    # 1 / (C x 55,000) = 1.8e-3; 3e-3 brackets it from above.
    ceiling_weight_decays=(0.0, 1e-3, 2e-3, 3e-3),
    sklearn_cs=(0.005, 0.01, 0.02, 0.05, 0.1),
    sklearn_max_iter=1000,
    contention_batch_sizes=(16, 256),
    contention_epochs=2,
    contention_examples=4000,
    contention_rounds=5,
    contention_min_seconds=1.0,
    population_sizes="full",
    population_sweep_trials=100,
    population_sweep_epochs=10,
    population_sweep_sizes=(8, 16),
    population_sweep_rounds=1,
    limit_trials=100,
    limit_epochs=10,
    limit_probe_seconds=1.5,
    startup_rounds=3,
    startup_workers=(1, 2, 4),
    bookkeeping_trials=128,
    bookkeeping_population=16,
    bookkeeping_rounds=2,
)

QUICK = Settings(
    batch_sizes=(64, 1024),
    tutorial_rounds=1,
    scaling_passes=1,
    scaling_epochs_per_pass=2,
    floor_repeats=3,
    sweep_lrs=(0.03, 0.3),
    sweep_epochs=2,
    seeds=2,
    tta_max_epochs=2,
    ablation_epochs=2,
    tracking_repeats=1,
    tracking_epochs=2,
    sweep_trials=2,
    sweep_epochs_per_trial=2,
    max_train_examples=5000,
    max_eval_examples=1000,
    synthetic_train=1600,
    synthetic_test=400,
    synthetic_val=400,
    ceiling_batch_sizes=(64,),
    ceiling_lrs=(0.1, 0.3),
    ceiling_epochs=(2,),
    ceiling_weight_decays=(0.0, 2e-3),
    sklearn_cs=(0.01, 0.1),
    sklearn_max_iter=50,
    contention_batch_sizes=(256,),
    contention_epochs=1,
    contention_examples=256,
    contention_rounds=1,
    contention_min_seconds=0.0,
    population_sizes="quick",
    population_sweep_trials=8,
    population_sweep_epochs=2,
    population_sweep_sizes=(4,),
    population_sweep_rounds=1,
    limit_trials=4,
    limit_epochs=1,
    limit_probe_seconds=0.2,
    startup_rounds=1,
    startup_workers=(1, 2),
    bookkeeping_trials=8,
    bookkeeping_population=4,
    bookkeeping_rounds=1,
)

# Every headline figure of the full run, at sizes for ~10 minutes here, with >= 3 rounds or seeds
# per figure; per-section estimates in `benchmarks.estimate.estimate_seconds`.
STANDARD = dataclasses.replace(
    FULL,
    batch_sizes=(128, 256, 512, 1024, 4096),
    sweep_lrs=(0.1, 0.3, 1.0),
    sweep_epochs=5,
    seeds=3,
    tracking_epochs=5,
    sweep_trials=20,
    sweep_epochs_per_trial=5,
    ceiling_batch_sizes=(64,),
    ceiling_lrs=(0.1,),
    ceiling_epochs=(20,),
    ceiling_weight_decays=(0.0, 1e-3),
    sklearn_cs=(0.01,),
    contention_examples=1000,
    contention_rounds=3,
    contention_min_seconds=0.2,
    population_sizes="standard",
    population_sweep_trials=12,
    population_sweep_epochs=4,
    population_sweep_sizes=(16,),
    population_sweep_rounds=2,
    # The sweep against the limit at an eighth of the full study's trial-epochs: the same
    # shapes and batch-size mix, three population passes per run.
    limit_trials=24,
    limit_epochs=5,
    limit_probe_seconds=0.5,
    # Workers' memory is a figure of the full run: three more sweeps would pass 12 minutes.
    startup_workers=(),
    # Bookkeeping before/after is a figure of the full run too: two more runs would pass 12.
    bookkeeping_rounds=0,
)
