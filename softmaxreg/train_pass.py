"""`train()`'s pass over one epoch's shuffled batches: `TrainPass(...)(order, first_step)`."""

from __future__ import annotations

import torch
from torch import nn

from softmaxreg.model import ClosedFormStep, FusedSGDStep
from softmaxreg.optim import SGD


class BatchRows:
    """Gathers each step's shuffled rows of `x` (N, pixels) into one buffer reused by every step
    of the run: `rows(index)` is x[index], valid until the next call.

    A fresh tensor per step costs more than the gather at large batches: a batch-1024 float
    batch is 3.2 MB, which the allocator maps afresh and the gather then page-faults in, every
    step. The steps only read the batch before the next one is gathered, so one buffer does.

    Measured and left out (K = 8, one thread): gathering several batches per call (1 MB chunks)
    was no faster (1-5% slower at batches 16 and 128), and gathering a uint8 copy of the rows
    and normalising per batch was 1.4-2.3x slower: an epoch's gathers move its 172 MB near the
    memory's copy rate (25-28 ms here; copying the rows in order takes 18-23 ms), and the
    conversion's extra ops cost more than the bytes they save."""

    def __init__(self, x: torch.Tensor, batch_size: int) -> None:
        self.x = x
        self.buffer = x.new_empty(batch_size, x.shape[1])

    def __call__(self, index: torch.Tensor) -> torch.Tensor:
        # shape[0], not len(): Tensor.__len__ is Python-level, a microsecond a step at batch 16.
        size = index.shape[0]
        out = self.buffer if size == self.buffer.shape[0] else self.buffer[:size]
        return torch.index_select(self.x, 0, index, out=out)


class TrainPass:
    """One run's passes over shuffled data: calling it with an epoch's `order` and the run's
    step number at its start trains on every batch and returns each step's log-likelihoods
    (1, 1, B).

    Plain SGD on the logits model (no momentum, no weight decay) steps with `FusedSGDStep`,
    which adds -lr / B times the closed-form gradient straight into the weights; any other run
    writes gradients into `optimizer.grads` and calls `optimizer.step()`. The pass's targets
    are gathered once, and a closed-form pass runs in inference mode (no autograd dispatch per
    op; the autograd ablation model needs autograd, so it runs without)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: SGD,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        batch_size: int,
        lrs: list[float],
    ) -> None:
        self.optimizer, self.batch_size = optimizer, batch_size
        self.rows = BatchRows(train_x, batch_size)
        self.lrs = lrs  # every step's learning rate, over the whole run
        self.targets = train_y.view(1, 1, -1)
        self.step = model.make_step(optimizer.grads)
        self.closed_form = isinstance(self.step, ClosedFormStep)
        self.fused = self.closed_form and not (optimizer.momentum or optimizer.weight_decay)
        if self.fused:
            self.step = FusedSGDStep(model.linear.weight, model.linear.bias)

    def __call__(self, order: torch.Tensor, first_step: int) -> list[torch.Tensor]:
        size, rows, step, optimizer = self.batch_size, self.rows, self.step, self.optimizer
        batches = order.split(size)
        targets = self.targets.index_select(2, order).split(size, dim=2)
        lrs = self.lrs[first_step : first_step + len(batches)]
        log_likelihoods = []
        with torch.inference_mode(self.closed_form):
            for batch, target, lr in zip(batches, targets, lrs, strict=True):
                if self.fused:
                    log_likelihoods.append(step(rows(batch), target, -lr / len(batch)))
                else:
                    optimizer.lr = lr
                    log_likelihoods.append(step(rows(batch), target))
                    optimizer.step()
        return log_likelihoods
