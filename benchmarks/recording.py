"""MLflow side of the suite: one parent run per suite run, one child run per benchmark.

Experiment `benchmarks`. Each benchmark's child run (named after the section, nested under the
suite's run via `mlflow.parentRunId`) gets the section's params, its figures as metrics, the
environment as tags, and its CSVs and PNGs as artifacts. The parent run gets the checks as
metrics and report.md (plus everything else in the results folder: rounds.csv and
environment.json are what `benchmarks.compare` reads back) as artifacts.

MLflow is imported here only, lazily, so `--help` and flag errors stay instant.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path

from benchmarks.common import SectionResult

EXPERIMENT_NAME = "benchmarks"
MAX_VALUE = 5000  # below MLflow's param/tag length limits


class BenchmarkRecorder:
    """Creates and fills the suite's runs in experiment `benchmarks` at `tracking_uri`."""

    def __init__(self, tracking_uri: str, artifact_location: str | None) -> None:
        from mlflow import MlflowClient
        from mlflow.entities.lifecycle_stage import LifecycleStage

        self.client = MlflowClient(tracking_uri)
        experiment = self.client.get_experiment_by_name(EXPERIMENT_NAME)
        if experiment is None:
            self.experiment_id = self.client.create_experiment(
                EXPERIMENT_NAME, artifact_location=artifact_location
            )
        else:
            self.experiment_id = experiment.experiment_id
            if experiment.lifecycle_stage == LifecycleStage.DELETED:
                self.client.restore_experiment(self.experiment_id)
        self.suite_run_id = ""

    def open_suite(self, name: str, tags: Mapping[str, str], params: Mapping[str, str]) -> str:
        run = self.client.create_run(self.experiment_id, run_name=name, tags=dict(tags))
        self.suite_run_id = run.info.run_id
        self._log(self.suite_run_id, params=params)
        return self.suite_run_id

    def record_section(
        self, result: SectionResult, files: list[Path], tags: Mapping[str, str]
    ) -> str:
        """One child run for `result`, finished at once; returns its id."""
        run = self.client.create_run(
            self.experiment_id,
            run_name=result.key,
            tags={**tags, "mlflow.parentRunId": self.suite_run_id, "benchmark": result.key},
        )
        run_id = run.info.run_id
        self._log(run_id, params=result.params, metrics=result.metrics)
        for path in files:
            self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, status="FINISHED")
        return run_id

    def close_suite(self, metrics: Mapping[str, float], folder: Path, status: str) -> None:
        self._log(self.suite_run_id, metrics=metrics)
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix in (".md", ".csv", ".png", ".json"):
                self.client.log_artifact(self.suite_run_id, str(path))
        self.client.set_terminated(self.suite_run_id, status=status)

    def _log(
        self,
        run_id: str,
        params: Mapping[str, str] | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> None:
        from mlflow.entities import Metric, Param

        stamp = int(time.time() * 1000)
        param_list = [Param(k, str(v)[:MAX_VALUE]) for k, v in (params or {}).items()]
        # NaN/inf (e.g. a target never reached) is left out rather than logged as a number.
        metric_list = [
            Metric(k, float(v), stamp, 0)
            for k, v in (metrics or {}).items()
            if v is not None and math.isfinite(float(v))
        ]
        for start in range(0, max(len(param_list), len(metric_list)), 100):
            self.client.log_batch(
                run_id,
                metrics=metric_list[start : start + 100],
                params=param_list[start : start + 100],
            )
