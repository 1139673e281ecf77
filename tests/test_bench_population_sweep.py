"""The population_sweep section on real MNIST: both modes agree configuration by configuration."""

from __future__ import annotations

import pytest

from benchmarks.profiles import QUICK
from tests.test_benchmarks import read, run_quick


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_population_sweep_section_on_real_mnist(real_mnist_root, tmp_path):
    out = run_quick(real_mnist_root, tmp_path, "population_sweep")
    trials = read(out, "population_sweep_trials")
    (size,) = QUICK.population_sweep_sizes
    assert len(trials) == 2 * QUICK.population_sweep_rounds * QUICK.population_sweep_trials
    assert (trials.state == "COMPLETE").all()
    single, together = (trials[trials.population == k] for k in (1, size))
    assert (single.trained_with == 1).all()
    # Passes of `size`, fewer where a batch size's trials run out: a population really trained.
    assert together.trained_with.max() > 1 and (together.trained_with <= size).all()
    joined = single.merge(together, on=["batch_size", "lr"], suffixes=("_1", "_k"))
    assert len(joined) == QUICK.population_sweep_trials  # the same configurations
    # Same seed, same batches: equal up to float rounding, which over 100 trials of 10 epochs
    # moved at most 2 of the 5,000 validation examples (most configurations agree exactly).
    difference = (joined.best_val_accuracy_1 - joined.best_val_accuracy_k).abs()
    assert (difference <= 2 / 5000 + 1e-9).all()
    summary = read(out, "population_sweep")
    assert list(summary.population) == [1, size] and (summary.median_wall_seconds > 0).all()
    assert summary.speedup.iloc[0] == 1.0
