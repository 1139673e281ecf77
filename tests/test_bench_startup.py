"""The startup section on real MNIST: fixed cost against bare imports, workers' memory."""

from __future__ import annotations

import pytest
import torch

from experiments.plot_process import plots_apart
from tests.test_benchmarks import read, run_quick


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_startup_section_on_real_mnist(real_mnist_root, tmp_path):
    out = run_quick(real_mnist_root, tmp_path, "startup")
    startup = read(out, "startup")
    assert len(startup) == 1 and (startup.fixed_s > 0).all() and (startup.bare_imports_s > 0).all()
    assert (startup.bare_imports_no_teardown_s > 0).all()  # the stricter floor, timed too
    assert (startup.ratio_no_teardown == startup.fixed_s / startup.bare_imports_no_teardown_s).all()
    memory = read(out, "startup_memory")
    # The command and its workers, and where plots are drawn apart the plot server it forked
    # at its start (alive the whole run).
    server = 1 if plots_apart(torch.device("cpu")) else 0
    assert list(memory.workers) == [1, 2] and list(memory.processes) == [1 + server, 3 + server]
    assert (memory.rss_mb >= memory.pss_mb).all() and (memory.pss_mb > 0).all()
