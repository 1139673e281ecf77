"""The best trial's refit trained by a forked child while this process does the study's end.

    refit = RefitApart.start(study, data, train_config, optuna_url, log)  # forks; it trains
    ...                                                                  # meanwhile, here
    record = refit.result()  # stored on the study; refit here if a later trial became best

For --workers N (`experiments.study_end.EarlyEnd`): once a first worker has ended,
its core is free while the last one trains, and then the command reconciles and reads the
study while the plots are drawn. A refit on a thread of the command was slower there than
alone (1.4-1.9 s against 0.8 s: each of its thousands of small torch calls waits for the GIL
that the reconcile's Python holds), so it trains in a child of its own instead, forked from
the command, which holds the data and has never used more than one torch thread (a forked
OpenMP pool hangs the child).

The child touches no store: it trains, sends the record (figures and weights) back through a
pipe and exits; the command stores it (`experiments.refit.store_refit`). Its garbage collector
is off, so that nothing of the command's database connections is finalised in the copy (a
PostgreSQL connection closed there would end the command's session). A child that fails or is
killed costs only time: `result()` then refits here.
"""

from __future__ import annotations

import gc
import os
import pickle
import signal
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial

from experiments.common import say
from experiments.forking import fork_child
from experiments.model_registry import best_trial_with_weights, refit_record
from experiments.refit import ensure_refit, refit_trial, store_refit
from softmaxreg.config import TrainConfig
from softmaxreg.data import DataSplits


@dataclass
class RefitApart:
    """A refit being trained by the child `pid`, or none (`pid` None: nothing to refit, or the
    best trial's refit was stored already)."""

    study: optuna.Study
    data: DataSplits
    base: TrainConfig
    optuna_url: str
    log: Callable[[str], None]
    pid: int | None = None
    record_fd: int | None = None

    @classmethod
    def start(
        cls,
        study: optuna.Study,
        data: DataSplits,
        base: TrainConfig,
        optuna_url: str,
        log: Callable[[str], None] = say,
    ) -> RefitApart:
        """Fork a child refitting the study's best trial so far, unless it has a refit."""
        refit = cls(study, data, base, optuna_url, log)
        trial = best_trial_with_weights(study)
        if trial is None or refit_record(study, trial) is not None:
            return refit
        read_fd, write_fd = os.pipe()
        refit.pid = fork_child(read_fd, _child_main, trial, data, base, write_fd)
        os.close(write_fd)
        refit.record_fd = read_fd
        return refit

    def result(self) -> dict[str, object] | None:
        """The best trial's refit record, stored: the child's, or one trained here if the child
        failed or a later trial became best (None: no trial to refit)."""
        record = self._take()
        stored = None if record is None else store_refit(self.study, record, self.optuna_url)
        if stored is not None:
            return stored
        return ensure_refit(self.study, self.data, self.base, self.optuna_url, self.log)

    def cancel(self) -> None:
        """Stop a child still training (the study's end was not ours, or failed)."""
        if self.pid is not None:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.pid = None
        if self.record_fd is not None:
            os.close(self.record_fd)
            self.record_fd = None

    def _take(self) -> dict[str, object] | None:
        """The child's record once it has exited (None if it failed), at most once."""
        if self.pid is None:
            return None
        with os.fdopen(self.record_fd, "rb") as pipe:  # to EOF: the child has written or died
            self.record_fd = None
            payload = pipe.read()
        _, status = os.waitpid(self.pid, 0)
        self.pid = None
        if os.waitstatus_to_exitcode(status) != 0 or not payload:
            return None
        return pickle.loads(payload)


def _child_main(trial: FrozenTrial, data: DataSplits, base: TrainConfig, record_fd: int) -> int:
    """In the forked child: train the refit, send its record, exit."""
    gc.disable()  # see the module docstring: the command's connections stay untouched
    record = refit_trial(trial, data, base, say)
    with os.fdopen(record_fd, "wb") as pipe:
        pickle.dump(record, pipe, protocol=pickle.HIGHEST_PROTOCOL)
    return 0
