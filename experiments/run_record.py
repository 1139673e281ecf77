"""A trial's record as the MLflow entities of its run: params, metrics, tags, status.

    params = trial_params(trial); metrics = trial_metrics(trial)
    tags = trial_tags(trial, study_name, study_uuid, parent_run_id)

Pure functions of the Optuna `FrozenTrial` (its params and the user attributes written by
`experiments.objective`), so a run rebuilt later is identical to one written live: per-epoch
metrics carry the wall-clock times recorded on the trial, summary metrics the trial's end time.

Names are chosen for MLflow's UI: a run is named after its configuration (`trial-37 bs256
lr0.102`); `log10_lr` and `log2_batch_size` are params whose linear axes are the right ones;
per-epoch figures are curves at step = epoch, while each summary figure is one value at step 0
under `summary/<name>`, so the UI puts them in a section of their own and they never pass for a
per-epoch figure (nor stretch the step axis). The summary is logged before the curves, best
validation accuracy first, so MLflow's Compare view opens on the objective. Empty values are
never written.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
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
SUMMARY_PREFIX = "summary/"
NOT_MIRRORED = ("final_train_loss",)
"""Summary figures kept in Optuna only: the last point of the `train_loss` curve shows it."""
RUN_STATUS_OF_STATE: dict[TrialState, str] = {
    TrialState.COMPLETE: "FINISHED",
    TrialState.PRUNED: "KILLED",
    TrialState.FAIL: "FAILED",
    TrialState.RUNNING: "RUNNING",
    TrialState.WAITING: "SCHEDULED",
}


MIRROR_LAYOUT = 2
"""Bumped whenever the way a record becomes a run changes, so reconcile rebuilds older runs."""


def record_digest(trial: FrozenTrial) -> str:
    """A hash of everything a trial's run is built from, and of how it is built."""
    content = [trial.state.name, trial.params, trial.user_attrs, fail_reason(trial)]
    content.append(MIRROR_LAYOUT)
    return hashlib.sha1(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def millis(moment) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def summary_metric_name(figure: str) -> str:
    """The MLflow metric holding summary figure `figure` (readers of runs use this too)."""
    return SUMMARY_PREFIX + figure


def trial_run_name(trial: FrozenTrial) -> str:
    """`trial-37 bs256 lr0.102`: the legend of every chart says which configuration it is."""
    name = f"trial-{trial.number}"
    if "batch_size" in trial.params:
        name += f" bs{trial.params['batch_size']}"
    if "lr" in trial.params:
        name += f" lr{trial.params['lr']:.3g}"
    return name


def scaled_params(trial: FrozenTrial) -> dict[str, float]:
    """The swept values on the scale they were searched on: MLflow's plots have linear axes
    only, on which learning rates from a log range bunch up near zero."""
    scaled: dict[str, float] = {}
    if isinstance(trial.params.get("lr"), (int, float)) and trial.params["lr"] > 0:
        scaled["log10_lr"] = round(math.log10(trial.params["lr"]), 4)
    if isinstance(trial.params.get("batch_size"), int) and trial.params["batch_size"] > 0:
        log2 = math.log2(trial.params["batch_size"])
        scaled["log2_batch_size"] = int(log2) if log2.is_integer() else round(log2, 3)
    return scaled


def trial_params(trial: FrozenTrial) -> dict[str, object]:
    settings = dict(trial.user_attrs.get("settings") or {})
    seeds = settings.pop("seeds", None)
    params: dict[str, object] = {
        **trial.params,
        **scaled_params(trial),
        "trial_number": trial.number,
        **settings,
    }
    if seeds is not None:
        params["seeds"] = ",".join(map(str, seeds))
    if "worker" in trial.user_attrs:
        params["worker"] = trial.user_attrs["worker"]
    return params


def trial_metrics(trial: FrozenTrial) -> list[Metric]:
    """The summary figures (once the trial is finished), then the per-epoch metrics.

    Summary first, `summary/best_val_accuracy` leading (it is first in SUMMARY_FIGURES): MLflow
    returns a run's latest metrics in the order they were first logged (its stores read them
    back without an ORDER BY), and MLflow 3.17's Compare view opens on a parallel-coordinates
    plot of the first metric the runs share, coloured by it. So ticking runs and pressing
    Compare shows the objective without choosing it (tests/test_browser.py checks that)."""
    return summary_metrics(trial) + epoch_metrics(trial)


def epoch_metrics(trial: FrozenTrial) -> list[Metric]:
    """Per-epoch metrics at step = epoch, with the times recorded on the trial."""
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
    return metrics


def summary_metrics(trial: FrozenTrial) -> list[Metric]:
    """Each finite summary figure as `summary/<name>` at step 0, stamped with the trial's end."""
    finished = millis(trial.datetime_complete)
    if finished is None:
        return []
    metrics = []
    for name in SUMMARY_FIGURES:
        value = trial.user_attrs.get(name)
        if name in NOT_MIRRORED or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            metrics.append(Metric(summary_metric_name(name), float(value), finished, 0))
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
        "mlflow.runName": trial_run_name(trial),
        DIGEST_TAG: record_digest(trial),
    }
    if trial.state == TrialState.PRUNED:
        tags[PRUNED_TAG] = "true"
    if trial.state == TrialState.FAIL:
        tags[FAIL_REASON_TAG] = fail_reason(trial)
    return tags


def dataset_input(trial: FrozenTrial) -> DatasetInput | None:
    """The data the trial trained on as an MLflow dataset input (the runs table's Dataset
    column): its name, where it was read from, and as digest the checksum of its raw files, so
    runs on different bytes are told apart."""
    environment = trial.user_attrs.get("environment") or {}
    settings = trial.user_attrs.get("settings") or {}
    name, checksum = environment.get("dataset"), environment.get("dataset_checksum")
    if not name or not checksum:
        return None
    source = {"uri": str(settings.get("data_root") or name)}
    profile = {k: settings[k] for k in ("val_size", "split_seed") if k in settings}
    dataset = Dataset(
        name=name,
        digest=str(checksum)[:36],  # MLflow's column limit; an MD5 is 32
        source_type="local",
        source=json.dumps(source),
        profile=json.dumps(profile) if profile else None,
    )
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])


def as_params(params: Mapping[str, object]) -> list[Param]:
    """MLflow params; an empty value would show as a blank column, so it is left out."""
    return [Param(k, str(v)[:MAX_PARAM_VAL_LENGTH]) for k, v in params.items() if str(v) != ""]


def as_tags(tags: Mapping[str, object]) -> list[RunTag]:
    return [RunTag(k, str(v)[:MAX_TAG_VAL_LENGTH]) for k, v in tags.items() if str(v) != ""]
