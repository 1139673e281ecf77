"""--n-trials as one budget that a command's workers claim from as they go, so they end together.

    budget = TrialBudget(total=40, workers=2)   # in the command, before forking its workers
    granted = budget.claim(8, population=8)     # in a worker, just before it asks Optuna
    budget.release(granted - asked)             # a pass that asked fewer than it was granted
    budget.add_finished(1)                      # every worker's finished trials, for the bar

Why: a fixed share per worker (20 and 20 of 40) let one worker end 10-28 s after the other
under load: the batch sizes take turns study-wide, so one worker could draw most of the slow
small-batch passes, and the command waits for the slowest. Claiming as they go, a worker that
is ahead runs more, and the workers' last passes end near together (under load on a shared
2-core VM, --workers 2, random sampler, medians: 40 trials x 2 epochs 20.9 s with fixed shares,
18.3 s shared; 100 trials x 10 epochs 77.3 s and 70.4 s; README, "Several workers").

A worker claims one trial (or one pass) just before it asks Optuna for it: a stopped worker
(SIGSTOP) holds no more than the pass it is in, and the others run the rest. A claim whose
trials are never asked (the worker signalled or killed in between) is lost to this invocation:
the study's record is what counts, and a resume runs what is missing.

The counters are `multiprocessing.RawValue`s, shared memory the forked workers inherit. Their
lock is an fcntl `lockf` on an unnamed temporary file opened before the fork: the kernel
releases it when its holder dies, SIGKILL included, where a `multiprocessing.Lock` held by a
killed worker would stay locked and hang every other worker at its next claim. A POSIX record
lock belongs to a process, not a thread, so a `threading.Lock` orders one worker's threads.
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import tempfile
import threading
from collections.abc import Iterator

from tqdm import tqdm


class TrialBudget:
    """Trials this invocation may still start, shared by `workers` processes forked after it."""

    def __init__(self, total: int, workers: int = 1) -> None:
        self.total = total
        self.workers = max(1, workers)
        self._remaining = multiprocessing.RawValue("q", total)
        self._passes_left = multiprocessing.RawValue("q", 0)  # of the plan; 0: none made yet
        self._finished = multiprocessing.RawValue("q", 0)
        # Open for the budget's life (and the forked workers'): the lock is taken on it.
        self._file = tempfile.TemporaryFile()  # noqa: SIM115
        self._thread_lock = threading.Lock()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock:
            fcntl.lockf(self._file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.lockf(self._file, fcntl.LOCK_UN)

    @property
    def remaining(self) -> int:
        return self._remaining.value

    def pass_size(self, population: int) -> int:
        """Trials the next pass should take: the passes left are planned as a multiple of the
        workers, as few as passes of `population` allow, and what is left is split evenly over
        them (with 2 workers and population 16, 20 left are passes of 10 and 10, not 16 and 4;
        40 at population 8 are six passes of 7 or 6, three for each worker that keeps pace),
        so no worker ends on a tiny pass or one more than the others. One worker alone:
        min(population, what is left), as without a budget."""
        remaining = self._remaining.value
        if self.workers == 1 or remaining == 0:
            return min(population, remaining)
        passes = self._passes_left.value or self._plan(remaining, population)
        return min(population, -(-remaining // passes))  # ceil: the first take the odd ones

    def _plan(self, remaining: int, population: int) -> int:
        passes = -(-remaining // population)
        return -(-passes // self.workers) * self.workers

    def claim(self, wanted: int, population: int = 1) -> int:
        """Claim up to `wanted` trials for one pass of up to `population`; how many are
        granted (0 once the budget is spent)."""
        if wanted <= 0:
            return 0
        with self._locked():
            granted = min(wanted, self.pass_size(population))
            if granted == 0:
                return 0
            if self._passes_left.value == 0:  # the first pass, or the plan is used up
                self._passes_left.value = self._plan(self._remaining.value, population)
            self._passes_left.value -= 1
            self._remaining.value -= granted
            return granted

    def limit(self, count: int) -> None:
        """No more than `count` left: a grid study with fewer points left than the budget
        (`experiments.worker.trials_to_run`, read by each worker as it starts)."""
        with self._locked():
            if count < self._remaining.value:  # each worker checks as it starts: mostly not
                self._remaining.value = max(count, 0)
                self._passes_left.value = 0  # planned again for what is left

    def release(self, count: int) -> None:
        """Give back trials claimed but not asked (a pass cut short by the queue)."""
        if count > 0:
            with self._locked():
                self._remaining.value += count

    def add_finished(self, count: int) -> int:
        """Count `count` more finished trials; the count of every worker's so far."""
        with self._locked():
            self._finished.value += count
            return self._finished.value

    @property
    def finished(self) -> int:
        return self._finished.value


class SharedProgress(tqdm):
    """A progress bar whose position is the trials finished by every worker of the budget: the
    first worker shows it (total --n-trials), and every worker's `update` counts into it, the
    quiet ones' (disabled bars) included."""

    def __init__(self, budget: TrialBudget, **kwargs) -> None:
        self.budget = budget
        super().__init__(**kwargs)

    def update(self, n: float | None = 1) -> bool | None:
        done = self.budget.add_finished(int(n or 0))
        return super().update(done - self.n)
