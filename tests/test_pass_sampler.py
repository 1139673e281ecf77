"""A pass's sampled points become trials holding their params from the first write
(`experiments.pass_sampler.ask_point`), on a real SQLite study with the sweep's storage: the
same record `study.ask` and suggesting each param would leave, in one write instead of three.
"""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import event

from experiments.config import SweepConfig
from experiments.pass_sampler import Presampled, ask_point, sample_points
from experiments.study import open_storage

BATCH_SIZES = [16, 64, 256, 1024]


def suggest(trial: optuna.Trial) -> tuple[int, float]:
    """What `Objective.config_for` suggests, in its order."""
    return (
        trial.suggest_categorical("batch_size", BATCH_SIZES),
        trial.suggest_float("lr", 0.003, 1.0, log=True),
    )


@pytest.fixture
def storage(tmp_path) -> optuna.storages.RDBStorage:
    return open_storage(f"sqlite:///{tmp_path / 'optuna.db'}", SweepConfig())


@pytest.fixture
def study(storage) -> optuna.Study:
    return optuna.create_study(
        storage=storage, study_name="pass", direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=3),
    )  # fmt: skip


class Writes:
    """The SQL statements that write, sent on `engine` while counting."""

    def __init__(self, engine) -> None:
        self.statements: list[str] = []
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn, _cursor, statement: str, *_args) -> None:
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            self.statements.append(statement)


def test_a_point_asked_holds_its_params_and_suggesting_them_writes_nothing(study, storage):
    points = sample_points(study, study.sampler, [], 3, suggest)
    study.sampler = Presampled([p.params for p in points], fallback=study.sampler)
    writes = Writes(storage.engine)
    trials = [ask_point(study, point) for point in points]
    created = len(writes.statements)
    chosen = [suggest(trial) for trial in trials]
    assert len(writes.statements) == created  # the params were there: no write
    assert chosen == [(p.params["batch_size"], p.params["lr"]) for p in points]
    assert len(set(chosen)) == 3  # the sampler drew three points, not one thrice
    stored = study.get_trials(deepcopy=False)
    assert [t.state for t in stored] == [TrialState.RUNNING] * 3
    assert all(t.datetime_start is not None for t in stored)


def test_a_point_asked_is_the_trial_ask_and_suggest_would_store(study):
    (point,) = sample_points(study, study.sampler, [], 1, suggest)
    study.sampler = Presampled([point.params, point.params], fallback=study.sampler)
    from_point = ask_point(study, point)
    suggest(from_point)
    asked = study.ask()
    suggest(asked)
    one, other = study.get_trials(deepcopy=False)
    assert one.params == other.params == point.params
    assert one.distributions == other.distributions
    assert (one.number, other.number) == (0, 1)
    study.tell(from_point, 0.9)  # told as any trial
    assert study.trials[0].state == TrialState.COMPLETE and study.best_value == 0.9
