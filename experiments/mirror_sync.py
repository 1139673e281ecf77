"""How `Mirror.sync` makes one trial's run match its record, writing only what is missing.

    find_or_create_runs(mirror, population)        # one search, one hold of the study lock
    sync_trial(mirror, trial, patient=True, alongside=population)

A run is created RUNNING with all its tags (MLflow writes tags given later in a transaction of
their own, and `mlflow.runName` in a second one). What the mirror has written to each run is
kept in `mirror._sent` (params, tags, inputs, and markers of the state written), so a trial's
params and unchanged tags are sent once, a running trial's later snapshots are not written
again (its end writes its figures and status), and a finished trial synced twice writes
nothing. The status is written last: a sync cut short before it leaves a run whose status
differs from its trial, which the next sync or `Mirror.reconcile` completes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from optuna.trial import FrozenTrial, TrialState

from experiments.locks import store_lock
from experiments.run_record import (
    DIGEST_TAG,
    RUN_STATUS_OF_STATE,
    as_params,
    as_tags,
    dataset_input,
    millis,
    trial_metrics,
    trial_params,
    trial_run_name,
    trial_tags,
)
from experiments.study import study_lock_name
from experiments.tracking import log_batch_in_chunks

if TYPE_CHECKING:
    from experiments.mirror import Mirror

RUNNING_SENT = ("s", "RUNNING", "")
"""In a run's sent set (`Mirror._sent`): the trial's running record is in the run, whose status
is RUNNING; a later running snapshot is not written again (its end writes everything)."""
STATUS_RUNNING = ("status", "RUNNING", "")
"""In a run's sent set: its status is RUNNING (a run is created so)."""


def find_or_create_runs(mirror: Mirror, trials: Sequence[FrozenTrial], *, patient: bool) -> None:
    """Find or create the run of every trial of `trials` whose run id is not known yet:
    one search and one hold of the study lock for all of them (a population's members).

    Creation is serialised by the study lock, and the look for an existing run happens
    inside it, so two workers (or a worker and a reconcile) never both create one. Only runs
    started since the earliest of these trials are read (a run starts when its trial did):
    reading the study's every run would cost each new trial more than the last."""
    by_number: dict[int, FrozenTrial] = {}
    for trial in trials:  # one run per trial, whichever of its snapshots are given
        if trial.number not in mirror._run_ids:
            by_number.setdefault(trial.number, trial)
    unknown = list(by_number.values())
    if not unknown:
        return
    starts = [millis(t.datetime_start) for t in unknown]
    since = None if None in starts else min(starts)
    number = unknown[0].number if len(unknown) == 1 else None
    with store_lock(mirror.stores.optuna_url, study_lock_name(mirror.study_name)):
        existing = mirror._study_runs(number, since, patient)
        for trial in unknown:
            if trial.number in existing:
                mirror._run_ids[trial.number] = existing[trial.number][0].info.run_id
            else:
                mirror._run_ids[trial.number] = create_run(mirror, trial, patient)


def create_run(mirror: Mirror, trial: FrozenTrial, patient: bool) -> str:
    """A new RUNNING run for the trial with all its tags, in one call."""
    record = trial_tags(trial, mirror.study_name, mirror.study_uuid, mirror.parent_run_id)
    tags = {tag.key: tag.value for tag in as_tags(record)}
    run = mirror.call(
        mirror.client.create_run, mirror._experiment_id(), run_name=trial_run_name(trial),
        start_time=millis(trial.datetime_start), tags=tags, patient=patient,
    )  # fmt: skip
    sent = mirror._sent.setdefault(run.info.run_id, set())
    sent.update(("t", key, value) for key, value in tags.items())
    sent.add(STATUS_RUNNING)  # no status to write while the trial runs
    return run.info.run_id


def sync_trial(
    mirror: Mirror, trial: FrozenTrial, *, patient: bool, alongside: Sequence[FrozenTrial]
) -> str:
    """`Mirror.sync`: the trial's run (and those of `alongside`) found or created, then what
    it lacks of the trial's record written; return its id."""
    assert mirror.parent_run_id is not None, "ensure_parent_run first"
    if trial.state == TrialState.WAITING:
        return ""
    others = [t for t in alongside if t.state != TrialState.WAITING]
    find_or_create_runs(mirror, [trial, *others], patient=patient)
    run_id = mirror._run_ids[trial.number]
    sent = mirror._sent.setdefault(run_id, set())
    tags = trial_tags(trial, mirror.study_name, mirror.study_uuid, mirror.parent_run_id)
    done = done_marker(trial, tags[DIGEST_TAG])
    if done in sent:
        return run_id  # this state (and record, once finished) is in the run already
    params = [p for p in as_params(trial_params(trial)) if ("p", p.key, p.value) not in sent]
    new_tags = [t for t in as_tags(tags) if ("t", t.key, t.value) not in sent]
    metrics = trial_metrics(trial)
    if metrics or params or new_tags:
        mirror.call(
            log_batch_in_chunks, mirror.client, run_id,
            metrics=metrics, params=params, tags=new_tags, patient=patient,
        )  # fmt: skip
        sent.update(("p", p.key, p.value) for p in params)
        sent.update(("t", t.key, t.value) for t in new_tags)
    data = dataset_input(trial)
    if data is not None and ("i", data.dataset.name, data.dataset.digest) not in sent:
        # MLflow keeps one input per dataset and run: idempotent, but a call each time.
        mirror.call(mirror.client.log_inputs, run_id, [data], patient=patient)
        sent.add(("i", data.dataset.name, data.dataset.digest))
    status = RUN_STATUS_OF_STATE[trial.state]
    if trial.state.is_finished():
        end = millis(trial.datetime_complete)
        mirror.call(mirror.client.set_terminated, run_id, status, end, patient=patient)
    elif STATUS_RUNNING not in sent:
        mirror.call(mirror.client.update_run, run_id, status=status, patient=patient)
        sent.add(STATUS_RUNNING)
    sent.add(done)  # last: a sync cut short before here is done again in full
    return run_id


def done_marker(trial: FrozenTrial, digest: str) -> tuple[str, str, str]:
    """What `sync_trial` keeps in a run's sent set once the trial's state is written: a
    running trial's by state alone (its later running snapshots are not written again: only
    its end writes its figures and status), a finished one's with its record's digest."""
    if trial.state == TrialState.RUNNING:
        return RUNNING_SENT
    return ("s", trial.state.name, digest)
