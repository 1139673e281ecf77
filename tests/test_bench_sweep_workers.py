"""The sweep_workers section on real MNIST: 1 and 2 workers beside the compute limit."""

from __future__ import annotations

import pytest

from benchmarks.profiles import QUICK
from tests.test_benchmarks import read, run_quick


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sweep_workers_section_on_real_mnist(real_mnist_root, tmp_path):
    out = run_quick(real_mnist_root, tmp_path, "sweep_workers")
    workers = read(out, "sweep_workers")
    assert list(workers.workers) == [1, 2] and (workers.trials_per_minute > 0).all()
    # The limit is a real, positive time below the sweep's own wall time.
    assert ((workers.limit_seconds > 0) & (workers.limit_seconds < workers.wall_seconds)).all()
    rates = read(out, "sweep_workers_rates")
    assert (rates.one_process_gflops > 0).all() and (rates.all_processes_gflops > 0).all()
    runs = read(out, "sweep_workers_runs")
    assert (runs.complete == QUICK.limit_trials).all()
