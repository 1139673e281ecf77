"""The trainer on small synthetic splits: what it reports, when it stops, and that it is exact.

The strongest check is `test_trainer_equals_a_plain_pytorch_training_loop`: the same run done the
textbook way (autograd, `torch.optim.SGD`, the same shuffled batches) must give the same losses,
accuracies and weights. The rest pin down each reported figure and each way training can end.
"""

from __future__ import annotations

import ast
import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import softmaxreg
from softmaxreg.config import TrainConfig
from softmaxreg.data import DataSplits
from softmaxreg.device import DeviceUnavailableError
from softmaxreg.model import build_model
from softmaxreg.synthetic import make_synthetic_splits
from softmaxreg.trainer import EpochMetrics, TrainingDiverged, TrainResult, evaluate, train

TIMING_FIELDS = {
    "epoch_seconds",
    "eval_seconds",
    "samples_per_second",
    "train_seconds_total",
}


def config(**overrides) -> TrainConfig:
    # Constant lr: the textbook loop below is torch.optim.SGD at a fixed lr (schedules are
    # checked in test_schedule.py).
    return TrainConfig(**{"epochs": 3, "device": "cpu", "lr_schedule": "constant", **overrides})


def figures(result: TrainResult) -> list[dict[str, object]]:
    """Every per-epoch figure except the timings."""
    return [
        {k: v for k, v in dataclasses.asdict(m).items() if k not in TIMING_FIELDS}
        for m in result.epochs
    ]


@dataclasses.dataclass
class ReferenceRun:
    train_losses: list[float]
    val_accuracies: list[float]
    test_accuracies: list[float]
    weights: list[torch.Tensor]
    diverged_at: tuple[int, int] | None  # (epoch, step) of the first non-finite loss


def reference_run(cfg: TrainConfig, data: DataSplits) -> ReferenceRun:
    """The textbook loop: autograd, torch.optim.SGD, a fresh shuffle per epoch drawn from a
    generator seeded with `cfg.seed`, the same initial weights, the epoch's mean loss weighted
    by batch size."""
    model = build_model(cfg.model, cfg.seed)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    n = data.train_x.shape[0]
    run = ReferenceRun([], [], [], [], None)
    for epoch in range(1, cfg.epochs + 1):
        order = torch.randperm(n, generator=generator)
        loss_sum = 0.0
        for step, first in enumerate(range(0, n, cfg.batch_size), start=1):
            batch = order[first : first + cfg.batch_size]
            loss = F.cross_entropy(model(data.train_x[batch]), data.train_y[batch])
            if not torch.isfinite(loss):
                run.diverged_at = (epoch, step)
                return run
            loss_sum += loss.item() * len(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        run.train_losses.append(loss_sum / n)
        with torch.no_grad():
            for x, y, out in (
                (data.val_x, data.val_y, run.val_accuracies),
                (data.test_x, data.test_y, run.test_accuracies),
            ):
                out.append((model(x).argmax(1) == y).double().mean().item())
    run.weights = [p.detach() for p in model.parameters()]
    return run


@pytest.mark.parametrize(
    "overrides",
    [
        {"batch_size": 300, "lr": 0.01},  # 2000 / 300: the last batch has 200
        {"batch_size": 100, "lr": 0.002, "momentum": 0.9, "weight_decay": 1e-3, "seed": 3},
        {"batch_size": 500, "lr": 0.1, "model": "tutorial_double_softmax", "seed": 1},
    ],
    ids=["plain", "momentum_and_weight_decay", "double_softmax"],
)
def test_trainer_equals_a_plain_pytorch_training_loop(synthetic_splits, overrides):
    cfg = config(**overrides)
    result = train(cfg, synthetic_splits)
    reference = reference_run(cfg, synthetic_splits)

    assert [m.epoch for m in result.epochs] == [1, 2, 3]
    got_losses = [m.train_loss for m in result.epochs]
    # Learning rates in the stable regime, so float32 rounding differences stay at ~1e-7
    # instead of being amplified (at lr 0.05 the loss jumps about and they reach 1e-4).
    torch.testing.assert_close(got_losses, reference.train_losses, rtol=1e-5, atol=0)
    assert [m.val_accuracy for m in result.epochs] == pytest.approx(
        reference.val_accuracies, abs=2 / 500
    )
    assert [m.test_accuracy for m in result.epochs] == pytest.approx(
        reference.test_accuracies, abs=2 / 500
    )
    for mine, expected in zip(result.model.parameters(), reference.weights, strict=True):
        torch.testing.assert_close(mine.detach(), expected, rtol=1e-4, atol=1e-6)


def test_train_loss_is_the_size_weighted_mean_over_the_epoch(synthetic_splits):
    """With a learning rate too small to move the weights, every batch sees the initial model,
    so the epoch's mean loss must be the initial model's loss over the whole training split.
    Batches of 1500 and 500: an unweighted mean of the two, or the last batch alone, differs."""
    cfg = config(batch_size=1500, lr=1e-30, epochs=2, seed=4)
    initial = build_model("logits", seed=4)
    full_loss, _ = evaluate(initial, synthetic_splits.train_x, synthetic_splits.train_y)

    result = train(cfg, synthetic_splits)

    for metrics in result.epochs:
        assert metrics.train_loss == pytest.approx(full_loss, rel=1e-6)
    val_loss, val_accuracy = evaluate(initial, synthetic_splits.val_x, synthetic_splits.val_y)
    assert result.last.val_loss == pytest.approx(val_loss, rel=1e-6)
    assert result.last.val_accuracy == val_accuracy


def test_same_seed_same_device_gives_identical_figures(synthetic_splits):
    cfg = config(batch_size=50, lr=0.05, momentum=0.5, seed=11)
    first, second = train(cfg, synthetic_splits), train(cfg, synthetic_splits)
    assert figures(first) == figures(second)
    for a, b in zip(first.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_different_seed_gives_different_figures(synthetic_splits):
    first = train(config(batch_size=50, lr=0.05, seed=1), synthetic_splits)
    second = train(config(batch_size=50, lr=0.05, seed=2), synthetic_splits)
    assert [m.train_loss for m in first.epochs] != [m.train_loss for m in second.epochs]
    assert not torch.equal(first.model.linear.weight, second.model.linear.weight)


def test_train_leaves_the_global_rng_state_alone(synthetic_splits):
    torch.manual_seed(2024)
    state = torch.get_rng_state()
    train(config(batch_size=100, epochs=2), synthetic_splits)
    assert torch.equal(torch.get_rng_state(), state)


def test_huge_learning_rate_raises_training_diverged_naming_epoch_and_step(synthetic_splits):
    with pytest.raises(TrainingDiverged) as raised:
        train(config(lr=1e38), synthetic_splits)
    error = raised.value
    # Step 1 sees the initial weights; the update of step 1 overflows them.
    assert (error.epoch, error.step) == (1, 2)
    assert not math.isfinite(error.loss) and error.lr == 1e38
    assert "epoch 1, step 2" in str(error) and "1e+38" in str(error)


def test_divergence_in_a_later_epoch_names_the_step_where_it_happened(synthetic_splits):
    """Weight decay with lr * weight_decay > 2 makes |w| grow geometrically; the first
    non-finite loss comes in epoch 3. The textbook loop must agree on where."""
    cfg = config(batch_size=100, lr=1.0, weight_decay=5.0, epochs=10)
    seen: list[EpochMetrics] = []
    with pytest.raises(TrainingDiverged) as raised:
        train(cfg, synthetic_splits, callback=seen.append)
    error = raised.value
    reference = reference_run(cfg, synthetic_splits)
    assert reference.diverged_at is not None and reference.diverged_at[0] > 1
    assert (error.epoch, error.step) == reference.diverged_at
    assert f"epoch {error.epoch}, step {error.step}" in str(error)
    # Epochs before it completed and were reported; the diverged one was not.
    assert [m.epoch for m in seen] == list(range(1, error.epoch))
    assert all(math.isfinite(m.train_loss) for m in seen)


def test_callback_sees_every_epoch_and_true_stops_early(synthetic_splits):
    seen: list[EpochMetrics] = []

    def stop_after_two(metrics: EpochMetrics) -> bool:
        seen.append(metrics)
        return metrics.epoch == 2

    result = train(config(epochs=5), synthetic_splits, callback=stop_after_two)
    assert result.stopped_early
    assert [m.epoch for m in result.epochs] == [1, 2]
    assert seen == result.epochs

    seen.clear()
    result = train(config(epochs=3), synthetic_splits, callback=lambda m: seen.append(m))
    assert not result.stopped_early and [m.epoch for m in seen] == [1, 2, 3]
    assert seen == result.epochs

    # Asking to stop after the last epoch is not stopping early.
    result = train(config(epochs=2), synthetic_splits, callback=lambda m: True)
    assert len(result.epochs) == 1 and result.stopped_early
    result = train(config(epochs=1), synthetic_splits, callback=lambda m: True)
    assert len(result.epochs) == 1 and not result.stopped_early


def test_timings_are_consistent_and_only_epoch_one_is_warmup(synthetic_splits):
    result = train(config(epochs=4), synthetic_splits)
    assert [m.warmup for m in result.epochs] == [True, False, False, False]
    total = 0.0
    n_train = synthetic_splits.train_x.shape[0]
    for metrics in result.epochs:
        assert metrics.epoch_seconds > 0 and metrics.eval_seconds > 0
        total += metrics.epoch_seconds
        assert metrics.train_seconds_total == pytest.approx(total, rel=1e-12)
        assert metrics.samples_per_second == pytest.approx(n_train / metrics.epoch_seconds)
    assert result.total_train_seconds == pytest.approx(total, rel=1e-12)
    assert result.warmup_epoch_seconds == result.epochs[0].epoch_seconds
    steady = sorted(m.epoch_seconds for m in result.epochs[1:])
    assert result.steady_epoch_seconds == steady[1]  # median of the three after warm-up


def hard_splits() -> DataSplits:
    """Random labels: no model reaches 100% validation accuracy on them."""
    data = make_synthetic_splits(n_train=500, n_val=200, n_test=100, seed=5)
    generator = torch.Generator().manual_seed(0)
    for name in ("train_y", "val_y"):
        labels = getattr(data, name)
        setattr(data, name, torch.randint(0, 10, labels.shape, generator=generator))
    return data


def test_time_to_target_is_none_when_never_reached():
    result = train(config(epochs=3, target_accuracy=1.0), hard_splits())
    assert max(m.val_accuracy for m in result.epochs) < 1.0
    assert result.time_to_target_seconds is None
    assert math.isnan(result.summary()["time_to_target_seconds"])


def test_time_to_target_is_cumulative_training_time_at_the_first_crossing(synthetic_splits):
    cfg = config(batch_size=200, lr=0.002, epochs=6)
    probe = train(cfg, synthetic_splits)
    accuracies = [m.val_accuracy for m in probe.epochs]
    # A target first crossed at a later epoch (deterministic, so the rerun crosses it there too).
    crossing = next(i for i in range(1, len(accuracies)) if accuracies[i] > max(accuracies[:i]))
    target = accuracies[crossing]

    result = train(dataclasses.replace(cfg, target_accuracy=target), synthetic_splits)

    assert [m.val_accuracy for m in result.epochs] == accuracies
    assert result.time_to_target_seconds == result.epochs[crossing].train_seconds_total
    assert result.time_to_target_seconds > result.epochs[0].train_seconds_total
    reached_at_once = train(dataclasses.replace(cfg, target_accuracy=0.01), synthetic_splits)
    assert reached_at_once.time_to_target_seconds == reached_at_once.epochs[0].epoch_seconds


def test_batch_larger_than_the_training_set_is_one_full_batch_step(synthetic_splits):
    cfg = config(batch_size=10_000, lr=0.01, epochs=2)
    result = train(cfg, synthetic_splits)
    # Epoch 1 has a single step, whose loss is the initial model's loss on all 2000 examples.
    initial_loss, _ = evaluate(
        build_model("logits", 0), synthetic_splits.train_x, synthetic_splits.train_y
    )
    assert result.epochs[0].train_loss == pytest.approx(initial_loss, rel=1e-6)
    assert result.epochs[1].train_loss < result.epochs[0].train_loss


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_an_unavailable_device_is_an_error_not_a_fallback(synthetic_splits, device):
    available = torch.cuda.is_available() if device == "cuda" else torch.backends.mps.is_available()
    if available:
        pytest.skip(f"{device} exists on this machine")
    with pytest.raises(DeviceUnavailableError, match=f"'{device}' was requested but"):
        train(config(device=device), synthetic_splits)


def test_evaluate_matches_a_direct_computation_across_chunks():
    """More rows than one evaluation chunk, so the chunked sums are exercised."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(10_000, 784, generator=generator)
    y = torch.randint(0, 10, (10_000,), generator=generator)
    model = build_model("logits", seed=0)
    loss, accuracy = evaluate(model, x, y)
    with torch.no_grad():
        logits = model(x)
    assert loss == pytest.approx(F.cross_entropy(logits.double(), y).item(), rel=1e-6)
    assert accuracy == (logits.argmax(1) == y).sum().item() / 10_000


def metrics_with(epoch: int, val_accuracy: float, test_accuracy: float) -> EpochMetrics:
    return EpochMetrics(
        epoch=epoch,
        train_loss=1.0 / epoch,
        val_loss=0.5,
        val_accuracy=val_accuracy,
        test_loss=0.5,
        test_accuracy=test_accuracy,
        epoch_seconds=2.0 if epoch == 1 else 1.0,
        eval_seconds=0.1,
        samples_per_second=100.0,
        train_seconds_total=float(epoch + 1),
        warmup=epoch == 1,
    )


def test_best_epoch_is_chosen_by_validation_earliest_on_ties():
    result = TrainResult(
        config=config(),
        device="cpu",
        epochs=[
            metrics_with(1, 0.80, 0.99),  # best test accuracy, but test never chooses
            metrics_with(2, 0.90, 0.85),
            metrics_with(3, 0.90, 0.95),
            metrics_with(4, 0.70, 0.70),
        ],
        time_to_target_seconds=None,
        stopped_early=False,
        model=build_model("logits", 0),
    )
    assert result.best_epoch.epoch == 2
    assert result.test_accuracy_at_best_val == 0.85
    assert result.final_test_accuracy == 0.70
    summary = result.summary()
    assert summary["best_epoch"] == 2.0 and summary["best_val_accuracy"] == 0.90
    assert summary["epochs_completed"] == 4.0 and summary["final_train_loss"] == 0.25
    assert summary["steady_epoch_seconds"] == 1.0 and summary["warmup_epoch_seconds"] == 2.0


@pytest.mark.parametrize(
    ("batch_size", "requested", "expected"),
    [(100, 0, 1), (512, 0, 1), (2000, 0, "current"), (100, 2, 2), (2000, 1, 1)],
)
def test_train_uses_the_chosen_thread_count_and_restores_the_callers(
    synthetic_splits, batch_size, requested, expected
):
    torch.set_num_threads(2)
    seen: list[int] = []
    result = train(
        config(batch_size=batch_size, threads=requested, epochs=1),
        synthetic_splits,
        callback=lambda m: seen.append(torch.get_num_threads()),
    )
    expected = 2 if expected == "current" else expected
    assert seen == [expected] and result.threads == expected
    assert torch.get_num_threads() == 2


def test_train_restores_the_thread_count_when_it_fails(synthetic_splits):
    torch.set_num_threads(2)
    with pytest.raises(TrainingDiverged):
        train(config(lr=1e38, threads=1), synthetic_splits)
    assert torch.get_num_threads() == 2


def test_auto_threads_grow_with_the_step_and_keep_the_callers_count_elsewhere():
    from softmaxreg.device import SINGLE_THREAD_MAX_ROWS, choose_threads

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    torch.set_num_threads(2)
    assert choose_threads(SINGLE_THREAD_MAX_ROWS, 0, cpu) == 1
    assert choose_threads(SINGLE_THREAD_MAX_ROWS + 1, 0, cpu) == 2
    # A population stays on one core whatever its size (more cores: more workers).
    assert choose_threads(SINGLE_THREAD_MAX_ROWS * 4, 0, cpu, models=8) == 1
    assert choose_threads(SINGLE_THREAD_MAX_ROWS * 4, 2, cpu, models=8) == 2
    assert choose_threads(16, 0, cuda) == 2 and choose_threads(16, 3, cpu) == 3


def test_the_library_imports_neither_optuna_nor_mlflow():
    package = Path(softmaxreg.__file__).parent
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in {"optuna", "mlflow"}, f"{source.name}: {name}"
