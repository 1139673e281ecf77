"""Threads that do work during a run: with `threads=0` at a small batch, only the calling thread.

`choose_threads` picks one torch thread for small steps so that a core held by another process
stalls nothing; that holds only if every part of a run (shuffle, gather, steps, evaluation of
both splits) stays on the calling thread. Each thread's time on a CPU is read from Linux's
/proc/self/task/<tid>/schedstat (nanoseconds, exact) before and after the run: torch's OpenMP
workers exist (a 2-thread matmul ran first) but must not run. Real MNIST, so that evaluation has
its full 15,000 rows: on 2 threads its matmuls alone would keep a worker busy for milliseconds.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import torch

from softmaxreg.config import TrainConfig
from softmaxreg.population import train_population
from softmaxreg.trainer import train

TASKS = Path("/proc/self/task")
WORKER_BUDGET_NS = 1_000_000
"""On-CPU time all other threads together may use during the run: 1 ms, far less than one
2-thread evaluation of the splits would give a worker, far more than housekeeping threads use."""

pytestmark = pytest.mark.skipif(not TASKS.is_dir(), reason="needs Linux's /proc/self/task")


def on_cpu_ns() -> dict[int, int]:
    """Nanoseconds each thread of this process has spent on a CPU."""
    times = {}
    for task in TASKS.iterdir():
        try:
            times[int(task.name)] = int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):  # a thread that just ended
            continue
    return times


def others_ns(before: dict[int, int], after: dict[int, int]) -> int:
    """On-CPU nanoseconds of every thread but the calling one between two readings."""
    me = threading.get_native_id()
    return sum(ns - before.get(tid, 0) for tid, ns in after.items() if tid != me)


def start_workers() -> None:
    """Run one 2-thread matmul so torch's OpenMP workers exist, then let their spin-wait end."""
    torch.set_num_threads(2)
    torch.mm(torch.randn(512, 512), torch.randn(512, 512))
    time.sleep(0.2)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPUs for a worker thread")
def test_workers_do_run_when_a_step_uses_two_threads(real_mnist_splits):
    """The measurement can see a worker: the same run at 2 threads makes one work."""
    start_workers()
    before = on_cpu_ns()
    train(TrainConfig(batch_size=1024, epochs=1, device="cpu", threads=2), real_mnist_splits)
    assert others_ns(before, on_cpu_ns()) > WORKER_BUDGET_NS


def test_train_at_auto_threads_runs_on_the_calling_thread_only(real_mnist_splits):
    start_workers()
    before = on_cpu_ns()
    result = train(TrainConfig(batch_size=256, epochs=2, device="cpu"), real_mnist_splits)
    assert result.threads == 1
    assert others_ns(before, on_cpu_ns()) < WORKER_BUDGET_NS


def test_population_at_auto_threads_runs_on_the_calling_thread_only(real_mnist_splits):
    configs = [TrainConfig(batch_size=128, lr=lr, epochs=2, device="cpu") for lr in (0.1, 0.3)]
    start_workers()
    before = on_cpu_ns()
    results = train_population(configs, real_mnist_splits)
    assert {r.threads for r in results} == {1}
    assert others_ns(before, on_cpu_ns()) < WORKER_BUDGET_NS
