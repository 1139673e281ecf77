"""Learning-rate schedules: `lr_at` at known steps, and the trainer applying it step by step."""

from __future__ import annotations

import itertools
import math

import pytest

from softmaxreg.config import TrainConfig
from softmaxreg.schedule import is_constant, lr_at, lr_table
from softmaxreg.stack import lr_columns
from softmaxreg.trainer import train

TOTAL = 101  # steps 0..100: the middle step is 50, the last 100


@pytest.mark.parametrize(
    ("schedule", "step", "expected"),
    [
        ("constant", 0, 0.2),
        ("constant", 50, 0.2),
        ("constant", 100, 0.2),
        ("linear", 0, 0.2),
        ("linear", 25, 0.15),
        ("linear", 50, 0.1),
        ("linear", 100, 0.0),
        ("cosine", 0, 0.2),
        ("cosine", 25, 0.1 * (1 + math.cos(math.pi / 4))),
        ("cosine", 50, 0.1),
        ("cosine", 100, 0.0),
    ],
)
def test_values_at_known_steps_without_warmup(schedule, step, expected):
    assert lr_at(step, TOTAL, 0.2, schedule, 0) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_warmup_ramps_linearly_to_the_base_rate_then_the_schedule_starts(schedule):
    # 4 warm-up steps: 0.25, 0.5, 0.75, 1.0 times the base rate; no step at lr 0.
    assert [lr_at(s, 21, 2.0, schedule, 4) for s in range(4)] == [0.5, 1.0, 1.5, 2.0]
    assert lr_at(4, 21, 2.0, schedule, 4) == 2.0  # the first step after the warm-up
    # The decay runs over steps 4..20: step 12 is its middle.
    middle = {"constant": 2.0, "linear": 1.0, "cosine": 1.0}[schedule]
    assert lr_at(12, 21, 2.0, schedule, 4) == pytest.approx(middle, abs=1e-15)
    last = {"constant": 2.0, "linear": 0.0, "cosine": 0.0}[schedule]
    assert lr_at(20, 21, 2.0, schedule, 4) == pytest.approx(last, abs=1e-15)


def test_every_table_is_lr_at_to_the_last_bit_for_any_base_and_warmup():
    """lr_table scales shared decay factors by the base; the population's columns
    (softmaxreg.stack.lr_columns) do the same in float64 tensors: both must be lr_at exactly,
    for bases whose products round (0.1, 0.003, 0.7...) and with or without a warm-up."""
    bases = (0.1, 0.003, 0.7, 1.0, 0.0123456789, 0.35)
    for schedule in ("constant", "linear", "cosine"):
        for total, warmup in ((1, 0), (2, 1), (97, 0), (97, 13), (10, 30)):
            configs = [
                TrainConfig(lr=lr, lr_schedule=schedule, warmup_steps=warmup) for lr in bases
            ]
            columns = lr_columns(configs, total)
            for k, lr in enumerate(bases):
                expected = [lr_at(s, total, lr, schedule, warmup) for s in range(total)]
                assert lr_table(total, lr, schedule, warmup) == expected, (schedule, lr, warmup)
                assert columns[:, k].tolist() == expected, (schedule, lr, warmup)


def test_decay_is_monotonic_and_the_table_is_lr_at_per_step():
    for schedule in ("linear", "cosine"):
        table = lr_table(50, 0.1, schedule, 5)
        assert table == [lr_at(s, 50, 0.1, schedule, 5) for s in range(50)]
        decay = table[4:]
        assert all(a >= b for a, b in itertools.pairwise(decay))
        assert decay[-1] == 0.0


def test_edge_cases():
    # A warm-up longer than the run never leaves the ramp.
    assert lr_at(9, 10, 1.0, "linear", 100) == pytest.approx(0.1)
    # A single step after the warm-up (or a one-step run) keeps the base rate.
    assert lr_at(0, 1, 0.3, "cosine", 0) == 0.3
    assert lr_at(3, 4, 0.3, "linear", 3) == 0.3
    assert is_constant("constant", 0) and not is_constant("constant", 1)
    assert not is_constant("cosine", 0)
    with pytest.raises(ValueError, match="unknown learning-rate schedule"):
        lr_at(5, 10, 0.1, "step", 0)


@pytest.mark.parametrize("momentum", [0.0, 0.5], ids=["fused_step", "optimizer"])
def test_train_applies_the_schedule_and_ends_at_lr_zero(synthetic_splits, monkeypatch, momentum):
    """The lr of each step is lr_at's; with linear decay the last step uses 0. Plain SGD gets
    it as the fused step's -lr / B, momentum as the optimiser's lr."""
    import softmaxreg.model
    import softmaxreg.optim

    seen: list[float] = []
    original_step = softmaxreg.optim.SGD.step
    original_fused = softmaxreg.model.FusedSGDStep.__call__

    def recording_step(self):
        seen.append(self.lr)
        original_step(self)

    def recording_fused(self, x, targets, scale):
        seen.append(-scale * x.shape[0])
        return original_fused(self, x, targets, scale)

    monkeypatch.setattr(softmaxreg.optim.SGD, "step", recording_step)
    monkeypatch.setattr(softmaxreg.model.FusedSGDStep, "__call__", recording_fused)
    config = TrainConfig(
        batch_size=500,
        lr=0.1,
        epochs=3,
        device="cpu",
        lr_schedule="linear",
        warmup_steps=2,
        momentum=momentum,
    )
    train(config, synthetic_splits)
    total = 3 * 4  # 2000 examples / batch 500, three epochs
    assert seen == pytest.approx(lr_table(total, 0.1, "linear", 2), rel=1e-15, abs=0)
    assert seen[0] == pytest.approx(0.05) and seen[1] == pytest.approx(0.1) and seen[-1] == 0.0


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_scheduled_runs_differ_from_constant_and_from_each_other(synthetic_splits, schedule):
    base = {"batch_size": 200, "lr": 0.05, "epochs": 2, "device": "cpu"}
    constant = train(TrainConfig(**base, lr_schedule="constant"), synthetic_splits)
    scheduled = train(TrainConfig(**base, lr_schedule=schedule), synthetic_splits)
    # The first step is identical (lr 0.05 both), so the first epoch's loss differs only later.
    assert scheduled.last.train_loss != constant.last.train_loss
    assert scheduled.epochs[0].train_loss != constant.epochs[0].train_loss
