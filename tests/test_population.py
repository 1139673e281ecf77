"""The population trainer: each member must get what `train(config)` gives it alone.

Members are compared figure by figure (losses, accuracies, weights) with separate `train` runs on
the same synthetic splits; stopping and divergence must end one member and leave the others'
figures untouched.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from softmaxreg.config import ConfigError, TrainConfig
from softmaxreg.model import build_model, evaluate_stack
from softmaxreg.population import MemberResult, train_population
from softmaxreg.stack import Stack
from softmaxreg.trainer import EpochMetrics, TrainingDiverged, TrainResult, evaluate, train


def config(**overrides) -> TrainConfig:
    return TrainConfig(**{"batch_size": 100, "epochs": 3, "device": "cpu", **overrides})


def assert_same_run(member: MemberResult, alone: TrainResult) -> None:
    assert member.error is None
    assert member.stopped_early == alone.stopped_early
    assert [m.epoch for m in member.epochs] == [m.epoch for m in alone.epochs]
    for mine, theirs in zip(member.epochs, alone.epochs, strict=True):
        for name in ("train_loss", "val_loss", "test_loss"):
            assert getattr(mine, name) == pytest.approx(getattr(theirs, name), rel=1e-5), name
        for name, n in (("val_accuracy", 500), ("test_accuracy", 500)):
            assert getattr(mine, name) == pytest.approx(getattr(theirs, name), abs=1.01 / n)
        assert mine.warmup == theirs.warmup
    for mine, theirs in zip(member.model.parameters(), alone.model.parameters(), strict=True):
        torch.testing.assert_close(mine.detach(), theirs.detach(), rtol=1e-4, atol=1e-6)


MEMBERS = [
    config(lr=0.01),
    config(lr=0.003, momentum=0.9, weight_decay=1e-3),
    # lr 0.02, not more: train() alone takes the fused step, and above ~0.03 the first epoch on
    # these splits amplifies the two paths' float rounding to 1e-5 (here it stays near 1e-7).
    config(lr=0.02, lr_schedule="cosine", warmup_steps=5, target_accuracy=0.9),
]


# Plain SGD only: the stack takes the fused step. Batch 300: 2000 / 300 leaves a last batch of
# 200, whose step is scaled by its own -lr / 200.
PLAIN = [
    config(lr=0.01, batch_size=300, lr_schedule="constant"),
    config(lr=0.03, batch_size=300, warmup_steps=4),
    config(lr=0.002, batch_size=300, lr_schedule="linear"),
]


@pytest.mark.parametrize(
    ("members", "fused"), [(MEMBERS, False), (PLAIN, True)], ids=["general", "fused"]
)
def test_members_equal_separate_train_runs(synthetic_splits, members, fused):
    assert Stack(members, total_steps=1, device=torch.device("cpu")).fused == fused
    results = train_population(members, synthetic_splits)
    assert [r.config for r in results] == members
    for member, cfg in zip(results, members, strict=True):
        alone = train(cfg, synthetic_splits)
        assert_same_run(member, alone)
        assert (member.time_to_target_seconds is None) == (alone.time_to_target_seconds is None)
    # Different learning rates give different runs: the comparison above is not vacuous.
    assert len({r.last.train_loss for r in results}) == 3


def test_initial_weights_are_build_models(synthetic_splits):
    cfg = config(lr=1e-30, epochs=1, seed=7)
    results = train_population([cfg, cfg], synthetic_splits)
    initial = build_model("logits", 7)
    for result in results:
        for mine, expected in zip(result.model.parameters(), initial.parameters(), strict=True):
            torch.testing.assert_close(mine.detach(), expected.detach())


@pytest.mark.parametrize("members", [MEMBERS, PLAIN], ids=["general", "fused"])
def test_a_stopped_member_stops_alone(synthetic_splits, members):
    seen: list[list[int]] = [[], [], []]
    callbacks = [StopAt(seen[0], None), StopAt(seen[1], 1), StopAt(seen[2], None)]
    results = train_population(members, synthetic_splits, callbacks)
    assert seen == [[1, 2, 3], [1], [1, 2, 3]]
    assert [r.stopped_early for r in results] == [False, True, False]
    assert [len(r.epochs) for r in results] == [3, 1, 3]
    alone = train(members[1], synthetic_splits, callback=StopAt([], 1))
    assert_same_run(results[1], alone)
    for index in (0, 2):  # the stack went on without row 1: the others' rows are unchanged
        assert_same_run(results[index], train(members[index], synthetic_splits))


@dataclasses.dataclass
class StopAt:
    """A callback that records each epoch and asks to stop after epoch `stop_at`."""

    seen: list[int]
    stop_at: int | None

    def __call__(self, metrics: EpochMetrics) -> bool:
        self.seen.append(metrics.epoch)
        return metrics.epoch == self.stop_at


def test_when_every_member_stops_the_population_returns(synthetic_splits):
    results = train_population(MEMBERS[:2], synthetic_splits, [lambda m: True] * 2)
    assert [len(r.epochs) for r in results] == [1, 1]
    assert all(r.stopped_early for r in results)


@pytest.mark.parametrize("members", [MEMBERS, PLAIN], ids=["general", "fused"])
def test_a_diverging_member_fails_alone(synthetic_splits, members):
    batch_size = members[0].batch_size
    configs = [members[0], config(lr=1e35, batch_size=batch_size), members[1]]
    results = train_population(configs, synthetic_splits)
    with pytest.raises(TrainingDiverged) as alone_error:
        train(configs[1], synthetic_splits)
    error = results[1].error
    assert isinstance(error, TrainingDiverged)
    assert (error.epoch, error.step) == (alone_error.value.epoch, alone_error.value.step) == (1, 2)
    assert not math.isfinite(error.loss) and results[1].epochs == []
    assert_same_run(results[0], train(configs[0], synthetic_splits))
    assert_same_run(results[2], train(configs[2], synthetic_splits))


def test_a_member_diverging_in_a_later_epoch_keeps_its_earlier_epochs(synthetic_splits):
    # Constant lr: a decaying one shrinks lr * weight_decay below 2 before the weights blow up.
    diverging = config(lr=1.0, weight_decay=5.0, epochs=6, lr_schedule="constant")
    results = train_population([diverging, config(lr=0.01, epochs=6)], synthetic_splits)
    with pytest.raises(TrainingDiverged) as alone:
        train(diverging, synthetic_splits)
    error = results[0].error
    assert error is not None and error.epoch > 1
    assert (error.epoch, error.step) == (alone.value.epoch, alone.value.step)
    assert [m.epoch for m in results[0].epochs] == list(range(1, error.epoch))
    assert len(results[1].epochs) == 6 and results[1].error is None


def test_timing_is_the_shared_pass(synthetic_splits):
    results = train_population(MEMBERS, synthetic_splits)
    first = [m.epoch_seconds for m in results[0].epochs]
    for result in results:
        assert [m.epoch_seconds for m in result.epochs] == first
        assert result.threads == 1  # auto: 3 members x batch 100 is a small step


@pytest.mark.parametrize(
    ("field", "value"),
    [("batch_size", 50), ("seed", 1), ("epochs", 2), ("threads", 2), ("model", None)],
)
def test_members_must_share_what_fixes_the_batches(synthetic_splits, field, value):
    if field == "model":
        configs = [config(model="tutorial_double_softmax")] * 2
    else:
        configs = [config(), config(**{field: value})]
    with pytest.raises(ConfigError, match=f"^{field}="):
        train_population(configs, synthetic_splits)


def test_callbacks_must_match_configs_and_configs_must_not_be_empty(synthetic_splits):
    with pytest.raises(ConfigError, match=r"^callbacks="):
        train_population(MEMBERS, synthetic_splits, [None])
    with pytest.raises(ConfigError, match=r"^configs="):
        train_population([], synthetic_splits)


def test_on_epoch_end_follows_every_members_callback_once_per_epoch(synthetic_splits):
    events: list[tuple[str, int]] = []
    configs = [config(lr=0.01), config(lr=1e35), config(lr=0.03)]  # the second diverges

    def member_callback(name: str):
        return lambda metrics: events.append((name, metrics.epoch)) and False

    callbacks = [member_callback("a"), member_callback("b"), member_callback("c")]
    results = train_population(
        configs,
        synthetic_splits,
        callbacks,
        on_epoch_end=lambda epoch: events.append(("end", epoch)),
    )
    assert isinstance(results[1].error, TrainingDiverged)
    assert events == [(name, epoch) for epoch in (1, 2, 3) for name in ("a", "c", "end")]


def test_stacked_evaluation_equals_each_model_evaluated_alone(synthetic_splits):
    models = [build_model("logits", seed) for seed in range(4)]
    weight = torch.stack([m.linear.weight.detach() for m in models])
    bias = torch.stack([m.linear.bias.detach() for m in models]).unsqueeze(2)
    losses, accuracies = evaluate_stack(
        weight, bias, synthetic_splits.val_x, synthetic_splits.val_y
    )
    for model, loss, accuracy in zip(models, losses, accuracies, strict=True):
        alone = evaluate(model, synthetic_splits.val_x, synthetic_splits.val_y)
        assert loss == pytest.approx(alone[0], rel=1e-5)
        assert accuracy == pytest.approx(alone[1], abs=1.01 / len(synthetic_splits.val_y))
    assert len(set(losses)) == 4  # four different models: the comparison is not vacuous


def test_stacked_evaluation_resolves_tied_logits_as_argmax_does(synthetic_splits):
    """A model with zero weights ties all ten logits of every example: argmax says class 0, so
    its accuracy is the share of class 0, not 1 (every target's logit is a maximum)."""
    models = [build_model("logits", 0), build_model("logits", 1)]
    with torch.no_grad():
        models[1].linear.weight.zero_()
        models[1].linear.bias.zero_()
    weight = torch.stack([m.linear.weight.detach() for m in models])
    bias = torch.stack([m.linear.bias.detach() for m in models]).unsqueeze(2)
    x, y = synthetic_splits.val_x, synthetic_splits.val_y
    losses, accuracies = evaluate_stack(weight, bias, x, y)
    assert accuracies[1] == pytest.approx(float((y == 0).double().mean()))
    assert 0 < accuracies[1] < 0.5 and losses[1] == pytest.approx(math.log(10))
    for model, loss, accuracy in zip(models, losses, accuracies, strict=True):
        alone = evaluate(model, x, y)
        assert loss == pytest.approx(alone[0], rel=1e-5)
        assert accuracy == pytest.approx(alone[1], abs=1.01 / len(y))
