"""Liveness of whole workers, in the study's system attributes: `WorkerRegistry`.

    registry = WorkerRegistry(study, worker_id, sweep, optuna_url)
    registry.start()                 # an entry that beats while the worker runs
    last = registry.end()            # marked ended; True if no other worker is alive

Each worker beats there while it runs and marks itself ended when it stops. The last worker to
end (no other live entry, checked as it marks itself ended, under the study's lock) finishes
the study's parent run, or hands that to its command (`experiments.finish_handoff`); a worker
that vanished (kill -9) stops beating and counts as dead after the grace period.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid

import optuna

from experiments.config import GRACE_HEARTBEATS, SweepConfig
from experiments.locks import store_lock
from experiments.store_faults import is_store_failure
from experiments.study import study_lock_name

REGISTRY_PREFIX = "softmaxreg.worker."


class WorkerRegistry:
    """This worker's entry among the study's system attributes, refreshed while it runs."""

    def __init__(
        self, study: optuna.Study, worker_id: int, sweep: SweepConfig, optuna_url: str
    ) -> None:
        self.study = study
        self.optuna_url = optuna_url
        self.worker_id = worker_id
        self.interval = sweep.heartbeat_seconds
        self.key = REGISTRY_PREFIX + uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat_until_stopped, daemon=True)

    def _write(self, ended: bool) -> None:
        entry = {
            "worker_id": self.worker_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "beat": time.time(),
            "interval": self.interval,
            "ended": ended,
        }
        self.study._storage.set_study_system_attr(self.study._study_id, self.key, entry)

    def _beat_until_stopped(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._write(ended=False)
            except Exception as error:
                # A missed beat during an outage or on a full disk: the worker's own next
                # write meets the fault and reports it; a thread dying here would only add a
                # traceback and leave the worker counted dead while it runs.
                if not is_store_failure(error):
                    raise

    def start(self) -> None:
        self._write(ended=False)
        self._thread.start()

    def _stop_beating(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval + 5)

    def stop(self) -> None:
        """Stop beating and record the end (raises if the storage cannot take it)."""
        self._stop_beating()
        self._write(ended=True)

    def end(self) -> bool:
        """`stop`, then whether this worker was the study's last live one: the end is recorded
        and the others read under the study's lock, so of workers that end together exactly
        one finds every other ended, and it alone finishes the parent run. (Checked later and
        without the lock, two workers ending within a second of each other could each see the
        other ended, and both refit, draw the plots and log the model.) The beat thread is
        joined before the lock is taken: on SQLite every store lock is the one file lock."""
        self._stop_beating()
        with store_lock(self.optuna_url, study_lock_name(self.study.study_name)):
            self._write(ended=True)
            return not self.others_alive()

    def abandon(self) -> None:
        """`stop` on the way out after a fault: one attempt to record the end; if the storage
        cannot take it, the entry goes stale and counts as ended after the grace period."""
        try:
            self.stop()
        except Exception as error:
            if not is_store_failure(error):
                raise

    def others_alive(self) -> list[dict]:
        """Other workers of the study that have beaten within the grace period and not ended."""
        return live_workers(self.study, exclude=self.key)


def live_workers(study: optuna.Study, exclude: str = "") -> list[dict]:
    """Registry entries of workers that have not ended and beat within 3 of their own
    heartbeat intervals (workers of one study may run with different --heartbeat-seconds)."""
    attrs = study._storage.get_study_system_attrs(study._study_id)
    now = time.time()
    return [
        entry
        for key, entry in attrs.items()
        if key.startswith(REGISTRY_PREFIX)
        and key != exclude
        and not entry.get("ended")
        and now - float(entry.get("beat", 0)) < GRACE_HEARTBEATS * float(entry.get("interval", 10))
    ]
