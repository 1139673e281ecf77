"""This worker's trials, one at a time (`study.optimize`) or K at a time (`PopulationTrials`),
taken up again after an outage of Optuna's storage.

    run_trials_through_outages(study, objective, tracker, n_trials, watch)

An outage met anywhere in the loop (a trial's epoch, asking for a trial, telling it, mirroring
it) leaves the loop with an error; `StorageWatch.recover` waits for the storage (bounded by
--storage-wait-seconds, one line), and once it answers, the trials this worker held are failed
with the reason and mirrored, and the rest of this worker's share runs. Outlasting the wait
raises `StorageUnavailable`; a full disk, `DiskFull`.
"""

from __future__ import annotations

import time

import optuna

from experiments.objective import Objective
from experiments.population_trials import PopulationTrials
from experiments.store_faults import StorageWatch
from experiments.trial_tracker import TrialTracker, quiet_failures
from softmaxreg.trainer import TrainingDiverged


def run_trials(
    study: optuna.Study,
    objective: Objective,
    tracker: TrialTracker,
    n_trials: int,
    timeout: float | None,
) -> None:
    """This worker's trials: one at a time through `study.optimize`, or K at a time."""
    sweep = objective.sweep
    if sweep.population > 1:
        trials = PopulationTrials(study, objective, tracker, sweep.population)
        trials.run(n_trials, timeout=timeout)
        return
    with quiet_failures():
        study.optimize(
            objective, n_trials=n_trials, timeout=timeout, catch=(TrainingDiverged,),
            callbacks=[tracker],
        )  # fmt: skip


def run_trials_through_outages(
    study: optuna.Study,
    objective: Objective,
    tracker: TrialTracker,
    n_trials: int,
    watch: StorageWatch,
) -> None:
    """`run_trials`, taken up again after each outage of Optuna's storage that ends within
    --storage-wait-seconds: the trials this worker held are failed with the reason once the
    storage answers, and the rest of its share runs. Outlasting the wait raises
    `StorageUnavailable`, a full disk `DiskFull`."""
    timeout = objective.sweep.timeout or None
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        remaining = n_trials - len(tracker.started)
        left = None if deadline is None else deadline - time.monotonic()
        if remaining <= 0 or (left is not None and left <= 0):
            return
        try:
            run_trials(study, objective, tracker, remaining, left)
            return
        except Exception as error:
            reason = watch.recover(error)  # raises unless the storage answers again
        watch.call(tracker.fail_held, f"Optuna's storage was unreachable ({reason})")
