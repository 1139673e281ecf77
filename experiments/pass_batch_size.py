"""Which batch size a population pass trains at, and its sampler with that batch size fixed.

    queued = queued_batch_sizes(trials)                  # the queue's trials come first:
    run = leading_run(queued[:count])                    # as many as share the first's size
    size = least_tried_batch_size(trials, batch_sizes)   # else the batch sizes take turns
    sampler = fix_batch_size(size, study.sampler)

A pass trains one batch size, so its K learning rates are searched at that size; the sizes take
turns, so each gets its learning rate searched (batch sizes are compared at their own best).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial, TrialState


def fix_batch_size(batch_size: int, sampler: optuna.samplers.BaseSampler):
    """`sampler` with the pass's batch size fixed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # PartialFixedSampler's
        return optuna.samplers.PartialFixedSampler({"batch_size": batch_size}, sampler)


def least_tried_batch_size(trials: Sequence[FrozenTrial], batch_sizes: Sequence[int]) -> int:
    """The batch size with the fewest of the study's `trials` (running ones and other workers'
    included), the first listed on ties: passes take the batch sizes in turn, so each one gets
    its learning rate searched, which is how batch sizes are compared (at their own best lr).
    Left to the sampler, a whole pass follows one draw and a batch size could get none."""
    counts = dict.fromkeys(batch_sizes, 0)
    for trial in trials:
        size = trial.params.get("batch_size")
        if size in counts:
            counts[size] += 1
    return min(batch_sizes, key=lambda size: counts[size])


def queued_batch_sizes(trials: Sequence[FrozenTrial]) -> list[int | None]:
    """The fixed batch size of every WAITING trial of the study's `trials` (in trial order, the
    order `study.ask` pops them; None where a queued trial leaves it to the sampler)."""
    return [
        trial.system_attrs.get("fixed_params", {}).get("batch_size")
        for trial in trials
        if trial.state == TrialState.WAITING
    ]


def leading_run(values: Sequence[object]) -> int:
    """How many values at the start of `values` equal the first (0 when empty)."""
    run = 0
    while run < len(values) and values[run] == values[0]:
        run += 1
    return run
