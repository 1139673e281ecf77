"""A population pass's K points sampled from one read of the study, then asked as they are.

    points = sample_points(study, sampler, trials, count, suggest)   # K `Point`s
    study.sampler = Presampled([p.params for p in points], fallback=sampler)
    trials = [ask_point(study, point) for point in points]           # each one write

Asked one by one on the study's storage, each of a pass's K trials costs the sampler three
reads of the study (TPE with `constant_liar` reads the running trials again for every ask,
uncached, and `ask` itself syncs), about 25 ms a trial here. The pass already reads the study
once (`PopulationTrials.ask`); from that snapshot an in-memory copy is built (public API:
`InMemoryStorage`, `create_trial`, `add_trials`) and the study's own sampler (the same object,
with its seed and state) asks the K points there. Each ask there sees the earlier ones as
running trials, so `constant_liar` spreads them as it does on the storage. Then the real trials
are asked with `Presampled`, a sampler that hands out those points and reads nothing.

Only params, distributions, values and intermediate values are copied: what samplers read.
Trials another worker starts between the read and the pass's asks are not seen, as they would
not be by asks a moment earlier.

A point known in advance is then created as a RUNNING trial that holds its params from the
first write (`ask_point`: the storage's public `create_new_trial` with a template, as
`Study.add_trial` uses): `study.ask` read the queue, created the trial, and each suggested
param was a write of its own (8.6 ms a trial on SQLite here, 4.0 ms from a template). Trials in
the queue are still popped by `study.ask`, which takes each from the queue atomically.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.storages import InMemoryStorage
from optuna.trial import FrozenTrial, TrialState

SHADOW_NAME = "pass-snapshot"


def light_copy(trial: FrozenTrial) -> FrozenTrial:
    """What a sampler reads of `trial` (no attributes: weights and epoch tables stay behind)."""
    valued = trial.state in (TrialState.COMPLETE, TrialState.PRUNED) and trial.values
    return optuna.trial.create_trial(
        state=trial.state,
        params=trial.params,
        distributions=trial.distributions,
        values=trial.values if valued else None,
        intermediate_values=trial.intermediate_values,
    )


@dataclass(frozen=True)
class Point:
    """One trial's params as a sampler chose them, and the distributions they were drawn from."""

    params: dict[str, Any]
    distributions: dict[str, BaseDistribution]


def sample_points(
    study: optuna.Study,
    sampler: BaseSampler,
    trials: Sequence[FrozenTrial],
    count: int,
    suggest: Callable[[optuna.Trial], object],
) -> list[Point]:
    """`count` points, each what `suggest(trial)` chose on a trial asked of `sampler` over
    a copy of `trials` (the study's, read once) plus the points sampled before it."""
    if count == 0:
        return []
    storage = InMemoryStorage()
    storage.create_new_study(study.directions, SHADOW_NAME)
    shadow = optuna.load_study(study_name=SHADOW_NAME, storage=storage, sampler=sampler)
    shadow.add_trials([light_copy(t) for t in trials if t.state != TrialState.WAITING])
    points = []
    for _ in range(count):
        trial = shadow.ask()
        suggest(trial)
        points.append(Point(dict(trial.params), dict(trial.distributions)))
    return points


def ask_point(study: optuna.Study, point: Point) -> optuna.Trial:
    """A new RUNNING trial of `study` holding `point`'s params from its creation; suggesting
    them again returns them without a write. The study's sampler still sees the trial begin
    (`Presampled.before_trial`), as it would in `study.ask`."""
    template = FrozenTrial(
        number=-1,  # the storage numbers it
        trial_id=-1,
        state=TrialState.RUNNING,
        value=None,
        datetime_start=datetime.datetime.now(),
        datetime_complete=None,
        params=point.params,
        distributions=point.distributions,
        user_attrs={},
        system_attrs={},
        intermediate_values={},
    )
    trial_id = study._storage.create_new_trial(study._study_id, template_trial=template)
    return optuna.Trial(study, trial_id)


class Presampled(BaseSampler):
    """Hands out `points` in order, one per trial asked; reads nothing. A parameter a point
    lacks is left to `fallback` (on the real study)."""

    def __init__(self, points: Sequence[dict[str, Any]], fallback: BaseSampler) -> None:
        self.points = list(points)
        self.fallback = fallback
        self.current: dict[str, Any] = {}

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.current = self.points.pop(0) if self.points else {}

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        if param_name in self.current:
            return self.current[param_name]
        return self.fallback.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self.fallback.after_trial(study, trial, state, values)
