"""Threads that do work during a run: with `threads=0` at a small batch, only the calling thread.

`choose_threads` picks one torch thread for small steps so that a core held by another process
stalls nothing; that holds only if every part of a run (shuffle, gather, steps, evaluation of
both splits) stays on the calling thread. tests/thread_probe.py measures each thread's on-CPU
time around real runs in a fresh process; real MNIST, so that evaluation has its full 15,000
rows: on 2 threads its matmuls alone would keep a worker busy for milliseconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = Path(__file__).with_name("thread_probe.py")
WORKER_BUDGET_NS = 1_000_000
"""On-CPU time all other threads together may use during a run: 1 ms, far less than a 2-thread
evaluation of the splits gives a worker (hundreds of ms measured), far more than none."""

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/task").is_dir(), reason="needs Linux's /proc/self/task"
)


@pytest.fixture(scope="module")
def probe(real_mnist_root) -> dict[str, tuple[int, list[int]]]:
    done = subprocess.run(
        [sys.executable, str(PROBE), str(real_mnist_root)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return json.loads(done.stdout)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPUs for a worker thread")
def test_workers_do_run_when_a_step_uses_two_threads(probe):
    """The measurement can see a worker: a run forced to 2 threads makes one work."""
    others, used = probe["train_2_threads"]
    assert used == [2] and others > WORKER_BUDGET_NS


def test_train_at_auto_threads_runs_on_the_calling_thread_only(probe):
    others, used = probe["train_auto"]
    assert used == [1] and others < WORKER_BUDGET_NS


def test_population_at_auto_threads_runs_on_the_calling_thread_only(probe):
    others, used = probe["population_auto"]
    assert used == [1, 1] and others < WORKER_BUDGET_NS
