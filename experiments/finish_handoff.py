"""--workers N: the study's end (refit, plots, model, parent run) done by the command, not a worker.

    handoff = FinishHandoff()            # in the command, before forking its workers
    handoff.hand_over()                  # in the worker that `WorkerRegistry.end` found last
    if handoff.handed_over: ...          # the command, once its workers have exited

Why: the command builds the study's report anyway, from every MLflow run of the study; when the
last worker also closed the parent run, it read those runs too (0.4 s at 100 trials, 16 s at
2,000), only for a report nobody read: a forked worker's report is the one line its command
collects. Handing the end over, the study is read once, by the command.

Not done: importing the end's modules (matplotlib, Optuna's importances with scikit-learn and
SciPy, `mlflow.pytorch`: 1.5 s quiet, 4-5 s under load) on a thread of the command while its
workers train. Tried: such a thread holds the GIL through long imports, and the command's
SIGTERM handler, which passes the signal on to the workers, waits for it; with a core busy
elsewhere, workers completed trials after the signal (tests/test_worker_signals.py went red).

Which worker is last is still decided by the storage (`WorkerRegistry.end`, under the study's
lock), so a worker of another machine that ends after this command's workers finishes the
study itself, as before. The flag is one byte of memory shared with the forked workers
(`multiprocessing.RawValue`, inherited across `fork`): written by at most one of them, read by
the command after they have all exited. A command killed before it finishes leaves the parent
run to the next run or `python -m experiments.reconcile`, as a killed last worker would.
"""

from __future__ import annotations

import multiprocessing


class FinishHandoff:
    """Whether the study's last worker left the end of the study to this command."""

    def __init__(self) -> None:
        self._flag = multiprocessing.RawValue("b", 0)

    def hand_over(self) -> None:
        self._flag.value = 1

    @property
    def handed_over(self) -> bool:
        return bool(self._flag.value)
