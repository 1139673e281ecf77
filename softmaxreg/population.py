"""Train K softmax regressions at once on the same batches: `train_population(configs, data)`.

    configs = [TrainConfig(batch_size=64, lr=lr, epochs=5) for lr in (0.01, 0.03, 0.1, 0.3)]
    results = train_population(configs, load_splits("mnist"), callbacks=[None, None, stop, None])
    for result in results:
        print(result.config.lr, result.error or result.final_val_accuracy)

Members share batch size, seed, epochs, device, threads and model ("logits" only); each has its
own learning rate, momentum, weight decay, schedule, warm-up and target accuracy. Every step
gathers one shuffled batch for all members, computes all K x 10 logits with one matmul against
the stacked weights and each member's closed-form gradient with one more, then applies each
member's SGD update with per-member (K, 1, 1) factors. Each member gets exactly what
`train(config)` gives it alone (same shuffle, same initial weights, same update rule), up to
float rounding: the tests check epoch figures and weights against separate runs.

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
from softmaxreg.device import choose_threads, resolve_device, synchronize, torch_threads
from softmaxreg.model import ClosedFormStep, build_model, evaluate_stack
from softmaxreg.optim import momentum_buffers
from softmaxreg.schedule import is_constant, lr_table
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


def member_factors(configs: Sequence[TrainConfig], name: str, device: torch.device) -> torch.Tensor:
    """Field `name` of every member as a (K, 1, 1) float32 tensor, to scale stacked rows."""
    values = [float(getattr(config, name)) for config in configs]
    return torch.tensor(values, device=device).view(len(configs), 1, 1)


class Stack:
    """The active members' weights, gradients, momentum buffers and update factors, stacked.

    Row r of every tensor belongs to member `members[r]`; `keep(rows)` drops the others.
    """

    def __init__(self, configs: Sequence[TrainConfig], total_steps: int, device: torch.device):
        count = len(configs)
        initial = build_model(configs[0].model, configs[0].seed)
        self.members = list(range(count))
        self.weight = initial.linear.weight.detach().expand(count, -1, -1).contiguous().to(device)
        self.bias = initial.linear.bias.detach().view(1, -1, 1).repeat(count, 1, 1).to(device)
        self.grads = [torch.zeros_like(self.weight), torch.zeros_like(self.bias)]
        self.buffers: list[torch.Tensor] | None = None
        self.lr, self.momentum, self.weight_decay = (
            member_factors(configs, name, device) for name in ("lr", "momentum", "weight_decay")
        )
        self.use_momentum = bool(self.momentum.any())
        self.use_weight_decay = bool(self.weight_decay.any())
        # Scheduled learning rates: one (K, 1, 1) row per step, read by index in the hot loop.
        self.lr_steps: torch.Tensor | None = None
        if not all(is_constant(c.lr_schedule, c.warmup_steps) for c in configs):
            table = [lr_table(total_steps, c.lr, c.lr_schedule, c.warmup_steps) for c in configs]
            self.lr_steps = torch.tensor(table, device=device).t().reshape(-1, count, 1, 1)
        self.step = self._make_step()

    def _make_step(self) -> ClosedFormStep:
        return ClosedFormStep(self.weight, self.bias, *self.grads, members=len(self.members))

    def update(self, global_step: int) -> None:
        """Each member's SGD step (torch.optim.SGD's rule, as in `softmaxreg.optim.SGD`)."""
        params = (self.weight, self.bias)
        if self.use_weight_decay:
            for param, grad in zip(params, self.grads, strict=True):
                grad.addcmul_(self.weight_decay, param)
        updates = self.grads
        if self.use_momentum:
            self.buffers = updates = momentum_buffers(self.buffers, self.grads, self.momentum)
        lr = self.lr if self.lr_steps is None else self.lr_steps[global_step]
        for param, update in zip(params, updates, strict=True):
            param.addcmul_(lr, update, value=-1.0)

    def keep(self, rows: list[int]) -> None:
        """Keep only stack rows `rows` (members that go on), so finished ones cost nothing."""
        index = torch.tensor(rows, device=self.weight.device)
        self.members = [self.members[r] for r in rows]
        self.weight, self.bias = self.weight[index], self.bias[index]
        self.grads = [grad[index] for grad in self.grads]
        if self.buffers is not None:
            self.buffers = [buffer[index] for buffer in self.buffers]
        self.lr, self.momentum, self.weight_decay = (
            self.lr[index],
            self.momentum[index],
            self.weight_decay[index],
        )
        if self.lr_steps is not None:
            self.lr_steps = self.lr_steps[:, index]
        self.step = self._make_step()

    def evaluate(self, data: DataSplits) -> list[Evaluation]:
        """Every row's figures on the validation and test splits, from one matmul per chunk of
        examples against the stacked weights (K times fewer passes over the data than
        evaluating each member); `seconds` is that shared evaluation's."""
        start = time.perf_counter()
        val_loss, val_accuracy = evaluate_stack(self.weight, self.bias, data.val_x, data.val_y)
        test_loss, test_accuracy = evaluate_stack(self.weight, self.bias, data.test_x, data.test_y)
        synchronize(self.weight.device)
        seconds = time.perf_counter() - start
        figures = zip(val_loss, val_accuracy, test_loss, test_accuracy, strict=True)
        return [Evaluation(*row, seconds=seconds) for row in figures]

    def copy_into(self, row: int, model: torch.nn.Module) -> None:
        """Write stack row `row` into `model`'s parameters."""
        model.linear.weight.data.copy_(self.weight[row])
        model.linear.bias.data.copy_(self.bias[row].view(-1))


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
    with torch_threads(threads):
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
        self.stack = Stack(configs, self.steps_per_epoch * configs[0].epochs, device)
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
        stack, members = self.stack, len(self.stack.members)
        first_step = (epoch - 1) * self.steps_per_epoch
        log_likelihoods = []
        for index, batch in enumerate(order.to(self.device).split(self.batch_size)):
            targets = self.targets.index_select(2, batch).expand(members, 1, -1)
            log_likelihoods.append(stack.step(self.train_x.index_select(0, batch), targets))
            stack.update(first_step + index)
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
