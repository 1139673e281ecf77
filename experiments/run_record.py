"""A trial's record as the MLflow entities of its run: params, metrics, tags, status.

    params = trial_params(trial); metrics = trial_metrics(trial)
    tags = trial_tags(trial, study_name, study_uuid, parent_run_id)

Pure functions of the Optuna `FrozenTrial` (its params and the user attributes written by
`experiments.objective`), so a run rebuilt later is identical to one written live: per-epoch
metrics carry the wall-clock times recorded on the trial, summary metrics the trial's end time.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping

from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH
from optuna.trial import FrozenTrial, TrialState

from experiments.objective import SUMMARY_FIGURES, fail_reason
from experiments.tracking import (
    FAIL_REASON_TAG,
    PRUNED_TAG,
    ROLE_TAG,
    STUDY_NAME_TAG,
    STUDY_UUID_TAG,
    TRIAL_NUMBER_TAG,
    TRIAL_STATE_TAG,
)

DIGEST_TAG = "softmaxreg.record_digest"
RUN_STATUS_OF_STATE: dict[TrialState, str] = {
    TrialState.COMPLETE: "FINISHED",
    TrialState.PRUNED: "KILLED",
    TrialState.FAIL: "FAILED",
    TrialState.RUNNING: "RUNNING",
    TrialState.WAITING: "SCHEDULED",
}


def record_digest(trial: FrozenTrial) -> str:
    """A hash of everything a trial's run is built from."""
    content = [trial.state.name, trial.params, trial.user_attrs, fail_reason(trial)]
    return hashlib.sha1(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def millis(moment) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def trial_params(trial: FrozenTrial) -> dict[str, object]:
    settings = dict(trial.user_attrs.get("settings") or {})
    seeds = settings.pop("seeds", None)
    params: dict[str, object] = {**trial.params, "trial_number": trial.number, **settings}
    if seeds is not None:
        params["seeds"] = ",".join(map(str, seeds))
    if "worker" in trial.user_attrs:
        params["worker"] = trial.user_attrs["worker"]
    return params


def trial_metrics(trial: FrozenTrial) -> list[Metric]:
    """Per-epoch metrics at step = epoch with their recorded times, then the summary figures."""
    epochs = trial.user_attrs.get("epochs") or {}
    steps, stamps = epochs.get("step", []), epochs.get("time_ms", [])
    names = [name for name in epochs if name not in ("step", "time_ms")]
    metrics = [
        Metric(name, float(value), int(stamps[i]), int(steps[i]))
        for name in names
        for i, value in enumerate(epochs[name])
    ]
    if not steps and trial.intermediate_values:  # a record from before per-epoch storage
        metrics += [
            Metric("val_accuracy", float(v), millis(trial.datetime_start) or 0, int(step))
            for step, v in sorted(trial.intermediate_values.items())
        ]
    finished = millis(trial.datetime_complete)
    if finished is not None:
        last_step = int(steps[-1]) if steps else 0
        for name in SUMMARY_FIGURES:
            value = trial.user_attrs.get(name)
            if isinstance(value, (int, float)) and math.isfinite(value):
                metrics.append(Metric(name, float(value), finished, last_step))
    return metrics


def trial_tags(trial: FrozenTrial, study_name: str, study_uuid: str, parent_id: str) -> dict:
    tags = {
        **(trial.user_attrs.get("environment") or {}),
        STUDY_NAME_TAG: study_name,
        STUDY_UUID_TAG: study_uuid,
        ROLE_TAG: "trial",
        TRIAL_NUMBER_TAG: str(trial.number),
        TRIAL_STATE_TAG: trial.state.name,
        "mlflow.parentRunId": parent_id,
        DIGEST_TAG: record_digest(trial),
    }
    if trial.state == TrialState.PRUNED:
        tags[PRUNED_TAG] = "true"
    if trial.state == TrialState.FAIL:
        tags[FAIL_REASON_TAG] = fail_reason(trial)
    return tags


def as_params(params: Mapping[str, object]) -> list[Param]:
    return [Param(k, str(v)[:MAX_PARAM_VAL_LENGTH]) for k, v in params.items()]


def as_tags(tags: Mapping[str, object]) -> list[RunTag]:
    return [RunTag(k, str(v)[:MAX_TAG_VAL_LENGTH]) for k, v in tags.items()]
