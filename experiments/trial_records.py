"""Several trials' user attributes in one storage transaction: a population's pass-epoch.

    write_user_attrs(study, [(trial, {"epochs": table}), (other_trial, {"epochs": other})])

The population stores what its K members measured at the same moments (their settings when the
pass starts, every member's epoch table after each epoch, every member's summary before any is
told). Optuna's public API writes one attribute per call, each its own transaction: about 2 ms
here each (SQLAlchemy's ORM round, not the commit, which WAL makes cheap), 16-20 per trial. So
this is the one place that uses Optuna's private storage internals: on Optuna 5's RDB storage
(wrapped in `_CachedStorage`, as `optuna.load_study` does), every attribute of every trial is
written in one session with the same per-attribute statement Optuna's `set_trial_user_attr`
uses, `RDBStorage._set_trial_attr_without_commit`, which also refuses a finished trial, then
committed once. Anything else (another Optuna, another storage, `BATCHED` off) takes the public
path, `Trial.set_user_attr` per attribute, which stores exactly the same values.

What is not batched, and why: `trial.report` (only with a pruner, which needs it per epoch),
`study.tell` (Optuna's own bookkeeping of the state, the sampler's `after_trial`), and the
heartbeat. A trial is told only after its attributes' transaction has committed, so a COMPLETE
trial always carries its whole record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import optuna

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
    if not hasattr(backend, "_set_trial_attr_without_commit"):
        return None
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
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    # Integrity errors raise (not ignored as Optuna's single upsert may): a batch is whole or
    # absent, never silently dropped before a tell.
    with _create_scoped_session(backend.scoped_session, False) as session:
        for trial, attrs in writes:
            for key, value in attrs.items():
                backend._set_trial_attr_without_commit(
                    session, models.TrialUserAttributeModel, trial._trial_id, key, value
                )
