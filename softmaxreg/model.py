"""Softmax regression: one `nn.Linear(784, 10)` trained with cross-entropy.

Each model computes its own loss and gradients through `loss_and_gradients`. For softmax
regression they have a closed form, d loss / d logits = (softmax(logits) - onehot(y)) / batch,
which skips autograd's graph bookkeeping: at batch 100 on a CPU that bookkeeping costs more than
the arithmetic. The tests check the closed form against autograd.

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


class SoftmaxRegression(nn.Module):
    """Multinomial logistic regression: logits = x W^T + b."""

    def __init__(self, in_features: int = IMAGE_PIXELS, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))

    @torch.no_grad()
    def loss_and_gradients(
        self, x: torch.Tensor, y: torch.Tensor, grads: list[torch.Tensor]
    ) -> torch.Tensor:
        """Mean cross-entropy of (x, y); writes d loss / d (weight, bias) into `grads`."""
        weight, bias = self.linear.weight, self.linear.bias
        x = x.flatten(1)
        # Logits as classes x batch: (10, 784) @ (784, B) runs about twice as fast on a CPU as
        # (B, 784) @ (784, 10), and the gradient matmul then needs no transpose either.
        log_probs = torch.log_softmax(torch.addmm(bias.unsqueeze(1), weight, x.t()), dim=0)
        targets = y.unsqueeze(0)
        loss = -log_probs.gather(0, targets).mean()
        dlogits = log_probs.exp_()
        dlogits.scatter_add_(0, targets, dlogits.new_full(targets.shape, -1.0))
        dlogits.div_(x.shape[0])
        torch.mm(dlogits, x, out=grads[0])
        torch.sum(dlogits, dim=1, out=grads[1])
        return loss


class TutorialDoubleSoftmax(SoftmaxRegression):
    """The tutorial's model: returns probabilities, which cross-entropy then softmaxes again."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(super().forward(x), dim=1)

    def loss_and_gradients(
        self, x: torch.Tensor, y: torch.Tensor, grads: list[torch.Tensor]
    ) -> torch.Tensor:
        """Cross-entropy of the probabilities (the tutorial's loss), differentiated by autograd."""
        return autograd_loss_and_gradients(self, x, y, grads)


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
