"""One trial: Optuna's choice → `TrainConfig` → `softmaxreg.train` → a record stored on the trial.

    objective = Objective(sweep, train_config, data, environment_tags, worker_id)
    study.optimize(objective, n_trials=10)

Everything a trial measures is stored on the trial itself, in Optuna's storage, as user
attributes: `settings` and `environment` when it starts, `epochs` (per-epoch figures, one list
per metric) after every epoch, the summary figures when it ends, and `fail_reason` before it is
told FAIL (divergence, Ctrl-C, SIGTERM, SIGHUP). Optuna's storage is the source of truth; the
MLflow run (`experiments.mirror`) is a copy rebuilt from these attributes, and nothing here
knows MLflow. A worker killed with -9 loses only the epoch it was in.

Each trial trains `--repeats` seeds; the first seed's best validation accuracy so far is
reported per epoch to the pruner (one learning curve per trial) and the objective is the mean
over the seeds. Best-so-far, not the epoch's own value: the objective is the best epoch's
accuracy, so the pruner compares like with like, and a pruned trial's value (Optuna keeps its
last intermediate value) is the `best_val_accuracy` its MLflow run shows, not a dip after it.
A COMPLETE trial also stores its first seed's final weights (`weights`, see
`experiments.weights`), from which the best trial's MLflow model is built.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import optuna

from experiments.config import SweepConfig
from experiments.interrupts import GATE, Terminated
from experiments.store_faults import StoreFault, is_store_failure
from experiments.weights import WEIGHTS_ATTR, encode_weights
from softmaxreg.config import TrainConfig
from softmaxreg.data import DataSplits
from softmaxreg.trainer import EpochMetrics, TrainingDiverged, TrainResult, train

EPOCH_FIGURES = (
    "train_loss",
    "val_loss",
    "val_accuracy",
    "test_loss",
    "test_accuracy",
    "epoch_seconds",
    "eval_seconds",
    "samples_per_second",
    "train_seconds_total",
)
"""Per-epoch figures of every trial (MLflow step = epoch); means over the seeds."""

SUMMARY_FIGURES = (
    "best_val_accuracy",
    "best_val_accuracy_std",
    "test_accuracy_at_best_val",
    "final_val_accuracy",
    "final_test_accuracy",
    "time_to_target_seconds",
    "total_train_seconds",
    "steady_epoch_seconds",
    "steady_samples_per_second",
    "warmup_epoch_seconds",
    "final_train_loss",
    "epochs_completed",
    "reached_target",
)
"""Summary figures of a trial over its seeds: user attributes in Optuna, metrics in MLflow."""

SETTING_NAMES = (
    "target_accuracy",
    "epochs",
    "seed",
    "momentum",
    "weight_decay",
    "model",
    "lr_schedule",
    "warmup_steps",
)
"""TrainConfig fields every trial records among its settings (the swept ones are its params)."""


def interruption_reason(error: BaseException) -> str:
    if isinstance(error, StoreFault):  # worded already: "disk full: /path/mlflow.db (...)"
        return str(error)
    if isinstance(error, Terminated):
        return f"interrupted by {error.signal_name}"
    if isinstance(error, KeyboardInterrupt):
        return "interrupted by Ctrl-C (SIGINT)"
    return f"error: {type(error).__name__}: {error}"


WORKER_LOST_REASON = "worker lost: no heartbeat within the grace period (killed or preempted)"


def fail_reason(trial: optuna.trial.FrozenTrial) -> str:
    """Why a FAIL trial failed; a trial failed by the heartbeat check recorded no reason."""
    if trial.state != optuna.trial.TrialState.FAIL:
        return ""
    return str(trial.user_attrs.get("fail_reason") or "") or WORKER_LOST_REASON


def summarise(results: list[TrainResult]) -> dict[str, float]:
    """Trial figures over its seeds: means (std for best validation accuracy)."""
    best_val = [r.best_val_accuracy for r in results]
    times = [r.time_to_target_seconds for r in results]
    return {
        "best_val_accuracy": statistics.fmean(best_val),
        "best_val_accuracy_std": statistics.pstdev(best_val) if len(best_val) > 1 else 0.0,
        "test_accuracy_at_best_val": statistics.fmean(r.test_accuracy_at_best_val for r in results),
        "final_val_accuracy": statistics.fmean(r.final_val_accuracy for r in results),
        "final_test_accuracy": statistics.fmean(r.final_test_accuracy for r in results),
        "time_to_target_seconds": (
            math.nan
            if any(t is None for t in times)
            else statistics.fmean(t for t in times if t is not None)
        ),
        "total_train_seconds": statistics.fmean(r.total_train_seconds for r in results),
        "steady_epoch_seconds": statistics.fmean(r.steady_epoch_seconds for r in results),
        "steady_samples_per_second": statistics.fmean(r.steady_samples_per_second for r in results),
        "warmup_epoch_seconds": statistics.fmean(r.warmup_epoch_seconds for r in results),
        "final_train_loss": statistics.fmean(r.last.train_loss for r in results),
        "epochs_completed": float(len(results[0].epochs)),
        "reached_target": statistics.fmean(float(t is not None) for t in times),
    }


def _finite(figures: dict[str, float]) -> dict[str, float | None]:
    """JSON has no NaN: a figure not reached is stored as None."""
    return {name: None if math.isnan(value) else value for name, value in figures.items()}


@dataclass
class EpochRecorder:
    """Collects each seed's epochs and stores the per-epoch table on the trial after each one."""

    trial: optuna.Trial
    seeds: list[int]
    report_to_pruner: bool
    signals_held: bool = False
    """The caller holds signals around every call (`GATE.hold`), e.g. until each member of a
    population has stored the epoch; otherwise each call is a `GATE.deferred` block."""
    table_stored_by_caller: bool = False
    """The caller stores `table()` itself after the epoch (a population: every member's in one
    write, `experiments.trial_records`); `unstored` says a new epoch awaits it."""
    histories: list[list[tuple[EpochMetrics, int]]] = field(default_factory=list)
    unstored: bool = False

    def on_epoch(self, seed_index: int, metrics: EpochMetrics) -> bool:
        """The trainer's callback for seed `seed_index`; True asks it to stop (pruned)."""
        while len(self.histories) <= seed_index:
            self.histories.append([])
        self.histories[seed_index].append((metrics, int(time.time() * 1000)))
        if self.signals_held:
            return self._store(seed_index, metrics)
        with GATE.deferred():  # a signal stops training here, after the epoch is stored
            return self._store(seed_index, metrics)

    def _store(self, seed_index: int, metrics: EpochMetrics) -> bool:
        if self.table_stored_by_caller:
            self.unstored = True
        else:
            self.trial.set_user_attr("epochs", self.table())
        if seed_index == 0 and self.report_to_pruner:
            # Only the first seed's curve is reported: one learning curve per trial.
            best_so_far = max(m.val_accuracy for m, _ in self.histories[0])
            self.trial.report(best_so_far, metrics.epoch)
            return self.trial.should_prune()
        return False

    def table(self) -> dict[str, list[float]]:
        """Per epoch: `step`, `time_ms` and each figure's mean over the seeds that reached it,
        plus each seed's validation accuracy when there are several."""
        columns: dict[str, list[float]] = {"step": [], "time_ms": []}
        for name in EPOCH_FIGURES:
            columns[name] = []
        longest = max((len(h) for h in self.histories), default=0)
        for index in range(longest):
            reached = [h[index] for h in self.histories if len(h) > index]
            columns["step"].append(index + 1)
            columns["time_ms"].append(reached[0][1])
            for name in EPOCH_FIGURES:
                columns[name].append(statistics.fmean(getattr(m, name) for m, _ in reached))
        if len(self.seeds) > 1:
            for seed, history in zip(self.seeds, self.histories, strict=False):
                columns[f"seed_{seed}.val_accuracy"] = [m.val_accuracy for m, _ in history]
        return columns


@dataclass
class Objective:
    """The function Optuna calls per trial (a class, so its parts are readable on their own)."""

    sweep: SweepConfig
    train_config: TrainConfig
    data: DataSplits
    environment: dict[str, str]
    worker_id: int
    fixed_settings: dict[str, object]
    """Settings shared by every trial besides the training ones (data, optimizer, objective)."""
    on_start: Callable[[optuna.Trial], None] | None = None
    """Called once the trial's settings are stored (the sweep mirrors the new run there)."""

    @property
    def seeds(self) -> list[int]:
        return [self.train_config.seed + k for k in range(self.sweep.repeats)]

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        config = self.config_for(trial)
        recorder = EpochRecorder(trial, self.seeds, report_to_pruner=self.reports_to_pruner)
        try:
            self.begin(trial, config)  # inside: a fault mirroring its start is its reason
            results = self._train_seeds(config, recorder)
        except TrainingDiverged as error:
            self.record_divergence(trial, error)
            raise
        except BaseException as error:  # Ctrl-C, SIGTERM, SIGHUP or a bug: say so, then FAIL
            self.record_interruption(trial, error)
            raise
        return self.conclude(trial, results)

    @property
    def reports_to_pruner(self) -> bool:
        """Only a pruner reads intermediate values: without one, a report per epoch would be a
        storage write per epoch for nothing (the epochs table holds every figure)."""
        return not self.sweep.multi_objective and self.sweep.pruner != "none"

    def config_for(self, trial: optuna.Trial) -> TrainConfig:
        """The trial's training settings: the study's choices on top of the fixed ones."""
        batch_size = trial.suggest_categorical("batch_size", list(self.sweep.batch_sizes))
        lr = trial.suggest_float("lr", *self.sweep.lr_range, log=True)
        config = replace(self.train_config, batch_size=batch_size, lr=lr)
        if self.sweep.lr_schedules:
            schedule = trial.suggest_categorical("lr_schedule", list(self.sweep.lr_schedules))
            config = replace(config, lr_schedule=schedule)
        return config

    def begin(self, trial: optuna.Trial, config: TrainConfig, population: int = 1) -> None:
        """Store the trial's settings and announce it (before any training)."""
        self._store_settings(trial, config, population)
        if self.on_start is not None:
            self.on_start(trial)

    def record_divergence(self, trial: optuna.Trial, error: TrainingDiverged) -> None:
        trial.set_user_attr("fail_reason", str(error))

    def record_interruption(self, trial: optuna.Trial, error: BaseException) -> None:
        """Store why the trial stops; one attempt where a store's fault is the reason (Optuna's
        storage may be what failed: the worker's loop then fails the trial once it answers)."""
        with GATE.deferred():
            try:
                trial.set_user_attr("fail_reason", interruption_reason(error))
            except Exception as failure:
                if not is_store_failure(failure):
                    raise

    def conclude(
        self, trial: optuna.Trial, results: list[TrainResult]
    ) -> float | tuple[float, float]:
        """Store the trial's summary; raise `TrialPruned` if it stopped early, else return the
        objective value(s), with the first seed's weights stored."""
        for name, value in self.conclusion_attrs(results).items():
            trial.set_user_attr(name, value)
        return self.outcome(results)

    def conclusion_attrs(self, results: list[TrainResult]) -> dict[str, object]:
        """What a finished trial stores before it is told: its summary figures, each seed's
        when there are several, and (unless pruned) the first seed's weights."""
        summary = summarise(results)
        attrs: dict[str, object] = {
            name: None if math.isnan(summary[name]) else summary[name] for name in SUMMARY_FIGURES
        }
        if len(results) > 1:
            attrs["per_seed"] = [_finite(r.summary()) for r in results]
        if not results[-1].stopped_early:
            attrs[WEIGHTS_ATTR] = encode_weights(results[0].model)
        return attrs

    def outcome(self, results: list[TrainResult]) -> float | tuple[float, float]:
        """The objective value(s) to tell; `TrialPruned` if the trial stopped early."""
        if results[-1].stopped_early:
            last = results[-1].last
            raise optuna.TrialPruned(
                f"pruned after epoch {last.epoch}: best val accuracy "
                f"{results[-1].best_val_accuracy:.4f}"
            )
        summary = summarise(results)
        accuracy = summary["best_val_accuracy"]
        if self.sweep.multi_objective:
            seconds = summary["time_to_target_seconds"]
            return accuracy, (math.inf if math.isnan(seconds) else seconds)
        return accuracy

    def _store_settings(self, trial: optuna.Trial, config: TrainConfig, population: int) -> None:
        for name, value in self.start_attrs(trial, config, population).items():
            trial.set_user_attr(name, value)

    def start_attrs(
        self, trial: optuna.Trial, config: TrainConfig, population: int
    ) -> dict[str, object]:
        """What a trial stores before it trains: settings, environment, worker."""
        settings = {name: getattr(config, name) for name in SETTING_NAMES}
        settings.update(repeats=self.sweep.repeats, seeds=self.seeds, device=config.device)
        # Trained beside population - 1 other trials: its time figures are the shared pass's.
        settings.update(population=population)
        settings.update(self.fixed_settings)
        attrs: dict[str, object] = {
            "settings": settings,
            "environment": self.environment,
            "worker": self.worker_id,
        }
        # A trial queued again after its worker died inherits the dead trial's attributes:
        # every one that describes a run is overwritten here, before training starts.
        inherited = trial.user_attrs  # one read; a write per attribute is what costs
        for name, empty in (("epochs", {}), ("fail_reason", "")):
            if inherited.get(name):
                attrs[name] = empty
        return attrs

    def _train_seeds(self, config: TrainConfig, recorder: EpochRecorder) -> list[TrainResult]:
        results = []
        for index, seed in enumerate(self.seeds):
            callback = functools.partial(recorder.on_epoch, index)
            with GATE.interruptible():
                result = train(replace(config, seed=seed), self.data, callback)
            results.append(result)
            if result.stopped_early:
                break
        return results
