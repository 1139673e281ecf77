"""This worker's view of its trials: mirror each one as it starts and ends, count, show progress.

    tracker = TrialTracker(study, mirror, progress_bar, log)
    objective = Objective(..., on_start=tracker.on_start)
    study.optimize(objective, callbacks=[tracker])

A run is created (RUNNING) when a trial starts, so `mlflow ui` shows live trials, and completed
from the trial's record when it ends. The start is one attempt: if the tracking store is down,
training goes on and the end of the trial waits for it (bounded by --tracking-wait-seconds).
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from experiments.interrupts import GATE
from experiments.mirror import Mirror, TrackingUnavailable
from experiments.store_faults import is_store_failure
from softmaxreg.trainer import TrainingDiverged


class TrialTracker:
    """Mirrors this worker's trials and keeps its own counts (the study's are in the report)."""

    def __init__(
        self, study: optuna.Study, mirror: Mirror, progress: tqdm, log: Callable[[str], None]
    ) -> None:
        self.study = study
        self.mirror = mirror
        self.progress = progress
        self.log = log
        self.own_states: Counter[str] = Counter()
        self.started: list[int] = []
        """Trial ids this worker started, in order."""
        self.synced: set[int] = set()
        self.counted: set[int] = set()

    def hold(self, trial_id: int) -> None:
        """This worker holds the trial from now on (asked of Optuna, not finished yet)."""
        if trial_id not in self.started:
            self.started.append(trial_id)

    def on_start(self, trial: optuna.Trial) -> None:
        self.hold(trial._trial_id)
        frozen = self.study._storage.get_trial(trial._trial_id)
        try:
            self.mirror.sync(frozen, patient=False)
        except TrackingUnavailable as error:
            self.log(f"trial {trial.number} starts without its MLflow run for now: {error}")
        GATE.raise_pending()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna's after-trial callback: the trial is finished and stored; mirror it."""
        self._count(trial)
        self.mirror.sync(trial)
        self.synced.add(trial._trial_id)
        self.progress.update()
        self.progress.set_postfix_str(best_so_far(study), refresh=True)
        GATE.raise_pending()  # a signal held during the writes stops the worker here

    def finished(self, trial: FrozenTrial) -> None:
        """A population member was told (`experiments.population_trials`; its mirror is queued):
        count it and move the progress bar."""
        self._count(trial)
        self.progress.update()

    def show_best(self, study: optuna.Study) -> None:
        """The best trial so far on the progress bar, once per pass (a read of the study)."""
        if not self.progress.disable:
            self.progress.set_postfix_str(best_so_far(study), refresh=True)

    def mirror_now(self, trial: FrozenTrial, alongside: Sequence[FrozenTrial] = ()) -> None:
        """Make the trial's run match this snapshot: one try while it runs, patient once it
        has finished (then it counts as mirrored); the runs of the snapshots `alongside` are
        found or created with its. Called by `MirrorQueue`'s thread."""
        self.mirror.sync(trial, patient=trial.state.is_finished(), alongside=alongside)
        self.mirrored(trial)

    def mirrored(self, trial: FrozenTrial) -> None:
        """The trial's run matches this snapshot (here or in the mirror's child process): once
        the trial has finished, it counts as mirrored."""
        if trial.state.is_finished():
            self.synced.add(trial._trial_id)

    def _count(self, trial: FrozenTrial) -> None:
        if trial._trial_id in self.counted:
            return
        self.counted.add(trial._trial_id)
        self.own_states[trial.state.name] += 1

    def fail_held(self, reason: str) -> None:
        """Once Optuna's storage answers again after an outage: every trial this worker held
        that is still RUNNING is stored FAIL with `reason`, and every one not mirrored yet
        (finished just before the outage, or failed now) is mirrored."""
        storage = self.study._storage
        for trial_id in [t for t in self.started if t not in self.synced]:
            if storage.get_trial(trial_id).state == TrialState.RUNNING:
                with contextlib.suppress(UpdateFinishedTrialError):  # another failed it meanwhile
                    storage.set_trial_user_attr(trial_id, "fail_reason", reason)
                    storage.set_trial_state_values(trial_id, TrialState.FAIL)
                    self.log(f"trial {storage.get_trial(trial_id).number} failed: {reason}")
            trial = storage.get_trial(trial_id)
            if trial.state.is_finished():
                self(self.study, trial)

    def sync_unsynced(self, *, patient: bool) -> None:
        """Mirror the trials this worker started but did not finish mirroring (interrupted)."""
        for trial_id in self.started:
            if trial_id not in self.synced:
                trial = self.study._storage.get_trial(trial_id)
                if trial.state.is_finished():
                    self._count(trial)
                self.mirror.sync(trial, patient=patient)
                self.synced.add(trial_id)


def best_so_far(study: optuna.Study) -> str:
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return "best: none yet"
    if len(study.directions) > 1:
        return f"Pareto front: {len(study.best_trials)} trials"
    best = max(complete, key=lambda t: t.value)
    return (
        f"best val acc {best.value:.4f} (#{best.number}: bs {best.params['batch_size']}, "
        f"lr {best.params['lr']:.3g})"
    )


class _OneLineFailures(logging.Filter):
    """Optuna logs a failed trial with its traceback. A diverging lr needs one line, not a stack
    trace (the reason is in the trial's `fail_reason`); an interrupted trial needs none, since
    the sweep prints its own line for Ctrl-C, SIGTERM and SIGHUP, nor does one cut off by a
    store's fault (an outage, a full disk: `experiments.store_faults`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, KeyboardInterrupt) or (error and is_store_failure(error)):
            return False  # the sweep says it in one line of its own
        if isinstance(error, TrainingDiverged):
            record.exc_info = None
            record.exc_text = None
        return True


@contextlib.contextmanager
def quiet_failures() -> Iterator[None]:
    # On Optuna's handlers, not its logger: a logger's filters skip records of child loggers
    # (optuna.study._optimize logs the failures), a handler's see them all.
    handlers = logging.getLogger("optuna").handlers
    one_line = _OneLineFailures()
    for handler in handlers:
        handler.addFilter(one_line)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(one_line)
