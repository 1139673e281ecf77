"""MLflow as a mirror of the Optuna study: every run is rebuilt from its trial's record.

    mirror = Mirror(stores, "softmaxreg-mnist", study_uuid, wait_seconds=60, log=print)
    mirror.ensure_parent_run(study, tags)    # once per study, under the study lock
    mirror.sync(trial)                       # after each trial: run ← trial (idempotent)
    mirror.sync(trial, alongside=others)     # the others' runs found or created with its
    mirror.reconcile(study)                  # every trial: repair missing, stale, duplicate runs

Layout in MLflow: an experiment named after the study; one parent run per study (its id kept in
the study's user attribute `mlflow_parent_run_id`); one child run per trial named
`trial-<number>`, tagged with the study's UUID and the trial number, which is how it is found
again. Its status mirrors the trial: COMPLETE → FINISHED, PRUNED → KILLED (`optuna.pruned`),
FAIL → FAILED (`optuna.fail_reason`), RUNNING → RUNNING.

`sync` is idempotent: it finds the run or creates it with all its tags (under the study lock,
so two workers never both create one; a population's runs with one search of the runs started
since its first member), then writes params, per-epoch metrics with the timestamps recorded on
the trial, summary metrics, the tags that changed and, last, the status. Writing the same again
changes nothing (MLflow drops a metric already stored with the same step, timestamp and value),
so a sync interrupted half-way is completed by the next one; and the mirror remembers what it
has written, so a state already written is not written again (a running trial's later
snapshots, a finished trial synced twice). Each run carries `softmaxreg.record_digest`, a hash
of what it was built from; `reconcile` re-syncs every run whose digest or status differs from
its trial (a run created with its final tags but cut off before its status is one of those).

An unreachable tracking store is retried with a visible message for `wait_seconds`, then
`TrackingUnavailable` is raised; nothing is lost, because the trial keeps everything.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import optuna
from mlflow import MlflowClient
from mlflow.entities import Metric, Run
from mlflow.entities.lifecycle_stage import LifecycleStage
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    PERMISSION_DENIED,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    UNAUTHENTICATED,
    ErrorCode,
)
from optuna.trial import FrozenTrial

from experiments.interrupts import GATE
from experiments.locks import store_lock
from experiments.mirror_reconcile import ReconcileReport, reconcile_study_runs
from experiments.mirror_sqlite import relax_durability
from experiments.mirror_sync import sync_trial
from experiments.model_registry import ensure_best_model
from experiments.run_record import (
    as_tags,
)
from experiments.store_faults import StoreFault, raise_if_disk_full, store_where
from experiments.store_urls import Stores
from experiments.stores import CREDENTIAL_VARIABLES, sqlite_file
from experiments.tracking import (
    ROLE_TAG,
    STUDY_UUID_TAG,
    get_or_create_experiment,
    log_batch_in_chunks,
    runs_by_trial_number,
    search_study_runs,
)

# Logical errors are bugs to report at once; anything else (refused connections, timeouts,
# a locked database, a 5xx) is treated as the store being unreachable for now.
NOT_TRANSIENT = {
    ErrorCode.Name(code)
    for code in (INVALID_PARAMETER_VALUE, RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST)
}
# A server that refuses the login (a password changed mid-sweep) or the user (no permission on
# another user's experiment) will not change its mind in a minute: stop now, not after a wait.
REFUSED = {ErrorCode.Name(code) for code in (UNAUTHENTICATED, PERMISSION_DENIED)}
RETRY_PAUSE_SECONDS = 2.0


class TrackingUnavailable(StoreFault):
    """The tracking store stayed unreachable for the whole wait."""


class Mirror:
    """The MLflow side of one study; every MLflow call of the sweep goes through here."""

    def __init__(
        self,
        stores: Stores,
        study_name: str,
        study_uuid: str,
        *,
        wait_seconds: float,
        log: Callable[[str], None],
    ) -> None:
        # Our own bounded retry decides how long to wait; MLflow's would add minutes of silence.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        # MLflow 3 prints a "View run" link on stdout for every run it ends on a server: the
        # report prints where the runs are, once.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        # MLflow's SQL store logs each database error with its traceback, then raises it to
        # us, and `call` says it in one line (an outage's wait, a full disk): logged, it is
        # the same fault a second time, dozens of lines long.
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        if stores.tracking_uri.startswith("sqlite:"):
            # Before MLflow's engine opens it (see the module): commits in 0.05 ms, not 14.
            relax_durability(sqlite_file(stores.tracking_uri))
        self.stores = stores
        self.study_name = study_name
        self.study_uuid = study_uuid
        self.wait_seconds = wait_seconds
        self.log = log
        # The registry is the tracking store's own, whatever the process-wide default says.
        self.client = MlflowClient(stores.tracking_uri, registry_uri=stores.tracking_uri)
        self.seconds = 0.0
        self.stopping: Callable[[], bool] | None = None
        """Set while a `MirrorQueue` calls this mirror from its thread or child: True once it
        closes."""
        """Wall seconds spent in MLflow calls (for the tracking-overhead figure)."""
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self._run_ids: dict[int, str] = {}
        self._sent: dict[str, set[tuple[str, str, str]]] = {}
        """Per run id, the (kind, key, value) params, tags and inputs this mirror has written:
        a trial's params and most of its tags never change, so they are sent once, not again
        at the trial's end (MLflow checks every param it is sent against the stored ones)."""

    @classmethod
    def open(
        cls, stores: Stores, study: optuna.Study, *, wait_seconds: float, log: Callable[[str], None]
    ) -> Mirror:
        """The study's mirror, with MLflow's schema created first under a lock: concurrent
        first uses of one SQLite tracking file otherwise race MLflow's own migrations."""
        mirror = cls(
            stores, study.study_name, study.user_attrs["study_uuid"],
            wait_seconds=wait_seconds, log=log,
        )  # fmt: skip
        with store_lock(stores.tracking_uri, "softmaxreg-mlflow-schema"):
            mirror.call(mirror.client.search_experiments, max_results=1)
        return mirror

    # ------------------------------------------------------------------- calls, with patience

    def call(self, function: Callable, *args, patient: bool = True, **kwargs):
        """`function(*args, **kwargs)` against the tracking store, retried while unreachable."""
        started = time.monotonic()
        announced = False
        while True:
            try:
                result = function(*args, **kwargs)
                break
            except Exception as error:
                # A full disk (the store's, or the artifacts' under it) is no outage: waiting
                # frees no space, so it is said at once, naming the path.
                raise_if_disk_full(error, store_where(self.stores.tracking_uri))
                if isinstance(error, MlflowException) and error.error_code in REFUSED:
                    raise TrackingUnavailable(
                        f"tracking store {self.stores.shown()[1]} refused the request "
                        f"({str(error).splitlines()[0][:200]}); check {CREDENTIAL_VARIABLES} "
                        "and the user's permissions on the experiment"
                    ) from error
                if not _transient(error):
                    raise
                last = error
            waited = time.monotonic() - started
            if not patient or waited >= self.wait_seconds:
                self.seconds += waited
                raise TrackingUnavailable(
                    f"tracking store {self.stores.shown()[1]} unreachable for {waited:.0f} s "
                    f"({str(last).splitlines()[0][:200]})"
                ) from last
            if not announced:
                self.log(
                    f"tracking store {self.stores.shown()[1]} unreachable "
                    f"({str(last).splitlines()[0][:160]}); retrying for up to "
                    f"{self.wait_seconds:.0f} s"
                )
                announced = True
            self._safe_point()  # Ctrl-C or SIGTERM does not wait for the store to come back
            time.sleep(min(RETRY_PAUSE_SECONDS, max(self.wait_seconds - waited, 0.05)))
        self.seconds += time.monotonic() - started
        if announced:
            self.log(f"tracking store reachable again after {time.monotonic() - started:.0f} s")
        return result

    def _safe_point(self) -> None:
        """Between retries: the main thread raises a recorded signal; the mirror's own thread
        (`experiments.mirror_queue`) or process (`experiments.mirror_process`) leaves signals
        to the main thread and stops when the queue closes."""
        if self.stopping is not None:  # the queue's thread, or the mirror's child process
            if self.stopping():
                raise TrackingUnavailable("the worker is stopping: left to the next reconcile")
        elif threading.current_thread() is threading.main_thread():
            GATE.raise_pending()

    # ----------------------------------------------------------- experiment and parent run

    def _experiment_id(self) -> str:
        if self.experiment_id is None:
            self.experiment_id = self.call(get_or_create_experiment, self.client, self.study_name)
        return self.experiment_id

    def ensure_parent_run(
        self, study: optuna.Study, tags: Mapping[str, str], *, reopen: bool = True
    ) -> str:
        """The study's parent run, created once; call under the study lock. A worker reopens
        it (RUNNING); a repair leaves its status alone."""
        experiment_id = self._experiment_id()
        run_id = study.user_attrs.get("mlflow_parent_run_id")
        if run_id and not self._run_exists(run_id):
            run_id = None
        all_tags = {**tags, ROLE_TAG: "study", STUDY_UUID_TAG: self.study_uuid}
        if run_id is None:
            run = self.call(
                self.client.create_run, experiment_id, tags=all_tags, run_name=self.study_name
            )
            run_id = run.info.run_id
            study.set_user_attr("mlflow_parent_run_id", run_id)
        elif reopen:
            self.call(self.client.update_run, run_id, status="RUNNING")
            self.call(log_batch_in_chunks, self.client, run_id, tags=as_tags(all_tags))
        self.parent_run_id = run_id
        return run_id

    def _run_exists(self, run_id: str) -> bool:
        try:
            run = self.call(self.client.get_run, run_id)
        except MlflowException:
            return False
        return run.info.lifecycle_stage == LifecycleStage.ACTIVE

    def finish_parent_run(
        self, status: str, metrics: Mapping[str, float], artifacts: Path | None
    ) -> None:
        """Log the study's summary (at step 0) and artifacts, then end the parent run."""
        assert self.parent_run_id is not None
        stamp = int(time.time() * 1000)
        entries = [Metric(k, float(v), stamp, 0) for k, v in metrics.items() if math.isfinite(v)]
        if entries:
            self.call(log_batch_in_chunks, self.client, self.parent_run_id, metrics=entries)
        if artifacts is not None and any(artifacts.iterdir()):
            self.call(self.client.log_artifacts, self.parent_run_id, str(artifacts))
        self.call(self.client.set_terminated, self.parent_run_id, status=status)

    # ------------------------------------------------------------------------ trial runs

    def _study_runs(
        self,
        trial_number: int | None = None,
        started_since: int | None = None,
        patient: bool = True,
    ) -> dict[int, list]:
        """Active runs of this study's trials (of one, or started since a time) by trial
        number, oldest first."""
        return runs_by_trial_number(self.trial_runs(trial_number, started_since, patient))

    def trial_runs(
        self,
        trial_number: int | None = None,
        started_since: int | None = None,
        patient: bool = True,
    ) -> list[Run]:
        """Active runs of this study's trials (of one, or started since a time), as found."""
        return self.call(
            search_study_runs, self.client, self._experiment_id(), self.study_uuid,
            trial_number, started_since, patient=patient,
        )  # fmt: skip

    def sync(
        self, trial: FrozenTrial, *, patient: bool = True, alongside: Sequence[FrozenTrial] = ()
    ) -> str:
        """Make the trial's run match its record; return the run id. Idempotent. The runs of
        the trials `alongside` (the rest of its population) are found or created with it."""
        return sync_trial(self, trial, patient=patient, alongside=alongside)

    def ensure_best_model(self, study: optuna.Study) -> str | None:
        """Log and register the study's best model unless its version exists; return the new
        version. Called when the study's parent run closes, and by a repair of a closed study."""
        return ensure_best_model(self, study)

    def reconcile(self, study: optuna.Study) -> ReconcileReport:
        """Every finished trial gets exactly one run matching its record; stale trials are
        failed first, and live workers' running trials are left to them."""
        return reconcile_study_runs(self, study)

    def parent_closed(self) -> bool:
        """While workers run (parent RUNNING) the best trial may still change: no model yet."""
        parent = self.call(self.client.get_run, self.parent_run_id)
        return parent.info.status != "RUNNING"


def _transient(error: Exception) -> bool:
    """An unreachable, locked or failing tracking store, rather than a bug to report at once."""
    if isinstance(error, MlflowException):
        return error.error_code not in NOT_TRANSIENT
    if isinstance(error, (OSError, ConnectionError, TimeoutError)):
        return True
    # SQLAlchemy's OperationalError: a locked or gone database (MLflow's SQL store)
    return type(error).__name__ in ("OperationalError", "DatabaseError")
