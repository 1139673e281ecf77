"""The models: closed-form gradients against autograd and a hand-worked case; the ablation model.

`SoftmaxRegression.loss_and_gradients` skips autograd for speed, so it is checked here against
`F.cross_entropy(model(x), y)` differentiated by autograd, in float64 so the tolerance can be
tight enough to catch any real mistake (a wrong sign, a missing 1/batch, a transposed weight).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from softmaxreg.model import (
    IMAGE_PIXELS,
    NUM_CLASSES,
    ClosedFormStep,
    FusedSGDStep,
    SoftmaxRegression,
    TutorialDoubleSoftmax,
    build_model,
)

# The double softmax's loss cannot go below this: the best a probability vector p can do is
# p = onehot(y), and cross_entropy(onehot(y), y) = -1 + log(e + 9) = log(1 + 9/e) ≈ 1.4612.
DOUBLE_SOFTMAX_LOSS_FLOOR = math.log(1 + 9 / math.e)


def random_batch(
    batch: int, seed: int, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, IMAGE_PIXELS, generator=generator, dtype=dtype)
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=generator)
    return x, y


def closed_form(model: SoftmaxRegression, x: torch.Tensor, y: torch.Tensor):
    grads = [torch.full_like(p, float("nan")) for p in model.parameters()]  # must be overwritten
    loss = model.loss_and_gradients(x, y, grads)
    return loss, grads


def autograd_reference(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    model.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def trained_looking_model(seed: int, dtype: torch.dtype = torch.float64) -> SoftmaxRegression:
    """Weights larger than at initialisation, so the softmax is far from uniform."""
    model = build_model("logits", seed).to(dtype)
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(20.0)
    return model


@pytest.mark.parametrize(
    ("batch", "labels"),
    [
        (1, None),
        (7, None),
        (100, None),
        (6, [3, 3, 3, 3, 3, 3]),  # every example the same class
        (8, [0, 9, 0, 9, 1, 1, 1, 1]),
    ],
)
def test_closed_form_equals_autograd_float64(batch, labels):
    model = trained_looking_model(seed=batch)
    x, y = random_batch(batch, seed=batch + 1)
    if labels is not None:
        y = torch.tensor(labels)

    loss, grads = closed_form(model, x, y)
    ref_loss, ref_grads = autograd_reference(model, x, y)

    assert loss.dtype == torch.float64 and loss.shape == ()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    assert [g.shape for g in grads] == [(NUM_CLASSES, IMAGE_PIXELS), (NUM_CLASSES,)]
    for grad, ref in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(grad, ref, rtol=1e-10, atol=1e-12)
    assert ref_grads[0].abs().max() > 1e-3, "the case must not be trivially zero"


def test_closed_form_equals_autograd_float32_as_trained():
    model = build_model("logits", seed=0)
    x, y = random_batch(100, seed=1, dtype=torch.float32)
    loss, grads = closed_form(model, x, y)
    ref_loss, ref_grads = autograd_reference(model, x, y)
    torch.testing.assert_close(loss, ref_loss)
    for grad, ref in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(grad, ref, rtol=1e-4, atol=1e-6)


def test_closed_form_leaves_the_weights_and_inputs_alone():
    model = trained_looking_model(seed=3)
    x, y = random_batch(5, seed=4)
    before = [p.clone() for p in model.parameters()]
    x_before = x.clone()
    first = closed_form(model, x, y)
    second = closed_form(model, x, y)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert torch.equal(x, x_before)
    assert torch.equal(first[0], second[0])
    assert all(torch.equal(a, b) for a, b in zip(first[1], second[1], strict=True))


def test_fused_sgd_step_equals_closed_form_gradients_then_sgd():
    """Three stacked members at different learning rates, float64: after every batch (the last
    one smaller, with its own -lr / B) the fused step's weights and log-likelihoods are those of
    `ClosedFormStep`'s gradients followed by w = w - lr * grad."""
    models = [trained_looking_model(seed) for seed in (5, 6, 7)]
    weight = torch.stack([m.linear.weight.detach() for m in models])  # (K, classes, pixels)
    bias = torch.stack([m.linear.bias.detach() for m in models]).unsqueeze(2)
    initial = weight.clone()
    lrs = torch.tensor([0.5, 0.1, 0.02], dtype=torch.float64).view(3, 1, 1)
    fused_weight, fused_bias = weight.clone(), bias.clone()
    fused = FusedSGDStep(fused_weight, fused_bias, members=3)
    grads = [torch.empty_like(weight), torch.empty_like(bias)]
    reference = ClosedFormStep(weight, bias, *grads, members=3)
    for batch, seed in ((8, 1), (8, 2), (3, 3)):
        x, y = random_batch(batch, seed)
        targets = y.view(1, 1, -1).expand(3, 1, -1)
        picked = fused(x, targets, -lrs / batch)
        expected = reference(x, targets)
        weight.sub_(lrs * grads[0])
        bias.sub_(lrs * grads[1])
        torch.testing.assert_close(picked, expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(fused_weight, weight, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(fused_bias, bias, rtol=1e-12, atol=1e-12)
    assert (weight - initial).abs().max() > 1e-2, "the updates must have moved the weights"


def test_hand_worked_zero_weights():
    """W = 0, b = 0: every class has probability 1/10, so loss = log 10 and the gradients are
    dL/dW[k] = mean_i (1/10 - [y_i = k]) x_i and dL/db[k] = mean_i (1/10 - [y_i = k])."""
    model = SoftmaxRegression().double()
    with torch.no_grad():
        model.linear.weight.zero_()
        model.linear.bias.zero_()
    x = torch.zeros(2, IMAGE_PIXELS, dtype=torch.float64)
    x[0, 0] = 2.0  # example 0: class 3, one bright pixel
    x[1, 5] = -1.0  # example 1: class 7, one dark pixel
    y = torch.tensor([3, 7])

    loss, (grad_w, grad_b) = closed_form(model, x, y)

    assert loss.item() == pytest.approx(math.log(10), abs=1e-15)
    expected_w = torch.zeros(NUM_CLASSES, IMAGE_PIXELS, dtype=torch.float64)
    expected_w[:, 0] = 0.1 * 2.0 / 2  # 1/10 of pixel 0 of example 0, averaged over 2
    expected_w[3, 0] = (0.1 - 1) * 2.0 / 2
    expected_w[:, 5] = 0.1 * -1.0 / 2
    expected_w[7, 5] = (0.1 - 1) * -1.0 / 2
    expected_b = torch.full((NUM_CLASSES,), 0.1, dtype=torch.float64)
    expected_b[3] = expected_b[7] = (0.1 + 0.1 - 1) / 2
    torch.testing.assert_close(grad_w, expected_w, rtol=0, atol=1e-15)
    torch.testing.assert_close(grad_b, expected_b, rtol=0, atol=1e-15)
    assert grad_b.sum().item() == pytest.approx(0.0, abs=1e-15)  # softmax rows sum to one


def test_forward_is_the_linear_layer_on_flattened_images():
    model = build_model("logits", seed=0)
    images = torch.randn(4, 28, 28, generator=torch.Generator().manual_seed(0))
    expected = images.reshape(4, -1) @ model.linear.weight.T + model.linear.bias
    torch.testing.assert_close(model(images), expected)


def test_double_softmax_outputs_probabilities_and_respects_its_loss_floor():
    model = build_model("tutorial_double_softmax", seed=0).double()
    assert isinstance(model, TutorialDoubleSoftmax)
    x, y = random_batch(64, seed=2)
    probabilities = model(x)
    assert (probabilities >= 0).all() and (probabilities <= 1).all()
    torch.testing.assert_close(
        probabilities.sum(dim=1), torch.ones(64, dtype=torch.float64), rtol=0, atol=1e-12
    )
    grads = [torch.zeros_like(p) for p in model.parameters()]
    assert model.loss_and_gradients(x, y, grads).item() >= DOUBLE_SOFTMAX_LOSS_FLOOR

    # Make the model certain and right: its loss comes down to the floor, never below it,
    # while the logits model's loss on the same weights goes to zero.
    with torch.no_grad():
        model.linear.weight.zero_()
        model.linear.bias.zero_()
    certain_x = torch.zeros(NUM_CLASSES, IMAGE_PIXELS, dtype=torch.float64)
    certain_x[torch.arange(NUM_CLASSES), torch.arange(NUM_CLASSES)] = 1.0
    with torch.no_grad():
        model.linear.weight[:, :NUM_CLASSES] = 100.0 * torch.eye(NUM_CLASSES)
    certain_y = torch.arange(NUM_CLASSES)
    floor_loss = model.loss_and_gradients(certain_x, certain_y, grads).item()
    assert floor_loss == pytest.approx(DOUBLE_SOFTMAX_LOSS_FLOOR, abs=1e-9)
    logits_model = SoftmaxRegression().double()
    logits_model.load_state_dict(model.state_dict())
    logits_grads = [torch.zeros_like(p) for p in logits_model.parameters()]
    assert logits_model.loss_and_gradients(certain_x, certain_y, logits_grads).item() < 1e-30


def test_double_softmax_gradients_are_those_of_its_own_loss():
    model = build_model("tutorial_double_softmax", seed=1).double()
    x, y = random_batch(10, seed=3)
    grads = [torch.zeros_like(p) for p in model.parameters()]
    loss = model.loss_and_gradients(x, y, grads)

    # Independent reference: a plain Linear, softmax, then CrossEntropyLoss (the tutorial).
    linear = nn.Linear(IMAGE_PIXELS, NUM_CLASSES).double()
    linear.load_state_dict(model.linear.state_dict())
    ref_loss = nn.CrossEntropyLoss()(torch.softmax(linear(x), dim=1), y)
    ref_loss.backward()
    torch.testing.assert_close(loss, ref_loss.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(grads[0], linear.weight.grad, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(grads[1], linear.bias.grad, rtol=1e-10, atol=1e-14)
    # Its loss is not the logits model's: softmax really is applied twice.
    logits_loss = F.cross_entropy(linear(x), y)
    assert abs(loss.item() - logits_loss.item()) > 1e-3


def test_build_model_is_seeded_standard_init_and_keeps_the_global_rng():
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    model = build_model("logits", seed=7)
    assert torch.equal(torch.get_rng_state(), state)

    torch.manual_seed(7)
    reference = nn.Linear(IMAGE_PIXELS, NUM_CLASSES)  # PyTorch's default initialisation
    assert torch.equal(model.linear.weight, reference.weight)
    assert torch.equal(model.linear.bias, reference.bias)
    same = build_model("logits", seed=7)
    other = build_model("logits", seed=8)
    assert torch.equal(same.linear.weight, model.linear.weight)
    assert not torch.equal(other.linear.weight, model.linear.weight)
    # The ablation starts from exactly the same weights, so only the loss differs.
    ablation = build_model("tutorial_double_softmax", seed=7)
    assert torch.equal(ablation.linear.weight, model.linear.weight)
