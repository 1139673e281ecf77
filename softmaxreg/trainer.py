"""The reusable trainer: `train(config, data, callback) -> TrainResult`.

    from softmaxreg import TrainConfig, load_splits, train
    result = train(TrainConfig(batch_size=100, lr=0.1, epochs=10), load_splits("mnist"))
    print(result.final_test_accuracy, result.time_to_target_seconds)

The trainer logs nothing and knows nothing of Optuna or MLflow. It reports each epoch's
`EpochMetrics` to an optional callback; the callback may return True to stop training early
(pruning uses this). A non-finite loss raises `TrainingDiverged` naming the epoch and step.
The learning rate follows `config.lr_schedule` step by step (`softmaxreg.schedule`), and torch's
thread count is `choose_threads(...)` for the run, restored afterwards, and the CPU flushes
denormal floats to zero meanwhile (`softmaxreg.device.flush_denormals`).

Speed: the data already sits on the device as one float tensor; each step gathers its shuffled
batch (small enough to stay in cache for the matmuls that follow, which a whole-epoch gather is
not), computes the closed-form gradient (`ClosedFormStep`, views made once per run) and applies
`softmaxreg.optim.SGD`; plain SGD (no momentum or weight decay) folds that update into the
gradient matmul instead (`FusedSGDStep`, `softmaxreg.train_pass`). Each step keeps its
examples' log-likelihoods on the device; the per-step losses are computed from them once per
epoch, so the hot loop never waits for the device (one sync per epoch, just before the clock is
read) and spends no time on per-step reductions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from softmaxreg.config import TrainConfig
from softmaxreg.data import DataSplits
from softmaxreg.device import (
    choose_threads,
    flush_denormals,
    resolve_device,
    synchronize,
    torch_threads,
)
from softmaxreg.model import EVAL_CHUNK, build_model
from softmaxreg.optim import SGD
from softmaxreg.schedule import is_constant, lr_table
from softmaxreg.train_pass import TrainPass
from softmaxreg.train_result import Callback, EpochMetrics, TrainingDiverged, TrainResult


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `model` on (x, y), in chunks."""
    model.eval()
    loss_sum = torch.zeros((), device=x.device, dtype=torch.float64)
    correct = torch.zeros((), device=x.device, dtype=torch.int64)
    for start in range(0, x.shape[0], EVAL_CHUNK):
        outputs = model(x[start : start + EVAL_CHUNK])
        targets = y[start : start + EVAL_CHUNK]
        loss_sum += F.cross_entropy(outputs, targets, reduction="sum").double()
        correct += (outputs.argmax(dim=1) == targets).sum()
    model.train()
    n = max(x.shape[0], 1)
    return loss_sum.item() / n, correct.item() / n


def step_losses(log_likelihoods: list[torch.Tensor], batch_size: int) -> torch.Tensor:
    """Mean loss of every step of a pass, (members, steps), from each step's (members, 1, B)
    log-likelihoods: the same per-batch means a per-step `.mean()` gives, in a few ops."""
    picks = torch.cat(log_likelihoods, dim=2).flatten(1)
    members, n = picks.shape
    full = n // batch_size * batch_size
    means = [-picks[:, :full].reshape(members, -1, batch_size).mean(dim=2)]
    if full < n:
        means.append(-picks[:, full:].mean(dim=1, keepdim=True))
    return torch.cat(means, dim=1)


def weighted_train_loss(losses: torch.Tensor, batch_size: int, n_train: int) -> torch.Tensor:
    """Each member's mean loss over the pass, weighting the last (possibly smaller) batch by its
    size; `losses` is (members, steps)."""
    sizes = torch.full_like(losses[0], float(batch_size))
    sizes[-1] = n_train - batch_size * (losses.shape[1] - 1)
    return (losses * sizes).sum(dim=1) / n_train


def first_non_finite(losses: torch.Tensor) -> int | None:
    """1-based index of the first non-finite entry of a 1-d tensor, or None if all are finite."""
    finite = torch.isfinite(losses)
    if bool(finite.all()):
        return None
    return int((~finite).nonzero()[0, 0]) + 1


@dataclass(frozen=True)
class Evaluation:
    """One model's figures on the validation and test splits, and the seconds they took."""

    val_loss: float
    val_accuracy: float
    test_loss: float
    test_accuracy: float
    seconds: float


def epoch_metrics(
    evaluation: Evaluation,
    epoch: int,
    train_loss: float,
    epoch_seconds: float,
    train_seconds_total: float,
    n_train: int,
) -> EpochMetrics:
    """The epoch's figures: its training pass beside the evaluation that followed it."""
    return EpochMetrics(
        epoch=epoch,
        train_loss=train_loss,
        val_loss=evaluation.val_loss,
        val_accuracy=evaluation.val_accuracy,
        test_loss=evaluation.test_loss,
        test_accuracy=evaluation.test_accuracy,
        epoch_seconds=epoch_seconds,
        eval_seconds=evaluation.seconds,
        samples_per_second=n_train / epoch_seconds,
        train_seconds_total=train_seconds_total,
        warmup=epoch == 1,
    )


def evaluate_splits(model: nn.Module, data: DataSplits) -> Evaluation:
    """Evaluate `model` on the validation and test splits, timed after a device sync."""
    start = time.perf_counter()
    val_loss, val_accuracy = evaluate(model, data.val_x, data.val_y)
    test_loss, test_accuracy = evaluate(model, data.test_x, data.test_y)
    synchronize(data.val_x.device)
    return Evaluation(val_loss, val_accuracy, test_loss, test_accuracy, time.perf_counter() - start)


def train(
    config: TrainConfig,
    data: DataSplits,
    callback: Callback | None = None,
) -> TrainResult:
    """Train softmax regression per `config` on `data`; report each epoch to `callback`."""
    device = resolve_device(config.device)
    threads = choose_threads(config.batch_size, config.threads, device)
    with torch_threads(threads), flush_denormals():
        return _train(config, data, callback, device, threads)


def _train(
    config: TrainConfig,
    data: DataSplits,
    callback: Callback | None,
    device: torch.device,
    threads: int,
) -> TrainResult:
    if data.device != device:
        data = data.to(device)
    model = build_model(config.model, config.seed).to(device)
    optimizer = SGD(
        list(model.parameters()),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    # The shuffle has its own generator, so results do not depend on the caller's global RNG.
    shuffle_generator = torch.Generator().manual_seed(config.seed)
    train_x = data.train_x.flatten(1)
    n_train = train_x.shape[0]
    batch_size = min(config.batch_size, n_train)
    steps_per_epoch = -(-n_train // batch_size)
    lrs = [config.lr] * steps_per_epoch * config.epochs
    if not is_constant(config.lr_schedule, config.warmup_steps):
        lrs = lr_table(len(lrs), config.lr, config.lr_schedule, config.warmup_steps)
    run_pass = TrainPass(model, optimizer, train_x, data.train_y, batch_size, lrs)
    history: list[EpochMetrics] = []
    time_to_target: float | None = None
    train_seconds_total = 0.0
    stopped_early = False

    model.train()
    for epoch in range(1, config.epochs + 1):
        synchronize(device)
        start = time.perf_counter()
        order = torch.randperm(n_train, generator=shuffle_generator).to(device)
        losses = step_losses(run_pass(order, (epoch - 1) * steps_per_epoch), batch_size)
        synchronize(device)
        epoch_seconds = time.perf_counter() - start

        diverged_step = first_non_finite(losses[0])
        if diverged_step is not None:
            loss = float(losses[0, diverged_step - 1])
            raise TrainingDiverged(epoch, diverged_step, loss, config.lr)
        train_loss = float(weighted_train_loss(losses, batch_size, n_train)[0])
        train_seconds_total += epoch_seconds
        evaluation = evaluate_splits(model, data)
        metrics = epoch_metrics(
            evaluation, epoch, train_loss, epoch_seconds, train_seconds_total, n_train
        )
        if time_to_target is None and metrics.val_accuracy >= config.target_accuracy:
            time_to_target = train_seconds_total
        history.append(metrics)
        if callback is not None and callback(metrics) and epoch < config.epochs:
            stopped_early = True
            break

    return TrainResult(
        config=config,
        device=str(device),
        epochs=history,
        time_to_target_seconds=time_to_target,
        stopped_early=stopped_early,
        model=model,
        threads=threads,
    )
