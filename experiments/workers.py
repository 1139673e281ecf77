"""Worker processes, their liveness and their signals; no scheduler of our own.

    python -m experiments.sweep --workers 4        # this machine: 4 workers on one study

A worker runs the sweep command's own code as `--workers 1`: once the command has imported
everything and loaded the data, `run_workers` forks N workers from it, each with a distinct
worker id (distinct sampler seeds) and `max(1, cores // N)` torch threads (or --threads),
then waits. Forked, a worker costs neither the imports nor the data load again (seconds, and
hundreds of MB each): it shares the parent's pages, the data's memory-mapped cache included.
Optuna's storage hands out the trials; the command's workers only share how many are left of
`--n-trials`, claiming a trial or a pass at a time as they go (`experiments.trial_budget`), so
one that draws slow passes runs fewer and they end together. Several machines run the same
command against a shared PostgreSQL storage and MLflow server, each with its own `--worker-id`
range (and its own --n-trials).

Liveness of whole workers is `experiments.worker_registry`'s; liveness of trials is Optuna's own
heartbeat.

Signals: a worker handles them through `experiments.interrupts` (Ctrl-C, SIGTERM and SIGHUP
store the running trial as FAIL with its reason, close its run, print one line and exit 130,
143, 129). The coordinator passes SIGTERM and SIGHUP on to its workers (Ctrl-C reaches them
directly, as they share its terminal). A worker whose command died (even by kill -9) gets
SIGTERM from the kernel (Linux `PR_SET_PDEATHSIG`) and stops the same way; a report it can no
longer write to the closed pipe is dropped without a traceback.
"""

from __future__ import annotations

import contextlib
import gc
import os
import select
import signal
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from experiments.config import SweepConfig
from experiments.forking import flush_quietly, stop_with_parent, usable_cores
from experiments.interrupts import SIGNAL_EXIT, install_signal_handlers
from experiments.process_exit import dispose_engines


def resolve_workers(sweep: SweepConfig, device: torch.device) -> int:
    """--workers as given, or for 0 (auto) one per usable core on the CPU, never more than the
    trials to run; 1 on CUDA and MPS, where the workers would share one device."""
    if sweep.workers > 0:
        return sweep.workers
    if device.type != "cpu":
        return 1
    return max(1, min(usable_cores(), sweep.n_trials))


def threads_per_worker(workers: int) -> int:
    return max(1, usable_cores() // workers)


def forked_count(sweep: SweepConfig) -> int:
    """Workers `run_workers` forks: --workers, never more than the trials to share."""
    return min(sweep.workers, sweep.n_trials)


RunWorker = Callable[[SweepConfig, int], int]
"""What a forked worker runs: (its SweepConfig, its torch threads) -> exit status."""
WorkerExit = Callable[[int, int], None]
"""Told as each forked worker exits: (its exit status, how many are still running)."""


@dataclass
class WorkerProcess:
    """A forked worker: its index on this machine, pid, and the pipe its stdout goes to."""

    index: int
    pid: int
    output: int
    chunks: list[bytes] = field(default_factory=list)
    code: int | None = None

    def read_some(self) -> bool:
        """Read what the worker wrote to its stdout; False (and the pipe closed) at its end."""
        chunk = os.read(self.output, 1 << 16)
        if chunk:
            self.chunks.append(chunk)
            return True
        os.close(self.output)
        return False

    def wait(self) -> int:
        """Exit status as a shell shows it: a worker killed by signal N reports 128 + N."""
        if self.code is None:
            _, status = os.waitpid(self.pid, 0)
            code = os.waitstatus_to_exitcode(status)
            self.code = 128 - code if code < 0 else code
        return self.code

    def summary(self) -> str:
        lines = b"".join(self.chunks).decode(errors="replace").splitlines()
        own = [line for line in lines if line.startswith("this run:")]
        return own[0] if own else "no report"


def fork_worker(
    sweep: SweepConfig, index: int, threads: int, run_worker: RunWorker
) -> WorkerProcess:
    """Fork worker `index` from this loaded process: it shares the imports and the data's
    pages, and starts at once. The caller must have no other thread running and must not have
    used torch's thread pool (a forked OpenMP pool hangs the child)."""
    read_end, write_end = os.pipe()
    parent = os.getpid()
    sys.stdout.flush()  # or the child would print the parent's buffered output again
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        os._exit(worker_main(sweep, index, threads, run_worker, write_end, parent))
    os.close(write_end)
    return WorkerProcess(index, pid, read_end)


def worker_main(
    sweep: SweepConfig, index: int, threads: int, run_worker: RunWorker, stdout: int, parent: int
) -> int:
    """In the forked child: this worker's own id, seed and threads (its trials it claims from
    its command's budget, bound into `run_worker`)."""
    code = 1
    try:
        install_signal_handlers()  # first: the parent's death signal is then a clean stop
        stop_with_parent()
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)
        os.dup2(stdout, 1)
        os.close(stdout)
        torch.set_num_threads(threads)
        mine = replace(
            sweep,
            workers=1,
            worker_id=sweep.worker_id + index,
            # The first worker shows its progress bar and trial lines (unless --quiet), as one
            # worker would: the terminal has one bar, and a long run is not silent till its end.
            quiet=sweep.quiet or index > 0,
        )
        code = run_worker(mine, threads)
    except SystemExit as stop:  # argparse's error() and the like
        code = stop.code if isinstance(stop.code, int) else 1
    except BrokenPipeError:
        pass  # the command that reads our report is gone: nothing to tell, no traceback
    except BaseException:
        traceback.print_exc()
    flush_quietly()
    return code


class _Forwarder:
    """Passes SIGTERM and SIGHUP on to the workers and remembers the first signal."""

    def __init__(self, workers: list[WorkerProcess]) -> None:
        self.workers = workers
        self.received: signal.Signals | None = None

    def __call__(self, signum: int, _frame) -> None:
        self.received = self.received or signal.Signals(signum)
        for worker in self.workers:
            with contextlib.suppress(ProcessLookupError):  # exited meanwhile
                os.kill(worker.pid, signum)


def run_workers(
    sweep: SweepConfig, threads: int, run_worker: RunWorker, on_exit: WorkerExit | None = None
) -> tuple[int, list[str]]:
    """Fork the workers, wait for all of them; return (exit status, each worker's summary).
    `on_exit(code, still_running)` is called as each worker exits."""
    # No connection of the checks before the fork may reach a child: every engine's pool is
    # closed here, and the heap is frozen so that no child's collector finalizes (or even
    # touches, copying its pages) an object it inherited, and no full collection in a child
    # walks it again (0.2-0.3 s each over this heap); nor in the sweep command, which froze
    # its start-up first. A full gc.collect() did the first by finalizing stray engines: 0.2 s
    # before every worker's start.
    dispose_engines()
    frozen_by_caller = gc.get_freeze_count() > 0  # the sweep command froze its start-up already
    gc.freeze()
    indices = range(forked_count(sweep))
    workers: list[WorkerProcess] = []
    forwarder = _Forwarder(workers)
    previous = {s: signal.signal(s, forwarder) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        for index in indices:
            workers.append(fork_worker(sweep, index, threads, run_worker))
        if not frozen_by_caller:
            gc.unfreeze()  # a caller's heap (a test's) is collected as before, once forked
        read_until_exit(workers, forwarder, on_exit)
        codes = [worker.wait() for worker in workers]
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    summaries = [
        f"worker {sweep.worker_id + w.index} (exit {code}): {w.summary()}"
        for w, code in zip(workers, codes, strict=True)
    ]
    if forwarder.received is not None:
        return SIGNAL_EXIT[forwarder.received], summaries
    return max((c for c in codes if c), default=0), summaries


def read_until_exit(
    workers: list[WorkerProcess], forwarder: _Forwarder, on_exit: WorkerExit | None
) -> None:
    """Read every worker's stdout, as each writes, until each has exited (its pipe's end)."""
    running = {worker.output: worker for worker in workers}
    while running:
        try:
            ready, _, _ = select.select(list(running), [], [])
            for fd in ready:
                if not running[fd].read_some():
                    worker = running.pop(fd)
                    if on_exit is not None:
                        on_exit(worker.wait(), len(running))
        except KeyboardInterrupt:  # Ctrl-C reached the workers too: wait for them
            forwarder.received = forwarder.received or signal.SIGINT
