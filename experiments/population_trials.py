"""--population K: trials asked of Optuna K at a time and trained together, then told one by one.

    PopulationTrials(study, objective, tracker, size=8).run(TrialBudget(40), timeout=None)
    # instead of study.optimize(objective, n_trials=40, callbacks=[tracker])

Ask-and-tell: a pass takes the batch size with the fewest trials so far (or that of the queued
trials, which come first) and asks the study's sampler for K learning rates at it
(`optuna.samplers.PartialFixedSampler` over the study's sampler, all K from one read of the
study: `experiments.pass_sampler`; TPE's `constant_liar` makes them differ from each other and
from trials running elsewhere), so the batch sizes take turns and
each gets its learning rate searched. Trials whose batch size is fixed in advance (a retry of a
dead worker's trial, a grid point) may still differ (another worker can pop the queue in
between): each batch size of a pass trains as its own population. Every member is an ordinary
trial: its settings, per-epoch figures, pruning reports, summary and result are stored on it
exactly as `Objective` stores them for a trial trained alone, and it is mirrored to its own
MLflow run as it starts and ends. Only its time figures differ: they are those of the shared
pass (K models), and `settings.population` says how many shared it.

Bookkeeping off the hot path: the pass's members store together, each kind of record in one
storage transaction for all of them (`experiments.trial_records`): their settings before
training, their epoch tables after each epoch, their summaries before any is told; each is then
told on its own (Optuna's `tell`), so a COMPLETE trial always holds its whole record. MLflow
is written from snapshots of those durable records by a process of its own, fed by a thread
(`experiments.mirror_queue`, `experiments.mirror_process`: on the training's thread or GIL,
MLflow's Python slowed the passes), drained once the worker's last pass is told.

Liveness: one thread beats for every member while the pass runs (`experiments.heartbeats`), so
a worker killed mid-pass leaves each member to be failed (and retried) by the next worker or
reconcile, as in single mode. Interrupted (Ctrl-C, SIGTERM, SIGHUP), every member still running
is stored FAIL with the reason before the signal goes on.
"""

from __future__ import annotations

import copy
import functools
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from experiments.heartbeats import Heartbeats
from experiments.interrupts import GATE
from experiments.mirror_queue import MirrorQueue
from experiments.objective import EpochRecorder, Objective
from experiments.pass_batch_size import (
    fix_batch_size,
    leading_run,
    least_tried_batch_size,
    queued_batch_sizes,
)
from experiments.pass_sampler import Point, Presampled, ask_point, sample_points
from experiments.store_faults import is_store_failure
from experiments.trial_budget import TrialBudget
from experiments.trial_records import write_user_attrs
from experiments.trial_tracker import TrialTracker
from softmaxreg.config import TrainConfig
from softmaxreg.population import train_population
from softmaxreg.trainer import EpochMetrics, TrainingDiverged, TrainResult

LOGGER = optuna.logging.get_logger("optuna.population")
"""Under Optuna's logger: the same handler, format and --quiet level as its per-trial lines."""


@dataclass
class Member:
    """One trial of a population and what it has produced so far."""

    trial: optuna.Trial
    config: TrainConfig
    recorder: EpochRecorder
    results: list[TrainResult] = field(default_factory=list)
    error: TrainingDiverged | None = None
    told: bool = False
    """The trial's result is stored (Optuna was told); nothing may tell it again."""

    @property
    def training(self) -> bool:
        """Still to train its next seed: neither diverged nor stopped by the pruner."""
        return self.error is None and not (self.results and self.results[-1].stopped_early)


class PopulationTrials:
    """This worker's trials, K at a time; the ask-and-tell counterpart of `study.optimize`."""

    def __init__(
        self, study: optuna.Study, objective: Objective, tracker: TrialTracker, size: int
    ) -> None:
        self.study, self.objective, self.tracker, self.size = study, objective, tracker, size
        self.queue: MirrorQueue | None = None
        # The sampler of the pass's snapshots (`experiments.pass_sampler`): the study's, copied
        # before its first use (same kind, seed and settings), since a sampler's search-space
        # cache binds it to the first study it samples for.
        self.snapshot_sampler = copy.deepcopy(study.sampler)

    def run(self, budget: TrialBudget, timeout: float | None) -> None:
        """Passes while `budget` grants trials, each claimed just before it is asked; none
        started after `timeout` seconds. Returns once every trial's MLflow run matches its
        record."""
        started = time.monotonic()
        interval = self.study._storage.get_heartbeat_interval()  # type: ignore[attr-defined]
        with (
            Heartbeats(self.study._storage, interval or 10) as beats,
            MirrorQueue(self.tracker, apart=True) as self.queue,
        ):
            while timeout is None or time.monotonic() - started < timeout:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ExperimentalWarning)
                    fail_stale_trials(self.study)  # what study.optimize does before each trial
                GATE.raise_pending()  # a signal after the last pass: nothing more is claimed
                granted = budget.claim(self.size, population=self.size)
                if granted == 0:
                    break
                members = self.ask(granted, beats)
                budget.release(granted - len(members))  # the queue cut the pass short
                try:
                    for group in by_batch_size(members):
                        self.train_and_tell(group)
                except BaseException as error:  # Ctrl-C, SIGTERM, SIGHUP, an outage, a bug
                    self.fail_untold_if_possible(members, error)
                    raise
                beats.clear()
                self.tracker.show_best(self.study)
                self.queue.check()  # an outage the mirror's thread gave up on stops here
            self.queue.drain()

    def ask(self, count: int, beats: Heartbeats) -> list[Member]:
        """Up to `count` trials at one batch size, each with a learning rate from the study's
        sampler (a grid point is a whole configuration: the grid sampler chooses alone).

        Queued trials come first, as `study.ask` pops them: a pass takes the queue's leading
        run of one batch size (a dead worker's retries, enqueued points) and, when the queue
        ends there, fills up with new trials at that batch size; otherwise the batch size with
        the fewest trials so far."""
        base = self.study.sampler
        if self.objective.sweep.sampler == "grid":
            return [self._ask_one(beats) for _ in range(count)]
        trials = self.study.get_trials(deepcopy=False)  # one read for the queue and the counts
        queued = queued_batch_sizes(trials)
        run = leading_run(queued[:count])
        if run < len(queued):
            count = run  # another batch size is queued next: it gets a pass of its own
        batch_size = queued[0] if queued else None
        if batch_size is None:
            batch_size = least_tried_batch_size(trials, self.objective.sweep.batch_sizes)
        # The sampler chooses the trials the queue does not hold, all from this one read.
        fresh = count - min(len(queued), count)
        points = sample_points(
            self.study, fix_batch_size(batch_size, self.snapshot_sampler), trials, fresh,
            self.objective.config_for,
        )  # fmt: skip
        queued_first = [{}] * (count - fresh)  # their params are fixed, or left to `base`
        self.study.sampler = Presampled(
            queued_first + [p.params for p in points], fix_batch_size(batch_size, base)
        )
        try:
            # The queue's trials first, popped by `study.ask`, then the sampled points, each
            # created holding its params (`pass_sampler.ask_point`).
            return [self._ask_one(beats) for _ in queued_first] + [
                self._ask_one(beats, point) for point in points
            ]
        finally:
            self.study.sampler = base

    def _ask_one(self, beats: Heartbeats, point: Point | None = None) -> Member:
        if point is not None:
            trial = ask_point(self.study, point)
        else:
            with warnings.catch_warnings():
                # "Heartbeat of storage is supposed to be used with Study.optimize":
                # `Heartbeats` does what optimize's thread would.
                warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
                trial = self.study.ask()
        self.tracker.hold(trial._trial_id)
        beats.add(trial._trial_id)
        config = self.objective.config_for(trial)
        recorder = EpochRecorder(
            trial,
            self.objective.seeds,
            report_to_pruner=self.objective.reports_to_pruner,
            signals_held=True,  # by `on_member_epoch` until `on_epoch_end`
            table_stored_by_caller=True,  # every member's at once, by `store_epoch`
        )
        return Member(trial, config, recorder)

    def train_and_tell(self, members: list[Member]) -> None:
        """Train one batch size's members together, seed by seed; store every member's
        summary, tell each, and queue each for the mirror."""
        self.begin(members)
        for index, seed in enumerate(self.objective.seeds):
            going_on = [m for m in members if m.training]
            if not going_on:
                break
            self.train_seed(going_on, index, seed)
        write_user_attrs(self.study, [(m.trial, self.conclusion(m)) for m in members])
        for member in members:
            trial = self.tell(member)
            self.tracker.finished(trial)
            self.queue.put(trial)  # type: ignore[union-attr]
        GATE.raise_pending()  # a signal held during the writes stops the worker here

    def begin(self, members: list[Member]) -> None:
        """Store every member's settings in one write, then queue their runs' creation."""
        writes = [
            (m.trial, self.objective.start_attrs(m.trial, m.config, population=len(members)))
            for m in members
        ]
        with GATE.deferred():  # a signal before training: every member is failed with it
            write_user_attrs(self.study, writes)
            # One read for every member's snapshot (their settings included) for the mirror.
            running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            by_id = {trial._trial_id: trial for trial in running}
            for member in members:
                self.tracker.hold(member.trial._trial_id)  # held since asked: once
                if member.trial._trial_id in by_id:
                    self.queue.put(by_id[member.trial._trial_id])  # type: ignore[union-attr]

    def train_seed(self, members: Sequence[Member], index: int, seed: int) -> None:
        configs = [replace(m.config, seed=seed) for m in members]
        callbacks = [functools.partial(on_member_epoch, m.recorder, index) for m in members]
        with GATE.interruptible():
            results = train_population(
                configs,
                self.objective.data,
                callbacks,
                on_epoch_end=functools.partial(self.store_epoch, members),
            )
        for member, result in zip(members, results, strict=True):
            member.results.append(result)
            member.error = result.error

    def store_epoch(self, members: Sequence[Member], epoch: int) -> None:
        """Every member's epoch table that has a new epoch, in one write; then a safe point."""
        writes = []
        for member in members:
            if member.recorder.unstored:
                member.recorder.unstored = False
                writes.append((member.trial, {"epochs": member.recorder.table()}))
        write_user_attrs(self.study, writes)
        on_epoch_end(epoch)

    def conclusion(self, member: Member) -> dict[str, object]:
        """What the member stores before it is told: why it failed, or its summary."""
        if member.error is not None:
            return {"fail_reason": str(member.error)}  # as `Objective.record_divergence`
        return self.objective.conclusion_attrs(member.results)

    def tell(self, member: Member) -> FrozenTrial:
        """Tell the member's outcome (its record is stored) as `study.optimize` would have;
        log one line."""
        trial = member.trial
        member.told = True
        if member.error is not None:
            LOGGER.warning(f"Trial {trial.number} failed: {member.error}")
            return self._tell(trial, state=TrialState.FAIL)
        try:
            values = self.objective.outcome(member.results)
        except optuna.TrialPruned as pruned:
            LOGGER.info(f"Trial {trial.number} pruned. {pruned}")
            return self._tell(trial, state=TrialState.PRUNED)
        LOGGER.info(
            f"Trial {trial.number} finished with value: {values} and parameters: {trial.params}."
        )
        return self._tell(trial, values)

    def _tell(self, trial: optuna.Trial, values=None, state: TrialState | None = None):
        try:
            return self.study.tell(trial, values, state=state)
        except RuntimeError as error:
            # The grid sampler asks the study to stop once its last point is told, which Optuna
            # allows only inside study.optimize. The trial is stored by then (tell stores it in
            # a `finally`), and `trials_to_run` already stops this worker at the grid's end.
            if "Study.stop" not in str(error):
                raise
            return self.study._storage.get_trial(trial._trial_id)

    def fail_untold_if_possible(self, members: list[Member], error: BaseException) -> None:
        """`fail_untold`, once: where Optuna's storage is what failed (an outage, a full disk),
        the members stay RUNNING for the worker's loop to fail once the storage answers, or
        for the heartbeat check and reconcile."""
        try:
            self.fail_untold(members, error)
        except Exception as failure:
            if not is_store_failure(failure):
                raise

    def fail_untold(self, members: list[Member], error: BaseException) -> None:
        """Every member not told yet is stored FAIL with the reason (as Optuna does for the
        one trial `study.optimize` runs when interrupted)."""
        for member in members:
            if not member.told:
                member.told = True
                self.objective.record_interruption(member.trial, error)
                self._tell(member.trial, state=TrialState.FAIL)


def on_member_epoch(recorder: EpochRecorder, seed_index: int, metrics: EpochMetrics) -> bool:
    """A member's epoch, stored; a signal now waits until every member has stored this epoch
    (`on_epoch_end`), so an interrupted population's runs all end at the same epoch."""
    GATE.hold()
    return recorder.on_epoch(seed_index, metrics)


def on_epoch_end(_epoch: int) -> None:
    GATE.release()


def by_batch_size(members: list[Member]) -> list[list[Member]]:
    """Members grouped by batch size, groups in order of their first member."""
    groups: dict[int, list[Member]] = {}
    for member in members:
        groups.setdefault(member.config.batch_size, []).append(member)
    return list(groups.values())
