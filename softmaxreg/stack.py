"""The population's stacked weights and their SGD update: `Stack(configs, total_steps, device)`.

Row r of every tensor belongs to member `members[r]`. A stack whose members all use plain SGD
(no momentum, no weight decay, the sweep's default) steps with `FusedSGDStep`: one call per
batch computes the log-likelihoods and applies the update, scaled per member by -lr / B from
`step_scales`. Otherwise it steps in two calls, `ClosedFormStep` (gradients into `grads`) then
`update`, torch.optim.SGD's rule with per-member (K, 1, 1) factors. Either way each member gets
what `train(config)` gives it alone, up to float rounding.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from softmaxreg.config import TrainConfig
from softmaxreg.data import DataSplits
from softmaxreg.device import synchronize
from softmaxreg.model import ClosedFormStep, FusedSGDStep, build_model, evaluate_stack
from softmaxreg.optim import momentum_buffers
from softmaxreg.schedule import decay_factors, is_constant, warmup_lrs
from softmaxreg.trainer import Evaluation


def member_factors(
    configs: Sequence[TrainConfig], name: str, device: torch.device, dtype=torch.float32
) -> torch.Tensor:
    """Field `name` of every member as a (K, 1, 1) tensor, to scale stacked rows."""
    values = [float(getattr(config, name)) for config in configs]
    return torch.tensor(values, device=device, dtype=dtype).view(len(configs), 1, 1)


def lr_columns(configs: Sequence[TrainConfig], total_steps: int) -> torch.Tensor:
    """Every member's `lr_table` as a (steps, K) float64 column each, to the last bit: each
    member's base times the decay factors its schedule shares with the others (one float64
    multiply per step, as `lr_table` does), then its warm-up's steps from `warmup_lrs`."""
    shared: dict[tuple[str, int], torch.Tensor] = {}
    columns = []
    for config in configs:
        key = (config.lr_schedule, config.warmup_steps)
        if key not in shared:
            factors = decay_factors(total_steps, *key)
            shared[key] = torch.tensor(factors, dtype=torch.float64)
        column = shared[key] * config.lr
        ramp = warmup_lrs(total_steps, config.lr, *key)
        if ramp:
            column[: len(ramp)] = torch.tensor(ramp, dtype=torch.float64)
        columns.append(column)
    return torch.stack(columns, dim=1)


class Stack:
    """The active members' weights, gradients, momentum buffers and update factors, stacked.

    `fused` says which step the stack takes: `step(x, targets, scale)` updating in place, or
    `step(x, targets)` then `update(lr)` with a row of `pass_lrs`. `keep(rows)` drops the other
    rows.
    """

    def __init__(self, configs: Sequence[TrainConfig], total_steps: int, device: torch.device):
        count = len(configs)
        initial = build_model(configs[0].model, configs[0].seed)
        self.members = list(range(count))
        self.weight = initial.linear.weight.detach().expand(count, -1, -1).contiguous().to(device)
        self.bias = initial.linear.bias.detach().view(1, -1, 1).repeat(count, 1, 1).to(device)
        # Learning rates in float64, as `train()` holds them: the fused step's -lr / B is then
        # rounded to float32 once, as `train()`'s is, so the two agree to the last bit there.
        self.lr = member_factors(configs, "lr", device, torch.float64)
        self.momentum, self.weight_decay = (
            member_factors(configs, name, device) for name in ("momentum", "weight_decay")
        )
        self.use_momentum = bool(self.momentum.any())
        self.use_weight_decay = bool(self.weight_decay.any())
        self.fused = not (self.use_momentum or self.use_weight_decay)
        self.grads: list[torch.Tensor] = []  # the fused step needs no gradient buffers
        if not self.fused:
            self.grads = [torch.zeros_like(self.weight), torch.zeros_like(self.bias)]
        self.buffers: list[torch.Tensor] | None = None
        # Scheduled learning rates: one (K, 1, 1) row per step of the run.
        self.lr_steps: torch.Tensor | None = None
        if not all(is_constant(c.lr_schedule, c.warmup_steps) for c in configs):
            table = lr_columns(configs, total_steps).to(device)
            self.lr_steps = table.reshape(-1, count, 1, 1)
        self.step = self._make_step()

    def _make_step(self) -> ClosedFormStep | FusedSGDStep:
        if self.fused:
            return FusedSGDStep(self.weight, self.bias, members=len(self.members))
        return ClosedFormStep(self.weight, self.bias, *self.grads, members=len(self.members))

    def pass_lrs(self, first_step: int, steps: int) -> torch.Tensor:
        """Every member's learning rate at `steps` steps from `first_step`: (steps, K, 1, 1)
        float64, iterated beside a pass's batches (no indexing per step)."""
        if self.lr_steps is None:
            return self.lr.expand(steps, -1, -1, -1)
        return self.lr_steps[first_step : first_step + steps]

    def step_scales(self, first_step: int, sizes: torch.Tensor) -> torch.Tensor:
        """The fused step's factors for a pass with batches of `sizes` (float64) from
        `first_step` on: (steps, K, 1, 1) float32, each member's -lr / B at that step (the last,
        smaller batch divides by its own size, as its mean loss does)."""
        lrs = self.pass_lrs(first_step, len(sizes))
        return (lrs / sizes.view(-1, 1, 1, 1).neg()).float()

    def update(self, lr: torch.Tensor) -> None:
        """Each member's SGD step at learning rates `lr` (K, 1, 1), a row of `pass_lrs` in
        float32 (torch.optim.SGD's rule, as in `softmaxreg.optim.SGD`)."""
        params = (self.weight, self.bias)
        if self.use_weight_decay:
            for param, grad in zip(params, self.grads, strict=True):
                grad.addcmul_(self.weight_decay, param)
        updates = self.grads
        if self.use_momentum:
            self.buffers = updates = momentum_buffers(self.buffers, self.grads, self.momentum)
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
