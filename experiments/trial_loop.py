"""This worker's trials, one at a time (`study.optimize`) or K at a time (`PopulationTrials`),
each claimed from the invocation's `TrialBudget` just before it is asked, taken up again after
an outage of Optuna's storage.

    run_trials_through_outages(study, objective, tracker, budget, watch)

An outage met anywhere in the loop (a trial's epoch, asking for a trial, telling it, mirroring
it) leaves the loop with an error; `StorageWatch.recover` waits for the storage (bounded by
--storage-wait-seconds, one line), and once it answers, the trials this worker held are failed
with the reason and mirrored, and the worker goes on claiming what is left of the budget.
Outlasting the wait raises `StorageUnavailable`; a full disk, `DiskFull`.
"""

from __future__ import annotations

import time

import optuna

from experiments.interrupts import GATE
from experiments.objective import Objective
from experiments.population_trials import PopulationTrials
from experiments.store_faults import StorageWatch
from experiments.trial_budget import TrialBudget
from experiments.trial_tracker import TrialTracker, quiet_failures
from softmaxreg.trainer import TrainingDiverged


def run_trials(
    study: optuna.Study,
    objective: Objective,
    tracker: TrialTracker,
    budget: TrialBudget | int,
    timeout: float | None,
) -> None:
    """This worker's trials while `budget` (a count: a budget of its own) grants them: one at a
    time through `study.optimize`, or K at a time; none started after `timeout` seconds."""
    if not isinstance(budget, TrialBudget):
        budget = TrialBudget(budget)
    sweep = objective.sweep
    if sweep.population > 1:
        trials = PopulationTrials(study, objective, tracker, sweep.population)
        trials.run(budget, timeout=timeout)
        return
    deadline = None if timeout is None else time.monotonic() + timeout
    with quiet_failures():
        # One claim per trial, each just before it starts: a stopped worker holds none back.
        while (deadline is None or time.monotonic() < deadline) and claim_one(budget):
            study.optimize(objective, n_trials=1, catch=(TrainingDiverged,), callbacks=[tracker])


def claim_one(budget: TrialBudget) -> bool:
    GATE.raise_pending()  # a signal after the last trial's mirror: nothing more is claimed
    return budget.claim(1) == 1


def run_trials_through_outages(
    study: optuna.Study,
    objective: Objective,
    tracker: TrialTracker,
    budget: TrialBudget,
    watch: StorageWatch,
) -> None:
    """`run_trials`, taken up again after each outage of Optuna's storage that ends within
    --storage-wait-seconds: the trials this worker held are failed with the reason once the
    storage answers, and it goes on claiming what is left of `budget`. Outlasting the wait raises
    `StorageUnavailable`, a full disk `DiskFull`."""
    timeout = objective.sweep.timeout or None
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = None if deadline is None else deadline - time.monotonic()
        if budget.remaining <= 0 or (left is not None and left <= 0):
            return
        try:
            run_trials(study, objective, tracker, budget, left)
            return
        except Exception as error:
            reason = watch.recover(error)  # raises unless the storage answers again
        watch.call(tracker.fail_held, f"Optuna's storage was unreachable ({reason})")
