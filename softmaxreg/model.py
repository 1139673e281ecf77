"""Softmax regression: one `nn.Linear(784, 10)` trained with cross-entropy.

Each model computes its own loss and gradients through `loss_and_gradients`. For softmax
regression they have a closed form, d loss / d logits = (softmax(logits) - onehot(y)) / batch,
which skips autograd's graph bookkeeping: at batch 100 on a CPU that bookkeeping costs more than
the arithmetic. The tests check the closed form against autograd. Trainers call
`model.make_step(grads)` once per run and then the step once per batch:

    step = model.make_step(optimizer.grads)
    log_likelihoods = step(x_batch, y_batch.view(1, 1, -1))  # (1, 1, B); gradients written

`SoftmaxRegression` returns logits; `F.cross_entropy` applies log-softmax itself, which is both
correct and numerically stable. `TutorialDoubleSoftmax` reproduces the classic tutorial's bug
(softmax in `forward`, then `nn.CrossEntropyLoss`, so softmax is applied twice): its loss is
bounded below by log(1 + 9/e) ≈ 1.46 and its gradients shrink as predictions sharpen. It
exists only as a named ablation for the benchmark report.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from softmaxreg.config import MODEL_CHOICES

IMAGE_PIXELS = 28 * 28
NUM_CLASSES = 10
EVAL_CHUNK = 2048
"""Rows per evaluation matmul. At K = 8 a chunk's logits (655 KB) stay in a core's L2 cache for
the log-softmax, max and comparisons that read them after the matmul; with 8192 rows (2.6 MB)
they did not, and evaluating K = 8 members on 15000 rows took 7% longer. The loss is summed in
float32 per chunk, so the chunk size moves it in the 7th digit."""


class SoftmaxRegression(nn.Module):
    """Multinomial logistic regression: logits = x W^T + b."""

    def __init__(self, in_features: int = IMAGE_PIXELS, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))

    def loss_and_gradients(
        self, x: torch.Tensor, y: torch.Tensor, grads: list[torch.Tensor]
    ) -> torch.Tensor:
        """Mean cross-entropy of (x, y); writes d loss / d (weight, bias) into `grads`."""
        step = self.make_step(grads)
        return -step(x.flatten(1), y.reshape(1, 1, -1)).mean()

    def make_step(self, grads: list[torch.Tensor]) -> ClosedFormStep:
        """The per-step loss and gradient computation of this model, writing into `grads`."""
        return ClosedFormStep(self.linear.weight, self.linear.bias, grads[0], grads[1])


class StepBuffers:
    """One batch size's outputs of `StackedLogits.residual`, allocated once and reused every
    step: logits (K x classes, B), log-probabilities and then the residual in place (K, classes,
    B) with its flat (K x classes, B) view, a (K, 1, B) of -1 to subtract the one-hot and a (B, 1)
    column of ones (the bias's gradient as a matmul)."""

    def __init__(self, like: torch.Tensor, members: int, classes: int, batch: int) -> None:
        self.logits = like.new_empty(members * classes, batch)
        self.member_logits = self.logits.view(members, classes, batch)  # made once, not per step
        self.residual = like.new_empty(members, classes, batch)
        self.flat_residual = self.residual.view(-1, batch)
        self.minus_ones = like.new_full((members, 1, batch), -1.0)
        self.ones = like.new_ones(batch, 1)


class StackedLogits:
    """K stacked softmax regressions' log-likelihoods and softmax-minus-one-hot, the part
    `ClosedFormStep` and `FusedSGDStep` share.

    `weight` is (K x classes, pixels) or (K, classes, pixels) and `bias` (K x classes) or
    (K, classes), member after member; K = 1 is one model. The views are made once here
    (detached, so no autograd and no `no_grad` per step): a batch-16 step is tens of
    microseconds, and each view or context manager costs a few of them. For the same reason
    (and because a fresh batch-1024 temporary is memory the allocator maps and faults in afresh)
    every step writes into the `StepBuffers` of its batch size.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, members: int = 1) -> None:
        pixels = weight.shape[-1]
        self.members = members
        self.classes = weight.numel() // pixels // members
        self.weight = weight.detach().view(-1, pixels)
        self.bias = bias.detach().view(-1, 1)
        self.buffers: dict[int, StepBuffers] = {}  # by batch size: the run's and its last batch's

    def buffers_for(self, batch: int) -> StepBuffers:
        buffers = self.buffers.get(batch)
        if buffers is None:
            buffers = self.buffers[batch] = StepBuffers(
                self.weight, self.members, self.classes, batch
            )
        return buffers

    def residual(
        self, x: torch.Tensor, targets: torch.Tensor, buffers: StepBuffers
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(each example's log-likelihood (K, 1, B), softmax minus one-hot (K, classes, B), which
        is `buffers.residual`) for a batch x (B, pixels) and targets (K, 1, B): the gradient of
        the summed loss by the logits."""
        # Logits as classes x batch: (10, 784) @ (784, B) runs about twice as fast on a CPU as
        # (B, 784) @ (784, 10), and the gradient matmul then needs no transpose either.
        torch.addmm(self.bias, self.weight, x.t(), out=buffers.logits)
        log_probs = torch.log_softmax(buffers.member_logits, dim=1, out=buffers.residual)
        picked = log_probs.gather(1, targets)  # a new tensor: the pass keeps every step's
        # Softmax, then minus one-hot, in place (each in-place op returns its tensor).
        return picked, log_probs.exp_().scatter_add_(1, targets, buffers.minus_ones)


class ClosedFormStep(StackedLogits):
    """Log-likelihoods and closed-form gradients for K stacked softmax regressions.

    Calling the step with a batch x (B, pixels) and targets (K, 1, B) returns each example's
    log-likelihood (K, 1, B) and writes each member's d mean loss / d (weight, bias) into
    `grad_weight`, `grad_bias` (shapes as in `StackedLogits`).
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor,
        grad_weight: torch.Tensor,
        grad_bias: torch.Tensor,
        members: int = 1,
    ) -> None:
        super().__init__(weight, bias, members)
        self.grad_weight = grad_weight.view(-1, weight.shape[-1])
        self.grad_bias = grad_bias.view(members, self.classes, 1)

    def __call__(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        buffers = self.buffers_for(x.shape[0])
        picked, grad_logits = self.residual(x, targets, buffers)
        grad_logits.div_(x.shape[0])  # the mean over the batch
        torch.mm(buffers.flat_residual, x, out=self.grad_weight)
        torch.sum(grad_logits, dim=2, keepdim=True, out=self.grad_bias)
        return picked


class FusedSGDStep(StackedLogits):
    """`ClosedFormStep` with plain SGD's update folded into the gradient matmul, for stacked
    members without momentum or weight decay (one update rule: w = w - lr * grad).

    Calling it with x (B, pixels), targets (K, 1, B) and `scale` (K, 1, 1), each member's
    -lr / B, updates `weight` and `bias` in place and returns the log-likelihoods (K, 1, B):
    the gradient of the logits is scaled by -lr / B and added straight into the weights
    (`addmm_`) and, through a column of ones, into the bias. That skips the gradient buffers,
    the 1/B division and the two separate updates: about a third of a batch-16 step's ops, each
    a few microseconds whatever the batch. Same arithmetic as `ClosedFormStep` then
    `softmaxreg.optim.SGD`, up to float rounding (the tests compare the two).
    """

    def __call__(self, x: torch.Tensor, targets: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        buffers = self.buffers_for(x.shape[0])
        picked, step = self.residual(x, targets, buffers)
        step.mul_(scale)  # each member's step: times -lr / B
        self.weight.addmm_(buffers.flat_residual, x)
        self.bias.addmm_(buffers.flat_residual, buffers.ones)
        return picked


class AutogradStep:
    """`ClosedFormStep`'s interface for any model, differentiated by autograd (slow, general)."""

    def __init__(self, model: nn.Module, grads: list[torch.Tensor]) -> None:
        self.model, self.grads = model, grads

    def __call__(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            losses = F.cross_entropy(self.model(x), targets.view(-1), reduction="none")
            computed = torch.autograd.grad(losses.mean(), list(self.model.parameters()))
        for out, grad in zip(self.grads, computed, strict=True):
            out.copy_(grad)
        return -losses.detach().view(1, 1, -1)


class TutorialDoubleSoftmax(SoftmaxRegression):
    """The tutorial's model: returns probabilities, which cross-entropy then softmaxes again."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(super().forward(x), dim=1)

    def loss_and_gradients(
        self, x: torch.Tensor, y: torch.Tensor, grads: list[torch.Tensor]
    ) -> torch.Tensor:
        """Cross-entropy of the probabilities (the tutorial's loss), differentiated by autograd."""
        return autograd_loss_and_gradients(self, x, y, grads)

    def make_step(self, grads: list[torch.Tensor]) -> AutogradStep:
        return AutogradStep(self, grads)


def autograd_loss_and_gradients(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, grads: list[torch.Tensor]
) -> torch.Tensor:
    """Reference implementation: `F.cross_entropy(model(x), y)` differentiated by autograd."""
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), y)
        computed = torch.autograd.grad(loss, list(model.parameters()))
    for out, grad in zip(grads, computed, strict=True):
        out.copy_(grad)
    return loss.detach()


MODELS: dict[str, type[SoftmaxRegression]] = {
    "logits": SoftmaxRegression,
    "tutorial_double_softmax": TutorialDoubleSoftmax,
}
assert tuple(MODELS) == MODEL_CHOICES, "config.MODEL_CHOICES and model.MODELS must agree"


def build_model(name: str, seed: int) -> SoftmaxRegression:
    """Build model `name` with weights drawn from `seed`, leaving the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[name]()


@torch.no_grad()
def evaluate_stack(
    weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> tuple[list[float], list[float]]:
    """(mean cross-entropy, accuracy) of each stacked model (K, classes, pixels) on (x, y), in
    chunks: what `softmaxreg.trainer.evaluate` gives each model alone, up to float rounding.

    Logits are classes x examples, as in `ClosedFormStep`: log-softmax and max over the classes
    then run along contiguous rows of examples, which on a CPU is several times faster than over
    the 10 classes of each example's row (at K = 8 a log-softmax over rows of 10 cost more than
    the matmul). A model is right where the target's logit is the maximum; where some maximum is
    tied (degenerate weights, NaN), the chunk falls back to argmax, whose first index wins."""
    members, classes, pixels = weight.shape
    flat_weight, flat_bias = weight.reshape(-1, pixels), bias.reshape(-1, 1)
    loss_sum = torch.zeros(members, device=x.device, dtype=torch.float64)
    correct = torch.zeros(members, device=x.device, dtype=torch.int64)
    x = x.flatten(1)
    for start in range(0, x.shape[0], EVAL_CHUNK):
        targets = y[start : start + EVAL_CHUNK].view(1, 1, -1).expand(members, 1, -1)
        logits = torch.addmm(flat_bias, flat_weight, x[start : start + EVAL_CHUNK].t())
        logits = logits.view(members, classes, -1)
        loss_sum -= torch.log_softmax(logits, dim=1).gather(1, targets).sum(dim=(1, 2))
        top = logits.amax(dim=1, keepdim=True)
        hits = logits.gather(1, targets) == top
        # One maximum per example and model? (count_nonzero: no int64 copy of the comparison)
        if int(torch.count_nonzero(logits == top)) == hits.numel():
            correct += hits.sum(dim=(1, 2))
        else:
            predicted = logits.transpose(1, 2).contiguous().argmax(dim=2, keepdim=True)
            correct += (predicted.transpose(1, 2) == targets).sum(dim=(1, 2))
    n = max(x.shape[0], 1)
    return (loss_sum / n).tolist(), (correct.double() / n).tolist()
