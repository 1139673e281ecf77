"""How `Mirror.reconcile` makes every run of a study match its trial's record.

    report = reconcile_study_runs(mirror, study)   # ReconcileReport(trials, synced, ...)

Under the study lock: stale trials (a dead worker's) are failed, and where one trial has
several runs all but the oldest, the one every worker found, are deleted. Then every finished
trial whose run is missing, stale (its record digest differs) or left with another status is
synced from scratch, and a closed study's best model is registered if it is missing. Trials
still RUNNING belong to live workers, which mirror them when they end.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial, TrialState

from experiments.locks import store_lock
from experiments.run_record import DIGEST_TAG, RUN_STATUS_OF_STATE, record_digest
from experiments.study import fail_unbeaten_trials, study_lock_name

if TYPE_CHECKING:
    from experiments.mirror import Mirror


@dataclass
class ReconcileReport:
    """What one `reconcile` found and did."""

    trials: int
    synced: int
    duplicates_removed: int

    @property
    def mismatches(self) -> int:
        return self.synced + self.duplicates_removed


def reconcile_study_runs(mirror: Mirror, study: optuna.Study) -> ReconcileReport:
    """Every finished trial of `study` gets exactly one run matching its record."""
    with store_lock(mirror.stores.optuna_url, study_lock_name(mirror.study_name)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)  # we rely on it anyway
            optuna.storages.fail_stale_trials(study)
        fail_unbeaten_trials(study, mirror.stores.optuna_url)
        trials = study.get_trials(deepcopy=False)
        runs = mirror._study_runs()
        removed = 0
        for copies in runs.values():
            for duplicate in copies[1:]:  # keep the oldest: the one every worker found
                mirror.call(mirror.client.delete_run, duplicate.info.run_id)
                removed += 1
        # The runs as found now: one this mirror wrote and someone deleted since is
        # forgotten (what it sent there with it), so that its trial gets a new one.
        mirror._run_ids = {number: copies[0].info.run_id for number, copies in runs.items()}
    repairs = []
    for trial in trials:
        # A trial still RUNNING once the stale ones are failed belongs to a live worker,
        # which mirrors it when it ends. Synced from this snapshot it could land after that
        # worker's last write and turn its finished run back to RUNNING.
        if trial.state in (TrialState.WAITING, TrialState.RUNNING):
            continue
        run = (runs.get(trial.number) or [None])[0]
        if run is None or not run_matches(run, trial):
            if run is not None:
                mirror._sent.pop(run.info.run_id, None)  # repair from scratch: send everything
            repairs.append(trial)
    for trial in repairs:  # the missing runs are all created by the first sync
        mirror.sync(trial, alongside=repairs)
    synced = len(repairs)
    if mirror.parent_closed() and mirror.ensure_best_model(study) is not None:
        synced += 1  # the model was missing: a repair
    return ReconcileReport(trials=len(trials), synced=synced, duplicates_removed=removed)


def run_matches(run, trial: FrozenTrial) -> bool:
    """Was `run` built from this record of `trial`, and does its status say the trial's?"""
    return (
        run.data.tags.get(DIGEST_TAG) == record_digest(trial)
        and run.info.status == RUN_STATUS_OF_STATE[trial.state]
    )
