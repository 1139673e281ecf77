"""Train K softmax regressions at once on the same batches: `train_population(configs, data)`.

    configs = [TrainConfig(batch_size=64, lr=lr, epochs=5) for lr in (0.01, 0.03, 0.1, 0.3)]
    results = train_population(configs, load_splits("mnist"), callbacks=[None, None, stop, None])
    for result in results:
        print(result.config.lr, result.error or result.final_val_accuracy)

Members share batch size, seed, epochs, device, threads and model ("logits" only); each has its
own learning rate, momentum, weight decay, schedule, warm-up and target accuracy. Every step
gathers one shuffled batch for all members (the pass's targets are gathered once, up front),
computes all K x 10 logits with one matmul against the stacked weights and each member's
closed-form gradient with one more (`softmaxreg.stack.Stack`). Without momentum and weight decay
that second matmul adds each member's step, scaled by its -lr / B, straight into the weights;
otherwise the gradients go to buffers and each member's SGD update follows with per-member
(K, 1, 1) factors. Each member gets exactly what `train(config)` gives it alone (same shuffle,
same initial weights, same update rule), up to float rounding: the tests check epoch figures and
weights against separate runs.

Members end alone: one whose callback returns True stops (`stopped_early`), one whose loss turns
non-finite fails (`error` holds its `TrainingDiverged`); both leave the stack at the end of that
epoch and the others go on. Rows never mix, so a diverged member's weights cannot reach another.

Timing: `epoch_seconds` of every member is the shared pass over the data, so each member's
`samples_per_second` is that of the whole population; the population's throughput per model is
K x samples / epoch_seconds, which is what it gains over K separate runs. Evaluation is shared
too: one matmul per chunk of examples against the stacked weights, so every member's
`eval_seconds` is that of the whole population's evaluation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from softmaxreg.config import TrainConfig, require
from softmaxreg.data import DataSplits
from softmaxreg.device import (
    choose_threads,
    flush_denormals,
    resolve_device,
    synchronize,
    torch_threads,
)
from softmaxreg.model import build_model
from softmaxreg.stack import Stack
from softmaxreg.train_pass import BatchRows
from softmaxreg.trainer import (
    Callback,
    EpochMetrics,
    Evaluation,
    TrainingDiverged,
    TrainResult,
    epoch_metrics,
    first_non_finite,
    step_losses,
    weighted_train_loss,
)

SHARED_FIELDS = ("batch_size", "seed", "epochs", "device", "threads", "model")
"""TrainConfig fields every member must share: they fix the batches, the initial weights and the
length of the run."""


@dataclass
class MemberResult(TrainResult):
    """One member's `TrainResult`, plus the divergence that ended it, if any. A diverged member's
    `epochs` are those completed before it diverged (possibly none) and its `model` holds its
    non-finite weights."""

    error: TrainingDiverged | None = None


def check_population(configs: Sequence[TrainConfig]) -> None:
    """Raise `ConfigError` naming the field unless `configs` can train as one population."""
    require(len(configs) > 0, "configs", list(configs), "at least one TrainConfig")
    for name in SHARED_FIELDS:
        values = tuple(getattr(config, name) for config in configs)
        require(len(set(values)) == 1, name, values, "the same value for every member")
    require(configs[0].model == "logits", "model", configs[0].model, "logits (closed form)")


def train_population(
    configs: Sequence[TrainConfig],
    data: DataSplits,
    callbacks: Sequence[Callback | None] | None = None,
    on_epoch_end: Callable[[int], None] | None = None,
) -> list[MemberResult]:
    """Train every config as one population on `data`; one result per config, in order.

    `callbacks[i]` (optional) sees member i's `EpochMetrics` after each epoch; True stops it.
    `on_epoch_end(epoch)` (optional) is called once per epoch after every member's callback.
    """
    check_population(configs)
    if callbacks is not None:
        require(len(callbacks) == len(configs), "callbacks", callbacks, "one per config")
    device = resolve_device(configs[0].device)
    threads = choose_threads(configs[0].batch_size, configs[0].threads, device, len(configs))
    population = Population(configs, data, callbacks or [None] * len(configs), device)
    population.on_epoch_end = on_epoch_end
    with torch_threads(threads), flush_denormals():
        return population.run(threads)


class Population:
    """One population run: the stack, each member's history and the shared clock."""

    def __init__(
        self,
        configs: Sequence[TrainConfig],
        data: DataSplits,
        callbacks: Sequence[Callback | None],
        device: torch.device,
    ) -> None:
        self.configs, self.callbacks, self.device = list(configs), list(callbacks), device
        self.data = data if data.device == device else data.to(device)
        self.train_x = self.data.train_x.flatten(1)
        self.targets = self.data.train_y.view(1, 1, -1)
        self.n_train = self.train_x.shape[0]
        self.batch_size = min(configs[0].batch_size, self.n_train)
        self.steps_per_epoch = -(-self.n_train // self.batch_size)
        self.rows = BatchRows(self.train_x, self.batch_size)  # every step's batch, one buffer
        self.stack = Stack(configs, self.steps_per_epoch * configs[0].epochs, device)
        sizes = [float(self.batch_size)] * self.steps_per_epoch
        sizes[-1] = float(self.n_train - self.batch_size * (self.steps_per_epoch - 1))
        self.batch_sizes = torch.tensor(sizes, device=device, dtype=torch.float64)  # per step
        self.models = [build_model(c.model, c.seed).to(device) for c in configs]
        self.histories: list[list[EpochMetrics]] = [[] for _ in configs]
        self.time_to_target: list[float | None] = [None] * len(configs)
        self.stopped = [False] * len(configs)
        self.errors: list[TrainingDiverged | None] = [None] * len(configs)
        self.train_seconds_total = 0.0
        self.on_epoch_end: Callable[[int], None] | None = None

    def run(self, threads: int) -> list[MemberResult]:
        generator = torch.Generator().manual_seed(self.configs[0].seed)  # train()'s shuffle
        for epoch in range(1, self.configs[0].epochs + 1):
            order = torch.randperm(self.n_train, generator=generator)
            losses, epoch_seconds = self.train_pass(epoch, order)
            self.train_seconds_total += epoch_seconds
            evaluations = self.stack.evaluate(self.data)
            going_on = [
                row
                for row in range(len(self.stack.members))
                if self.end_epoch(row, epoch, losses[row], epoch_seconds, evaluations[row])
            ]
            for row in set(range(len(self.stack.members))) - set(going_on):  # these stop here
                self.stack.copy_into(row, self.models[self.stack.members[row]])
            if self.on_epoch_end is not None:
                self.on_epoch_end(epoch)
            if not going_on:
                break
            if len(going_on) < len(self.stack.members):
                self.stack.keep(going_on)
        return [self.result(member, threads) for member in range(len(self.configs))]

    def train_pass(self, epoch: int, order: torch.Tensor) -> tuple[torch.Tensor, float]:
        """One shared pass over the shuffled data: (per-step losses (rows, steps), seconds)."""
        synchronize(self.device)
        start = time.perf_counter()
        stack, members, size = self.stack, len(self.stack.members), self.batch_size
        first_step = (epoch - 1) * self.steps_per_epoch
        order = order.to(self.device)
        batches = order.split(size)
        # Every step's targets from one gather, already in the step's (K, 1, B) shape.
        targets = self.targets.index_select(2, order).expand(members, 1, -1).split(size, dim=2)
        rows, log_likelihoods = self.rows, []
        # Inference mode skips autograd's dispatch in each op (nothing here is differentiated):
        # about a microsecond an op, a tenth of a batch-16 step.
        with torch.inference_mode():
            if stack.fused:
                scales = stack.step_scales(first_step, self.batch_sizes)
                log_likelihoods = [
                    stack.step(rows(batch), target, scale)
                    for batch, target, scale in zip(batches, targets, scales, strict=True)
                ]
            else:
                lrs = stack.pass_lrs(first_step, len(batches)).float()
                for batch, target, lr in zip(batches, targets, lrs, strict=True):
                    log_likelihoods.append(stack.step(rows(batch), target))
                    stack.update(lr)
        losses = step_losses(log_likelihoods, self.batch_size)
        synchronize(self.device)
        return losses, time.perf_counter() - start

    def end_epoch(
        self,
        row: int,
        epoch: int,
        losses: torch.Tensor,
        epoch_seconds: float,
        evaluation: Evaluation,
    ) -> bool:
        """Check and report stack row `row`; False when its member stops here."""
        member = self.stack.members[row]
        config = self.configs[member]
        diverged_step = first_non_finite(losses)
        if diverged_step is not None:
            loss = float(losses[diverged_step - 1])
            self.errors[member] = TrainingDiverged(epoch, diverged_step, loss, config.lr)
            return False
        train_loss = float(
            weighted_train_loss(losses.view(1, -1), self.batch_size, self.n_train)[0]
        )
        metrics = epoch_metrics(
            evaluation, epoch, train_loss, epoch_seconds, self.train_seconds_total, self.n_train
        )
        self.histories[member].append(metrics)
        if self.time_to_target[member] is None and metrics.val_accuracy >= config.target_accuracy:
            self.time_to_target[member] = self.train_seconds_total
        callback = self.callbacks[member]
        if callback is not None and callback(metrics) and epoch < config.epochs:
            self.stopped[member] = True
            return False
        return epoch < config.epochs

    def result(self, member: int, threads: int) -> MemberResult:
        return MemberResult(
            config=self.configs[member],
            device=str(self.device),
            epochs=self.histories[member],
            time_to_target_seconds=self.time_to_target[member],
            stopped_early=self.stopped[member],
            model=self.models[member],
            threads=threads,
            error=self.errors[member],
        )
