"""`softmaxreg.optim.SGD` against `torch.optim.SGD`, step for step, on the same gradients."""

from __future__ import annotations

import pytest
import torch

from softmaxreg.optim import SGD

STEPS = 8


def gradient_sequence(seed: int, shapes: list[tuple[int, ...]]) -> list[list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(shape, generator=generator) for shape in shapes] for _ in range(STEPS)]


@pytest.mark.parametrize(
    ("momentum", "weight_decay"),
    [(0.0, 0.0), (0.9, 0.0), (0.0, 0.01), (0.9, 0.01), (0.5, 0.3)],
    ids=["plain", "momentum", "weight_decay", "both", "both_large"],
)
def test_sgd_matches_torch_sgd_step_for_step(momentum, weight_decay):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(10, 784, generator=generator)
    bias = torch.randn(10, generator=generator)
    ours = [weight.clone(), bias.clone()]
    theirs = [weight.clone().requires_grad_(), bias.clone().requires_grad_()]
    optimizer = SGD(ours, lr=0.1, momentum=momentum, weight_decay=weight_decay)
    reference = torch.optim.SGD(theirs, lr=0.1, momentum=momentum, weight_decay=weight_decay)

    for step, grads in enumerate(gradient_sequence(1, [(10, 784), (10,)]), start=1):
        for slot, grad in zip(optimizer.grads, grads, strict=True):
            slot.copy_(grad)  # the caller writes gradients into optimizer.grads
        for param, grad in zip(theirs, grads, strict=True):
            param.grad = grad.clone()
        optimizer.step()
        reference.step()
        for mine, expected in zip(ours, theirs, strict=True):
            # Same arithmetic in the same order, so bit for bit the same.
            assert torch.equal(mine, expected.detach()), f"differs at step {step}"
    assert not torch.equal(ours[0], weight), "the parameters must have moved"


def test_sgd_updates_the_model_parameters_in_place():
    layer = torch.nn.Linear(3, 2)
    before = layer.weight.detach().clone()
    optimizer = SGD(list(layer.parameters()), lr=0.5)
    optimizer.grads[0].fill_(1.0)
    optimizer.grads[1].fill_(2.0)
    optimizer.step()
    torch.testing.assert_close(layer.weight.detach(), before - 0.5)
    assert layer.weight.requires_grad, "the module's parameters stay parameters"


def test_one_plain_step_by_hand():
    param = torch.tensor([1.0, -2.0])
    optimizer = SGD([param], lr=0.1, weight_decay=0.5)
    optimizer.grads[0].copy_(torch.tensor([0.2, 0.4]))
    optimizer.step()
    # g = grad + 0.5 * w = [0.7, -0.6]; w = w - 0.1 * g
    torch.testing.assert_close(param, torch.tensor([0.93, -1.94]))
