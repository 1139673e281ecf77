"""One thread that beats for every trial of a running population pass.

Optuna's heartbeat thread runs only inside `study.optimize`, for its one trial; a population
pass runs K trials by ask-and-tell, so this beats for each of them while the pass runs. A worker
killed mid-pass then leaves each member to be failed (and retried) by the next worker or
reconcile, as in single mode.
"""

from __future__ import annotations

import threading

import optuna


class Heartbeats:
    """Beats for every trial of the running pass (Optuna's own thread beats only one)."""

    def __init__(self, storage: optuna.storages.BaseStorage, interval: float) -> None:
        self.storage, self.interval = storage, interval
        self.trial_ids: list[int] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._beat_until_stopped, daemon=True)

    def __enter__(self) -> Heartbeats:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()

    def add(self, trial_id: int) -> None:
        """Beat for `trial_id` from now on; the first beat is written before this returns, so
        the trial never sits unbeaten (a trial with no beat at all is never failed as stale)."""
        with self._lock:
            self.trial_ids.append(trial_id)
            self.storage.record_heartbeat(trial_id)  # type: ignore[attr-defined]

    def clear(self) -> None:
        with self._lock:
            self.trial_ids = []

    def _beat_until_stopped(self) -> None:
        # `record_heartbeat` of the sweep's storage (`experiments.study.SweepStorage`) lets a
        # passing outage be a missed beat, not the end of this thread.
        while not self._stop.wait(self.interval):
            with self._lock:
                for trial_id in self.trial_ids:
                    self.storage.record_heartbeat(trial_id)  # type: ignore[attr-defined]
