"""The bookkeeping section on real MNIST: before (the baseline commit) and after."""

from __future__ import annotations

import pytest

from benchmarks.profiles import QUICK
from tests.test_benchmarks import read, run_quick


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_bookkeeping_section_on_real_mnist(real_mnist_root, tmp_path):
    out = run_quick(real_mnist_root, tmp_path, "bookkeeping")
    # Before (the baseline commit's code) and after, each its trials all COMPLETE, every part
    # measured; the batched code commits fewer Optuna transactions per trial.
    runs = read(out, "bookkeeping_runs")
    assert sorted(runs.version) == ["after", "before"]
    assert (runs.complete == QUICK.bookkeeping_trials + QUICK.bookkeeping_population).all()
    assert (runs.arithmetic_ms > 0).all() and (runs.bookkeeping_ms > 0).all()
    by_version = runs.set_index("version")
    assert by_version.optuna_commits["after"] < by_version.optuna_commits["before"]
