"""--workers N: the study's end (refit, plots, model, parent run) done by the command, not a worker.

    handoff = FinishHandoff()            # in the command, before forking its workers
    ...fork...; start_preloading()       # the end's modules, imported while the workers train
    handoff.hand_over()                  # in the worker that `WorkerRegistry.end` found last
    if handoff.handed_over: ...          # the command, once its workers have exited

Why: the study's end runs on one core after every worker has stopped, and a forked worker
meets it cold: matplotlib, Optuna's importance module (which imports scikit-learn and SciPy)
and `mlflow.pytorch` took 1.5 s of imports on a quiet machine and 4-5 s while other work ran,
with the other cores idle. The command itself only waits while its workers train, so it
imports those modules then, on a thread of its own, and does the end once they have exited;
it also builds the study's report once, where the last worker and the command each read every
MLflow run of the study.

Which worker is last is still decided by the storage (`WorkerRegistry.end`, under the study's
lock), so a worker of another machine that ends after this command's workers finishes the
study itself, as before. The flag is one byte of memory shared with the forked workers
(`multiprocessing.RawValue`, inherited across `fork`): written by at most one of them, read by
the command after they have all exited. A command killed before it finishes leaves the parent
run to the next run or `python -m experiments.reconcile`, as a killed last worker would.
"""

from __future__ import annotations

import importlib
import multiprocessing
import threading

FINISH_MODULES = (
    "experiments.plots",  # matplotlib and Optuna's matplotlib plots
    "optuna.importance",  # scikit-learn and SciPy, for the importances plot
    "mlflow.pytorch",  # the registered model
    "mlflow.pyfunc",
    "mlflow.utils.environment",
)
"""What the study's end imports and a sweep's trials do not (`experiments.report`,
`experiments.plots`, `experiments.model_registry` import them where they are used)."""


class FinishHandoff:
    """Whether the study's last worker left the end of the study to this command."""

    def __init__(self) -> None:
        self._flag = multiprocessing.RawValue("b", 0)

    def hand_over(self) -> None:
        self._flag.value = 1

    @property
    def handed_over(self) -> bool:
        return bool(self._flag.value)


def _import_finish_modules() -> None:
    for name in FINISH_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # the end imports it again and says what is wrong then
            return


def start_preloading() -> threading.Thread:
    """Import `FINISH_MODULES` on a daemon thread; call only once every worker is forked (a
    thread running during `fork` could leave a lock held in the child)."""
    thread = threading.Thread(target=_import_finish_modules, name="preload-finish", daemon=True)
    thread.start()
    return thread
