"""Which threads work during a run: `python tests/thread_probe.py DATA_ROOT` prints JSON.

Run by tests/test_threads.py in a fresh process, so that threads other tests left behind in the
pytest process (servers, loggers, pools) cannot be mistaken for torch's. Each thread's time on a
CPU comes from Linux's /proc/self/task/<tid>/schedstat (nanoseconds, exact). Before each run a
2-thread matmul makes torch's OpenMP workers exist, and a pause lets their spin-wait end, so a
worker's on-CPU time during the run is work the run gave it.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import torch

from softmaxreg.config import TrainConfig
from softmaxreg.data import load_splits
from softmaxreg.population import train_population
from softmaxreg.trainer import train

TASKS = Path("/proc/self/task")


def on_cpu_ns() -> dict[int, int]:
    """Nanoseconds each thread of this process has spent on a CPU."""
    times = {}
    for task in TASKS.iterdir():
        try:
            times[int(task.name)] = int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):  # a thread that just ended
            continue
    return times


def start_workers() -> None:
    """One 2-thread matmul so torch's OpenMP workers exist, then time for their spin to end."""
    torch.set_num_threads(2)
    torch.mm(torch.randn(512, 512), torch.randn(512, 512))
    time.sleep(0.2)


def other_threads_ns(run, *args) -> tuple[int, list[int]]:
    """(on-CPU ns of every thread but this one during `run(*args)`, the threads the run used)."""
    start_workers()
    me = threading.get_native_id()
    before = on_cpu_ns()
    results = run(*args)
    after = on_cpu_ns()
    used = [r.threads for r in (results if isinstance(results, list) else [results])]
    return sum(ns - before.get(tid, 0) for tid, ns in after.items() if tid != me), used


def main(root: str) -> dict[str, tuple[int, list[int]]]:
    data = load_splits("mnist", root, sources=("local",))
    population = [TrainConfig(batch_size=128, lr=lr, epochs=2, device="cpu") for lr in (0.1, 0.3)]
    return {
        "train_auto": other_threads_ns(
            train, TrainConfig(batch_size=256, epochs=2, device="cpu"), data
        ),
        "population_auto": other_threads_ns(train_population, population, data),
        "train_2_threads": other_threads_ns(
            train, TrainConfig(batch_size=1024, epochs=1, device="cpu", threads=2), data
        ),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
