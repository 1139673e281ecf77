"""How long a run of the suite will take, said up front: a cost model of each section.

    estimate_seconds(("scaling", "startup"), settings, n_train=55000)   # seconds, roughly

The model counts per-unit costs (an epoch at a batch size, a process start, a probe); the
factors measured per section in the committed full run correct what it leaves out.
"""

from __future__ import annotations

from benchmarks.common import all_threads
from benchmarks.contention import PIPELINES as CONTENTION_PIPELINES
from benchmarks.profiles import Settings

FULL_EPOCH_SAMPLES = 55000


def epoch_cost(batch_size: int, n_train: int) -> float:
    """Rough seconds of one training epoch plus evaluation on this project's 2-core CPU."""
    steps = -(-n_train // min(batch_size, n_train))
    return (0.045 * n_train / FULL_EPOCH_SAMPLES + steps * 75e-6) + 0.01 * n_train / 55000


def estimate_seconds(sections: tuple[str, ...], settings: Settings, n_train: int) -> float:
    """A rough cost model of the run, to say up front how long it will take on this project's
    2-core CPU (per-unit costs, times the factor measured per section)."""
    s = settings
    scale = n_train / FULL_EPOCH_SAMPLES
    all_bs = sum(epoch_cost(bs, n_train) for bs in s.batch_sizes)
    bs100 = epoch_cost(100, n_train)
    cost = {
        "tutorial_speed": s.tutorial_rounds * 2 * (95e-6 * 70000 * scale + bs100),
        "scaling": s.scaling_passes
        * (1 + s.scaling_epochs_per_pass)
        * all_bs
        * (1.0 + 1.6 * (all_threads() > 1)),
        "time_to_accuracy": all_bs
        * (len(s.sweep_lrs) * s.sweep_epochs + s.seeds * s.tta_max_epochs * 0.6),
        "tutorial_bug": s.seeds * s.ablation_epochs * bs100 * 2.8,
        "tracking_overhead": 2 * s.tracking_repeats * s.tracking_epochs * bs100 + 3,
        # A default sweep (40 trials, 10 epochs, some pruned) takes about two minutes here.
        "sweep_throughput": (s.sweep_trials or 40) * (s.sweep_epochs_per_trial or 10) * 0.3 + 5,
        # Four runs of the same sweep as processes (1, 2, 2, 1 workers, ~0.07 s per trial-epoch
        # on average, ~15 s of start-up, refit and report), and two passes of the matmul probes
        # (~4 s of start-up, then 5 shapes timed with 1 and with all processes).
        "sweep_workers": 4 * (s.limit_trials * s.limit_epochs * 0.07 + 15)
        + 2 * (4 + 5 * 2 * (s.limit_probe_seconds + 0.1)),
    }
    cost["fashion_mnist"] = cost["time_to_accuracy"]
    # A population of K costs about K / 3 separate epochs (benchmarks.population); lbfgs fits
    # take ~15 s each on the full data.
    members = 3 * len(s.ceiling_lrs) * len(s.ceiling_weight_decays)
    cost["accuracy_ceiling"] = (
        sum(epoch_cost(bs, n_train) for bs in s.ceiling_batch_sizes)
        * sum(s.ceiling_epochs)
        * members
        / 3
        + s.seeds
        * (max(s.ceiling_epochs) * epoch_cost(64, n_train) + 4 * s.ablation_epochs * bs100)
        + len(s.sklearn_cs) * 15 * scale
    )
    # Every measurement lasts at least contention_min_seconds (a slow pipeline's one trial can
    # last longer): rounds x 2 conditions x batch sizes x pipelines of them.
    examples = min(s.contention_examples, n_train)
    trial = s.contention_epochs * 95e-6 * examples  # the tutorial pipeline's, the slowest
    cost["contention"] = (
        s.contention_rounds
        * 2
        * len(s.contention_batch_sizes)
        * len(CONTENTION_PIPELINES)
        * max(s.contention_min_seconds, trial)
    )
    cost["population"] = {"quick": 8, "standard": 25, "full": 180}[s.population_sizes]
    # Each round runs both modes as processes: ~20 s of start-up each, then about 0.2 s per
    # epoch of a trial alone, a third of that in a population.
    epochs = s.population_sweep_epochs * s.population_sweep_trials
    modes = 1 + len(s.population_sweep_sizes)
    cost["population_sweep"] = s.population_sweep_rounds * (
        20 * modes + 0.2 * epochs * (1 + len(s.population_sweep_sizes) / 3)
    )
    # Per round a 1-trial sweep (~15 s) and the bare imports (~5 s), a cold sweep first; then
    # a sweep of 4 two-epoch trials per worker for each memory figure.
    cost["startup"] = (
        16 + 20 * s.startup_rounds + sum(12 + 3 * workers for workers in s.startup_workers)
    )
    # Per run ~12 s of start-up and warm-up, then ~0.5 s per trial before, ~0.15 s after.
    cost["bookkeeping"] = s.bookkeeping_rounds * (24 + 0.65 * s.bookkeeping_trials)
    return 15 + sum(cost[name] * MEASURED_FACTOR.get(name, 1.0) for name in sections)


MEASURED_FACTOR = {
    "tutorial_speed": 2.4,
    "scaling": 1.7,
    "time_to_accuracy": 1.8,
    "tutorial_bug": 1.9,
    "tracking_overhead": 1.8,
    "sweep_throughput": 0.33,
    "fashion_mnist": 2.0,
    "accuracy_ceiling": 1.45,
    "contention": 4.5,
    "population": 0.5,
    "population_sweep": 1.5,
}
"""Seconds measured / the model above, per section, in the full run of benchmarks/report (2 CPUs,
load average 1-2.6): the model counts the per-unit costs, this corrects what it leaves out
(start-up, evaluation, busy threads waiting). A new section without a factor counts as 1."""
