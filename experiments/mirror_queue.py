"""The MLflow mirror on a thread of its own, so that training never waits on it.

    with MirrorQueue(tracker) as queue:      # PopulationTrials.run
        queue.put(frozen_trial)              # after its settings are stored / after its tell
        queue.check()                        # a safe point: an outage past the wait raises here
        queue.drain()                        # at the end: every put trial mirrored, or raise

What is put is a snapshot of a trial's record, already durable in Optuna's storage (the source
of truth); the thread makes the trial's run match it with `Mirror.sync`, which is idempotent.
Per trial only the newest snapshot waits: a finished one replaces a running one (never the
reverse), so a run is never set back to RUNNING after its end was written. A running snapshot
waits `START_DELAY_SECONDS` before it is mirrored: a trial that ends sooner (most trials of a
short study's populations) costs one sync, its end, not two; a longer one shows in MLflow as
RUNNING from then on. The snapshots due together (a pass's members, told one after another)
are taken together, and their runs found or created with one search of the tracking store
(`Mirror.sync`'s `alongside`). A running snapshot is tried once
(as the single-trial sweep does at a trial's start); a finished one is retried for
--tracking-wait-seconds, then the `TrackingUnavailable` is raised on the main thread at its
next `check()` or `drain()`. What the queue still held when the process died is repaired by
the next worker's or `python -m experiments.reconcile`'s reconcile.

Only this thread calls the mirror while the queue is open: the main thread calls it again
after `drain()` or `close()`, which join the thread. With `apart=True` (a population's queue,
on Linux) the thread does not sync itself: it hands each snapshot to the mirror's child process
(`experiments.mirror_process`) and waits on its pipe, so MLflow's Python never holds the
training's GIL; if the child dies, the thread syncs from then on.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from optuna.trial import FrozenTrial

from experiments.interrupts import GATE
from experiments.mirror import TrackingUnavailable
from experiments.mirror_process import ChildGone, MirrorApart, apart_allowed
from experiments.trial_tracker import TrialTracker

START_DELAY_SECONDS = 5.0
"""How long a running trial's snapshot waits before its run is created: a finished snapshot
arriving meanwhile replaces it (MLflow's SQL store costs ~10 ms of CPU per call here)."""


class MirrorQueue:
    """Trials waiting to be mirrored, newest snapshot per trial, and the thread that does it."""

    def __init__(self, tracker: TrialTracker, *, apart: bool = False) -> None:
        self.tracker = tracker
        self._apart_wanted = apart and apart_allowed()
        self._apart: MirrorApart | None = None
        self._waiting: OrderedDict[int, FrozenTrial] = OrderedDict()
        self._since: dict[int, float] = {}
        """When each waiting trial was first put (a running snapshot waits from then)."""
        self._flushing = False
        self._busy = False
        self._closing = False
        self._error: BaseException | None = None
        self._condition = threading.Condition()
        self._thread = threading.Thread(target=self._work, name="mlflow-mirror", daemon=True)

    def __enter__(self) -> MirrorQueue:
        if self._apart_wanted:  # forked first: the child sets its mirror's `stopping` itself
            self._apart = MirrorApart.start(self.tracker.mirror)
        self.tracker.mirror.stopping = self._stopping
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def put(self, trial: FrozenTrial) -> None:
        with self._condition:
            waiting = self._waiting.get(trial._trial_id)
            if waiting is not None and waiting.state.is_finished():
                return  # the finished snapshot waiting already is the newer one
            self._waiting[trial._trial_id] = trial
            self._since.setdefault(trial._trial_id, time.monotonic())
            self._condition.notify_all()

    def check(self) -> None:
        """Raise on this (the main) thread the outage the mirror's thread gave up on (again at
        every later check: the thread has stopped)."""
        with self._condition:
            error = self._error
        if error is not None:
            raise error

    def drain(self) -> None:
        """Wait until every trial put is mirrored (or the mirror gave up, which raises). A safe
        point: a signal stops the wait (the rest is mirrored with one try, or by reconcile)."""
        with self._condition:
            self._flushing = True  # running snapshots left now go at once
            self._condition.notify_all()
            while (self._waiting or self._busy) and self._error is None:
                self._condition.wait(timeout=0.2)
                GATE.raise_pending()
        self.check()

    def close(self) -> None:
        """Stop after the sync in progress (its retries cut short); what waits is dropped, for
        `TrialTracker.sync_unsynced` or reconcile to mirror."""
        with self._condition:
            self._closing = True
            self._condition.notify_all()
        apart = self._apart  # the thread may drop it meanwhile (a dead child)
        if apart is not None:
            apart.stop()  # its retries cut short, as this thread's would be
        if self._thread.is_alive():
            self._thread.join()
        if apart is not None:
            apart.close()
            self._apart = None
        self.tracker.mirror.stopping = None

    def _stopping(self) -> bool:
        return self._closing

    def _next(self) -> list[FrozenTrial]:
        """Every waiting snapshot that is due (none once closing), waiting for one: a pass's
        members are put one by one, and taken together their runs are found or created with
        one search of the tracking store (`Mirror.sync`'s `alongside`)."""
        with self._condition:
            self._busy = False
            self._condition.notify_all()
            while not self._closing:
                due, wait = self._due()
                if due:
                    self._busy = True
                    for trial_id in due:
                        self._since.pop(trial_id, None)
                    return [self._waiting.pop(trial_id) for trial_id in due]
                self._condition.wait(wait)
            return []

    def _due(self) -> tuple[list[int], float | None]:
        """(the due trials' ids, None), or ([], seconds until the next is due or None)."""
        now, soonest, due = time.monotonic(), None, []
        for trial_id, trial in self._waiting.items():
            left = self._since[trial_id] + START_DELAY_SECONDS - now
            if trial.state.is_finished() or self._flushing or left <= 0:
                due.append(trial_id)
            else:
                soonest = left if soonest is None else min(soonest, left)
        return due, (None if due else soonest)

    def _work(self) -> None:
        while trials := self._next():
            for index, trial in enumerate(trials):
                if self._closing:
                    return  # the rest is left to `TrialTracker.sync_unsynced` or reconcile
                if not self._mirror(trial, alongside=trials[index + 1 :]):
                    return

    def _mirror(self, trial: FrozenTrial, alongside: list[FrozenTrial]) -> bool:
        """Mirror one snapshot; False once the queue has failed (the thread stops)."""
        try:
            self._sync(trial, alongside)
        except TrackingUnavailable as error:
            if not trial.state.is_finished():
                self.tracker.log(
                    f"trial {trial.number} runs without its MLflow run for now: {error}"
                )
                return True
            self._fail(error)
            return False
        except BaseException as error:  # a bug: stop, and let the main thread raise it
            self._fail(error)
            return False
        return True

    def _sync(self, trial: FrozenTrial, alongside: list[FrozenTrial]) -> None:
        """`tracker.mirror_now`, in the mirror's child process while it lives."""
        apart = self._apart
        if apart is not None:
            try:
                patient = trial.state.is_finished()
                self.tracker.mirror.seconds += apart.sync(trial, alongside, patient=patient)
                self.tracker.mirrored(trial)
                return
            except ChildGone:
                self._apart = None  # this thread syncs from now on; `close` reaps the child
                apart.close()
        self.tracker.mirror_now(trial, alongside=alongside)

    def _fail(self, error: BaseException) -> None:
        with self._condition:
            self._error = error
            self._busy = False
            self._condition.notify_all()
