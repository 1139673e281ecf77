"""SGD on explicit gradients, with PyTorch's semantics for momentum and weight decay.

`torch.optim.SGD` would do the same arithmetic, but its per-step bookkeeping (parameter groups,
state dicts, hooks) costs tens of microseconds, a large share of a batch-100 step of a 7,850
parameter model. The update rule is the one `torch.optim.SGD` documents (dampening 0, no
Nesterov), and the tests check it step for step against `torch.optim.SGD`:

    g = grad + weight_decay * w
    b = g                     (first step)
    b = momentum * b + g      (later steps)
    w = w - lr * b            (b = g when momentum is 0)
"""

from __future__ import annotations

import torch


class SGD:
    """Plain/momentum SGD over `params`, whose gradients the caller writes into `self.grads`."""

    def __init__(
        self,
        params: list[torch.Tensor],
        *,
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        self.params = [p.detach() for p in params]
        self.grads = [torch.zeros_like(p) for p in self.params]
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.buffers: list[torch.Tensor] | None = None

    def step(self) -> None:
        # No `torch.no_grad()` here: the parameters are detached views, so autograd never sees
        # these updates, and entering the context manager would cost a few microseconds a step.
        if self.weight_decay:
            for param, grad in zip(self.params, self.grads, strict=True):
                grad.add_(param, alpha=self.weight_decay)
        updates = self.grads
        if self.momentum:
            self.buffers = updates = momentum_buffers(self.buffers, self.grads, self.momentum)
        for param, update in zip(self.params, updates, strict=True):
            param.add_(update, alpha=-self.lr)


def momentum_buffers(
    buffers: list[torch.Tensor] | None, grads: list[torch.Tensor], momentum: float | torch.Tensor
) -> list[torch.Tensor]:
    """PyTorch's momentum rule in place: b = g on the first step, then b = momentum * b + g.
    `momentum` may be a tensor broadcast over stacked models (the population trainer)."""
    if buffers is None:
        return [grad.clone() for grad in grads]
    for buffer, grad in zip(buffers, grads, strict=True):
        buffer.mul_(momentum).add_(grad)
    return buffers
