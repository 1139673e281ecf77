"""All MLflow logging of the sweep: one parent run per study, one child run per trial.

    tracker = SweepTracker("sqlite:///mlflow.db", "softmaxreg-mnist")
    parent_id = tracker.open_parent_run(study_uuid, tags={...})
    run_id = tracker.start_trial_run(trial_number=3, tags={...})
    ... train ...
    tracker.finish_trial_run(run_id, TrialState.PRUNED, params, epoch_metrics, summary, tags)
    tracker.finish_parent_run("FINISHED", metrics, artifact_folder)

Layout in MLflow (what `optuna_integration.MLflowCallback` does not give):

- the experiment is named after the Optuna study;
- one parent run per study, found again on resume by its tags (`softmaxreg.role = study` and
  `softmaxreg.study_uuid`, a UUID stored in the study's user attributes), never by name, so a
  resumed study adds children to the same parent and a recreated study of the same name gets a
  new one;
- one child run per trial, named `trial-<number>`, nested under the parent
  (`mlflow.parentRunId`), with params, per-epoch metrics (`step` = epoch), summary metrics and
  tags; its status mirrors the trial's final Optuna state: COMPLETE → FINISHED,
  PRUNED → KILLED (tag `optuna.pruned = true`), FAIL → FAILED (tag `optuna.fail_reason`).

Cost: each trial makes three tracking calls (create the run, one `log_batch` with everything,
terminate it), however many epochs it trained, so tracking stays a small fraction of a trial.
`SweepTracker.seconds` adds up the time spent in MLflow calls, to report that fraction.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.entities.lifecycle_stage import LifecycleStage
from mlflow.utils.validation import (
    MAX_ENTITIES_PER_BATCH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)
from optuna.trial import TrialState

from experiments.stores import normalise_tracking_uri

ROLE_TAG = "softmaxreg.role"
STUDY_UUID_TAG = "softmaxreg.study_uuid"
STUDY_NAME_TAG = "optuna.study_name"
TRIAL_NUMBER_TAG = "optuna.trial_number"
TRIAL_STATE_TAG = "optuna.trial_state"
PRUNED_TAG = "optuna.pruned"
FAIL_REASON_TAG = "optuna.fail_reason"

RUN_STATUS_OF_STATE: dict[TrialState, str] = {
    TrialState.COMPLETE: RunStatus.to_string(RunStatus.FINISHED),
    TrialState.PRUNED: RunStatus.to_string(RunStatus.KILLED),
    TrialState.FAIL: RunStatus.to_string(RunStatus.FAILED),
}
"""MLflow run status for each final Optuna trial state."""


def trial_run_name(trial_number: int) -> str:
    return f"trial-{trial_number}"


def now_ms() -> int:
    return int(time.time() * 1000)


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class SweepTracker:
    """MLflow side of one sweep invocation; every call to MLflow goes through here."""

    def __init__(self, tracking_uri: str, experiment_name: str) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.client = MlflowClient(normalise_tracking_uri(tracking_uri))
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.seconds = 0.0
        """Wall seconds spent in MLflow calls so far (for the tracking-overhead figure)."""

    @contextmanager
    def _timed(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start

    # ---------------------------------------------------------------- experiment and parent run

    def _experiment(self) -> str:
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        if experiment is None:
            return self.client.create_experiment(self.experiment_name)
        if experiment.lifecycle_stage == LifecycleStage.DELETED:
            # A deleted experiment keeps its name reserved; bring it back rather than fail.
            self.client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id

    def find_parent_run_id(self, study_uuid: str) -> str | None:
        """The parent run of the study with this UUID, if one exists (oldest if several)."""
        assert self.experiment_id is not None
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=(
                f"tags.`{ROLE_TAG}` = 'study' AND tags.`{STUDY_UUID_TAG}` = '{study_uuid}'"
            ),
            order_by=["attributes.start_time ASC"],
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def open_parent_run(self, study_uuid: str, tags: Mapping[str, str]) -> str:
        """Create the study's parent run, or reopen the one a previous invocation created."""
        with self._timed():
            self.experiment_id = self._experiment()
            all_tags = {**tags, ROLE_TAG: "study", STUDY_UUID_TAG: study_uuid}
            run_id = self.find_parent_run_id(study_uuid)
            if run_id is None:
                run = self.client.create_run(
                    self.experiment_id, tags=all_tags, run_name=self.experiment_name
                )
                run_id = run.info.run_id
            else:
                self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
                self.client.log_batch(run_id, tags=_tags(all_tags))
        self.parent_run_id = run_id
        return run_id

    def finish_parent_run(
        self,
        status: str,
        metrics: Mapping[str, float],
        step: int,
        artifact_folder: Path | None = None,
    ) -> None:
        """Log the study's summary metrics and artifacts, then end the parent run."""
        assert self.parent_run_id is not None
        with self._timed():
            stamp = now_ms()
            entries = [Metric(k, float(v), stamp, step) for k, v in metrics.items()]
            if entries:
                self.client.log_batch(self.parent_run_id, metrics=entries)
            if artifact_folder is not None and any(artifact_folder.iterdir()):
                self.client.log_artifacts(self.parent_run_id, str(artifact_folder))
            self.client.set_terminated(self.parent_run_id, status=status)

    # ---------------------------------------------------------------------------- trial runs

    def start_trial_run(self, trial_number: int, tags: Mapping[str, str]) -> str:
        """Create the trial's child run (status RUNNING) under the parent; return its id."""
        assert self.experiment_id is not None and self.parent_run_id is not None
        with self._timed():
            run = self.client.create_run(
                self.experiment_id,
                run_name=trial_run_name(trial_number),
                tags={
                    **tags,
                    "mlflow.parentRunId": self.parent_run_id,
                    ROLE_TAG: "trial",
                    TRIAL_NUMBER_TAG: str(trial_number),
                    TRIAL_STATE_TAG: TrialState.RUNNING.name,
                },
            )
        return run.info.run_id

    def finish_trial_run(
        self,
        run_id: str,
        state: TrialState,
        params: Mapping[str, object],
        epoch_metrics: Sequence[tuple[int, int, Mapping[str, float]]],
        summary: Mapping[str, float],
        tags: Mapping[str, str],
    ) -> None:
        """Log everything the trial produced in one batch and end the run with its status.

        `epoch_metrics` holds (epoch, timestamp in ms, {name: value}) per epoch; NaN summary
        figures (e.g. a target never reached) are left out rather than logged as NaN.
        """
        final_tags = {**tags, TRIAL_STATE_TAG: state.name}
        if state == TrialState.PRUNED:
            final_tags[PRUNED_TAG] = "true"
        stamp = now_ms()
        metrics = [
            Metric(name, float(value), timestamp, epoch)
            for epoch, timestamp, values in epoch_metrics
            for name, value in values.items()
        ]
        last_step = epoch_metrics[-1][0] if epoch_metrics else 0
        metrics += [
            Metric(name, float(value), stamp, last_step)
            for name, value in summary.items()
            if value == value  # skip NaN
        ]
        status = RUN_STATUS_OF_STATE.get(state, RunStatus.to_string(RunStatus.KILLED))
        with self._timed():
            self._log_batch(run_id, metrics, _params(params), _tags(final_tags))
            self.client.set_terminated(run_id, status=status)

    def _log_batch(
        self, run_id: str, metrics: list[Metric], params: list[Param], tags: list[RunTag]
    ) -> None:
        """One `log_batch` call in the common case; split only past MLflow's per-call limits."""
        first_params = params[:MAX_PARAMS_TAGS_PER_BATCH]
        first_tags = tags[:MAX_PARAMS_TAGS_PER_BATCH]
        room = MAX_ENTITIES_PER_BATCH - len(first_params) - len(first_tags)
        room = min(MAX_METRICS_PER_BATCH, room)
        self.client.log_batch(run_id, metrics=metrics[:room], params=first_params, tags=first_tags)
        for chunk in _chunks(metrics[room:], MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=chunk)
        for chunk in _chunks(params[MAX_PARAMS_TAGS_PER_BATCH:], MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(run_id, params=chunk)
        for chunk in _chunks(tags[MAX_PARAMS_TAGS_PER_BATCH:], MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(run_id, tags=chunk)

    # ---------------------------------------------------------------------------------- reading

    def search_trial_runs(self) -> pd.DataFrame:
        """Every trial run of this experiment, as `mlflow.search_runs` returns them."""
        return search_trial_runs(self.tracking_uri, self.experiment_name)


def search_trial_runs(tracking_uri: str, experiment_name: str) -> pd.DataFrame:
    """`mlflow.search_runs` for the trial runs of `experiment_name` (empty frame if none)."""
    tracking_uri = normalise_tracking_uri(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    experiment = MlflowClient(tracking_uri).get_experiment_by_name(experiment_name)
    if experiment is None:
        return pd.DataFrame()
    return mlflow.search_runs(
        experiment_ids=[experiment.experiment_id],
        filter_string=f"tags.`{ROLE_TAG}` = 'trial'",
        output_format="pandas",
    )


def _params(params: Mapping[str, object]) -> list[Param]:
    return [Param(k, str(v)[:MAX_PARAM_VAL_LENGTH]) for k, v in params.items()]


def _tags(tags: Mapping[str, str]) -> list[RunTag]:
    return [RunTag(k, str(v)[:MAX_TAG_VAL_LENGTH]) for k, v in tags.items()]
