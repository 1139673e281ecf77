"""Worker processes, their liveness and their signals; no scheduler of our own.

    python -m experiments.sweep --workers 4        # this machine: 4 workers on one study

A worker is the sweep command itself with `--workers 1`: `run_workers` starts N of them with
the same flags, a distinct `--worker-id` each (distinct sampler seeds), a share of `--n-trials`
and `--threads max(1, cores // N)`, then waits. Optuna's storage hands out the trials; nothing
else coordinates them. Several machines run the same command against a shared PostgreSQL
storage and MLflow server, each with its own `--worker-id` range.

Liveness of whole workers (`WorkerRegistry`) lives in the study's system attributes: each worker
beats there while it runs and marks itself ended when it stops. The last worker to end (no
other live entry) finishes the study's parent run; a worker that vanished (kill -9) stops
beating and counts as dead after the grace period. Liveness of trials is Optuna's own heartbeat.

Signals: a worker handles them through `experiments.interrupts` (Ctrl-C, SIGTERM and SIGHUP
store the running trial as FAIL with its reason, close its run, print one line and exit 130,
143, 129). The coordinator passes SIGTERM and SIGHUP on to its workers (Ctrl-C reaches them
directly, as they share its terminal).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence

import optuna

from experiments.config import GRACE_HEARTBEATS, SweepConfig
from experiments.interrupts import SIGNAL_EXIT

REGISTRY_PREFIX = "softmaxreg.worker."


class WorkerRegistry:
    """This worker's entry among the study's system attributes, refreshed while it runs."""

    def __init__(self, study: optuna.Study, worker_id: int, sweep: SweepConfig) -> None:
        self.study = study
        self.worker_id = worker_id
        self.interval = sweep.heartbeat_seconds
        self.key = REGISTRY_PREFIX + uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat_until_stopped, daemon=True)

    def _write(self, ended: bool) -> None:
        entry = {
            "worker_id": self.worker_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "beat": time.time(),
            "interval": self.interval,
            "ended": ended,
        }
        self.study._storage.set_study_system_attr(self.study._study_id, self.key, entry)

    def _beat_until_stopped(self) -> None:
        while not self._stop.wait(self.interval):
            self._write(ended=False)

    def start(self) -> None:
        self._write(ended=False)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval + 5)
        self._write(ended=True)

    def others_alive(self) -> list[dict]:
        """Other workers of the study that have beaten within the grace period and not ended."""
        return live_workers(self.study, exclude=self.key)


def live_workers(study: optuna.Study, exclude: str = "") -> list[dict]:
    """Registry entries of workers that have not ended and beat within 3 of their own
    heartbeat intervals (workers of one study may run with different --heartbeat-seconds)."""
    attrs = study._storage.get_study_system_attrs(study._study_id)
    now = time.time()
    return [
        entry
        for key, entry in attrs.items()
        if key.startswith(REGISTRY_PREFIX)
        and key != exclude
        and not entry.get("ended")
        and now - float(entry.get("beat", 0)) < GRACE_HEARTBEATS * float(entry.get("interval", 10))
    ]


def worker_command(argv: Sequence[str], sweep: SweepConfig, index: int, threads: int) -> list:
    """The same command, as worker `index` of this machine (later flags win in argparse)."""
    return [
        sys.executable,
        "-m",
        "experiments.sweep",
        *argv,
        "--workers",
        "1",
        "--worker-id",
        str(sweep.worker_id + index),
        "--n-trials",
        str(sweep.trials_for_worker(index)),
        "--threads",
        str(threads),
        "--quiet",
    ]


def threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


class _Forwarder:
    """Passes SIGTERM and SIGHUP on to the worker processes and remembers the first one."""

    def __init__(self, processes: list[subprocess.Popen]) -> None:
        self.processes = processes
        self.received: signal.Signals | None = None

    def __call__(self, signum: int, _frame) -> None:
        self.received = self.received or signal.Signals(signum)
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signum)


def run_workers(argv: Sequence[str], sweep: SweepConfig, threads: int) -> tuple[int, list[str]]:
    """Start the workers, wait for all of them; return (exit status, each worker's summary)."""
    indices = [i for i in range(sweep.workers) if sweep.trials_for_worker(i) > 0]
    processes = [
        subprocess.Popen(
            worker_command(argv, sweep, index, threads), stdout=subprocess.PIPE, text=True
        )
        for index in indices
    ]
    forwarder = _Forwarder(processes)
    previous = {s: signal.signal(s, forwarder) for s in (signal.SIGTERM, signal.SIGHUP)}
    summaries = []
    try:
        while True:
            try:
                outputs = [process.communicate()[0] for process in processes]
                break
            except KeyboardInterrupt:  # Ctrl-C reached the workers too: wait for them to stop
                forwarder.received = forwarder.received or signal.SIGINT
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    # A worker killed by a signal reports -N; a shell would say 128 + N (kill -9: 137).
    codes = [128 - p.returncode if p.returncode < 0 else p.returncode for p in processes]
    for index, code, output in zip(indices, codes, outputs, strict=True):
        own = [line for line in (output or "").splitlines() if line.startswith("this run:")]
        summary = own[0] if own else "no report"
        summaries.append(f"worker {sweep.worker_id + index} (exit {code}): {summary}")
    if forwarder.received is not None:
        return SIGNAL_EXIT[forwarder.received], summaries
    return max((c for c in codes if c), default=0), summaries
