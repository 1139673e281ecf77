"""The sizes of every benchmark, one preset per `--profile`: `Settings` and its presets.

    settings = BenchConfig(profile="full").settings     # FULL, with any flag's overrides

`Settings` holds the sizes of every benchmark (batch sizes, repeats, seeds, ...): `STANDARD` (the
default, ~10 minutes here: every headline figure with at least three rounds or seeds, so that
`benchmarks.compare` has noise bands), `FULL` (the committed report, 35-45 minutes) and `QUICK`
(`--quick`, the under-a-minute smoke check). `benchmarks.config.BenchConfig` picks one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, get_args

ProfileName = Literal["quick", "standard", "full"]
PROFILES: tuple[str, ...] = get_args(ProfileName)


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
