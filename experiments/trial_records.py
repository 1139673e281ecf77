"""Several trials' user attributes in one storage transaction: a population's pass-epoch.

    write_user_attrs(study, [(trial, {"epochs": table}), (other_trial, {"epochs": other})])

The population stores what its K members measured at the same moments (their settings when the
pass starts, every member's epoch table after each epoch, every member's summary before any is
told). Optuna's public API writes one attribute per call, each its own transaction and ORM
round trip: about 2 ms here each, 16-20 per trial. So this is the one place that uses Optuna's
private storage internals: on Optuna 5's RDB storage (wrapped in `_CachedStorage`, as
`optuna.load_study` does) over SQLite or PostgreSQL, the batch is one transaction: one read of
the trials' states, which refuses a finished trial as Optuna's `set_trial_user_attr` does
(`UpdateFinishedTrialError`, e.g. a member failed as stale by another worker), then one
multi-row upsert into Optuna's `trial_user_attributes` table, the same statement (Optuna's own
table model, `json.dumps` of the value, conflict on trial and key) that Optuna's
`RDBStorage._set_trial_attr_without_commit` runs per attribute. Anything else (another Optuna,
another storage or database, `BATCHED` off) takes the public path, `Trial.set_user_attr` per
attribute, which stores exactly the same rows.

What is not batched, and why: `trial.report` (only with a pruner, which needs it per epoch),
`study.tell` (Optuna's own bookkeeping of the state, the sampler's `after_trial`), and the
heartbeat. A trial is told only after its attributes' transaction has committed, so a COMPLETE
trial always carries its whole record.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
import sqlalchemy
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

BATCHED = True
"""Use the one-transaction path where the storage allows it (tests turn it off to compare)."""

TESTED_MAJOR = "5."
"""The Optuna major version whose private storage internals this module was written against."""


def _rdb_backend(study: optuna.Study):
    """Optuna's RDBStorage behind the study's storage, or None where the batch cannot be used."""
    if not BATCHED or not optuna.__version__.startswith(TESTED_MAJOR):
        return None
    from optuna.storages import RDBStorage
    from optuna.storages._cached_storage import _CachedStorage

    storage = study._storage
    backend = storage._backend if isinstance(storage, _CachedStorage) else storage
    if not isinstance(backend, RDBStorage):
        return None
    dialect = backend.engine.dialect.name
    if dialect not in ("sqlite", "postgresql") or sqlite3.sqlite_version_info < (3, 24, 0):
        return None  # no ON CONFLICT upsert: Optuna itself takes another path there
    return backend


def write_user_attrs(
    study: optuna.Study, writes: Sequence[tuple[optuna.Trial, Mapping[str, Any]]]
) -> None:
    """Store every `(trial, attributes)` of `writes`: one transaction where possible.

    Raises what `Trial.set_user_attr` raises (e.g. `UpdateFinishedTrialError` for a trial
    already finished, failed as stale by another worker); then nothing of the batch is stored."""
    writes = [(trial, attrs) for trial, attrs in writes if attrs]
    if not writes:
        return
    backend = _rdb_backend(study)
    if backend is None:
        for trial, attrs in writes:
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
        return
    rows = [
        {"trial_id": trial._trial_id, "key": key, "value_json": json.dumps(value)}
        for trial, attrs in writes
        for key, value in attrs.items()
    ]
    with backend.engine.begin() as connection:  # SQLite: BEGIN IMMEDIATE (experiments.study)
        _refuse_finished(connection, {row["trial_id"] for row in rows})
        connection.execute(_upsert(backend.engine.dialect.name), rows)


def _refuse_finished(connection, trial_ids: set[int]) -> None:
    from optuna.storages._rdb import models

    table = models.TrialModel.__table__
    query = sqlalchemy.select(table.c.trial_id, table.c.state).where(
        table.c.trial_id.in_(sorted(trial_ids))
    )
    if connection.dialect.name == "postgresql":
        query = query.with_for_update()  # SQLite's BEGIN IMMEDIATE holds the write lock already
    states = dict(connection.execute(query).all())
    for trial_id in sorted(trial_ids):
        if trial_id not in states:
            raise KeyError(f"no trial with id {trial_id}")
        state = states[trial_id]  # the column's Enum type gives TrialState; a name otherwise
        state = state if isinstance(state, TrialState) else TrialState[state]
        if state.is_finished():  # Optuna's check_trial_is_updatable, which reads in a session
            # of its own (it would wait for this transaction's lock)
            raise UpdateFinishedTrialError(
                f"Trial with id {trial_id} has already finished ({state.name}) and can not be "
                "updated."
            )


def _upsert(dialect: str):
    from optuna.storages._rdb import models

    table = models.TrialUserAttributeModel.__table__
    insert = {"sqlite": sqlite_insert, "postgresql": postgresql_insert}[dialect](table)
    return insert.on_conflict_do_update(
        index_elements=[table.c.trial_id, table.c.key],
        set_={"value_json": insert.excluded.value_json},
    )
