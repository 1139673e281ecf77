"""What a training run returns and reports: `TrainResult`, `EpochMetrics`, `TrainingDiverged`.

    result = train(config, data, callback)        # softmaxreg.trainer (or train_population)
    result.final_test_accuracy, result.summary()  # figures of the run; result.epochs per epoch

Plain data, no training code: the trainer (`softmaxreg.trainer`) and the population
(`softmaxreg.population`) build them; the sweep stores them on its trials.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from softmaxreg.config import TrainConfig


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: int, step: int, loss: float, lr: float) -> None:
        self.epoch, self.step, self.loss, self.lr = epoch, step, loss, lr
        super().__init__(
            f"training diverged at epoch {epoch}, step {step}: loss is {loss} "
            f"(learning rate {lr:g} is probably too large)"
        )


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch measured. Times are seconds, read after synchronising the device."""

    epoch: int
    """1-based epoch number."""
    train_loss: float
    """Mean training loss over all steps of the epoch (not the last batch)."""
    val_loss: float
    val_accuracy: float
    test_loss: float
    test_accuracy: float
    """Reported only; never used to choose anything."""
    epoch_seconds: float
    """Wall time of the training pass (shuffle, forward, backward, update), evaluation excluded."""
    eval_seconds: float
    """Wall time of evaluating on validation and test splits."""
    samples_per_second: float
    """Training examples processed per second of `epoch_seconds`."""
    train_seconds_total: float
    """Cumulative `epoch_seconds` up to and including this epoch."""
    warmup: bool
    """True for the first epoch, whose time includes one-off costs (allocations, kernel
    selection); steady-state figures exclude it."""


@dataclass
class TrainResult:
    """Everything one training run produced. `model` holds the final weights."""

    config: TrainConfig
    device: str
    epochs: list[EpochMetrics]
    time_to_target_seconds: float | None
    """Training seconds until validation accuracy first reached `config.target_accuracy`
    (checked at the end of each epoch, warm-up epoch included, evaluation excluded), else None."""
    stopped_early: bool
    """True when the callback asked to stop before `config.epochs`."""
    model: nn.Module = field(repr=False)
    threads: int = 0
    """torch intra-op threads the run used (`choose_threads`); 0 when not recorded."""

    @property
    def last(self) -> EpochMetrics:
        return self.epochs[-1]

    @property
    def best_epoch(self) -> EpochMetrics:
        """The epoch with the highest validation accuracy (earliest on ties)."""
        return max(self.epochs, key=lambda m: (m.val_accuracy, -m.epoch))

    @property
    def best_val_accuracy(self) -> float:
        return self.best_epoch.val_accuracy

    @property
    def test_accuracy_at_best_val(self) -> float:
        """Test accuracy of the epoch chosen by validation accuracy (early-stopping selection)."""
        return self.best_epoch.test_accuracy

    @property
    def final_val_accuracy(self) -> float:
        return self.last.val_accuracy

    @property
    def final_test_accuracy(self) -> float:
        return self.last.test_accuracy

    @property
    def total_train_seconds(self) -> float:
        return self.last.train_seconds_total

    @property
    def warmup_epoch_seconds(self) -> float:
        return self.epochs[0].epoch_seconds

    def _steady_median(self, figure: str) -> float:
        """Median of an epoch figure after the warm-up epoch (the warm-up one if it is alone)."""
        steady = [m for m in self.epochs if not m.warmup] or self.epochs[:1]
        return statistics.median(getattr(m, figure) for m in steady)

    @property
    def steady_epoch_seconds(self) -> float:
        """Median epoch time after the warm-up epoch (the warm-up epoch if it is the only one)."""
        return self._steady_median("epoch_seconds")

    @property
    def steady_samples_per_second(self) -> float:
        return self._steady_median("samples_per_second")

    def summary(self) -> dict[str, float]:
        """Flat summary figures, e.g. for a tracking system or a table row."""
        return {
            "best_val_accuracy": self.best_val_accuracy,
            "best_epoch": float(self.best_epoch.epoch),
            "final_val_accuracy": self.final_val_accuracy,
            "final_test_accuracy": self.final_test_accuracy,
            "test_accuracy_at_best_val": self.test_accuracy_at_best_val,
            "final_train_loss": self.last.train_loss,
            "total_train_seconds": self.total_train_seconds,
            "warmup_epoch_seconds": self.warmup_epoch_seconds,
            "steady_epoch_seconds": self.steady_epoch_seconds,
            "steady_samples_per_second": self.steady_samples_per_second,
            "time_to_target_seconds": (
                math.nan if self.time_to_target_seconds is None else self.time_to_target_seconds
            ),
            "epochs_completed": float(len(self.epochs)),
        }


Callback = Callable[[EpochMetrics], "bool | None"]
"""Called after every epoch; returning True stops training (e.g. an Optuna pruner said so)."""
