"""Time-to-accuracy: each batch size at its best learning rate, DAWNBench-style.

1. Learning-rate grid per batch size, on the validation split (seed 0): each grid point trains
   `sweep_epochs` epochs and is scored by its best validation accuracy; the best lr wins (ties go
   to the smaller lr). A plain grid, not an Optuna study, so every batch size sees exactly the
   same candidates; the Optuna sweep itself is measured in `sweep_throughput`.
2. With that lr, seeds 1..n (disjoint from the selection seed) train until validation accuracy
   reaches the highest target or `tta_max_epochs` run out. Time-to-target is the training time
   (`EpochMetrics.train_seconds_total`, evaluation excluded, warm-up epoch included) at the end of
   the first epoch whose validation accuracy reaches the target. The median over seeds counts a
   seed that never got there as infinitely slow, so a median is only reported when most seeds
   reached the target; the fraction that did is always shown.

The same code serves MNIST (targets 0.92 and 0.91) and Fashion-MNIST (see `TARGETS`).
"""

from __future__ import annotations

import math
import statistics

import pandas as pd

from benchmarks.common import Context, SectionResult, Table
from benchmarks.time_to_accuracy_plots import plot
from softmaxreg.config import TrainConfig
from softmaxreg.data import DataSplits
from softmaxreg.trainer import EpochMetrics, TrainingDiverged, train

TARGETS: dict[str, tuple[float, ...]] = {
    # 0.92 is the target. Plain-SGD softmax regression tops out around 0.915-0.92 on this
    # 55k/5k split, so 0.91 is reported beside it rather than silently replacing it.
    "mnist": (0.92, 0.91),
    # Softmax regression reaches about 0.85 on Fashion-MNIST; 0.92 would never be reached.
    "fashion_mnist": (0.85, 0.84),
}
TARGET_NOTES: dict[str, str] = {
    "mnist": "0.92 is the issue's target; plain-SGD softmax regression tops out around "
    "0.915-0.92 validation accuracy on this 55k/5k split, so 0.91 is reported beside it",
    "fashion_mnist": "softmax regression tops out near 0.85 on Fashion-MNIST, so MNIST's 0.92 "
    "would never be reached; 0.85 and 0.84 play the roles of 0.92 and 0.91",
}
SELECTION_SEED = 0


def targets_for(data: DataSplits) -> tuple[float, ...]:
    return TARGETS.get(data.name, TARGETS["mnist"])


def lr_sweep(context: Context, data: DataSplits, label: str) -> pd.DataFrame:
    """Grid over (batch size, lr); one row per point, scored on the validation split."""
    settings = context.settings
    rows = []
    total = len(settings.batch_sizes) * len(settings.sweep_lrs)
    done = 0
    for batch_size in settings.batch_sizes:
        context.progress.line(
            f"  {label}: lr grid, batch size {batch_size} ({done}/{total} points done)"
        )
        for lr in settings.sweep_lrs:
            done += 1
            config = TrainConfig(
                batch_size=batch_size,
                lr=lr,
                epochs=settings.sweep_epochs,
                seed=SELECTION_SEED,
                device=context.device.type,
            )
            row: dict[str, object] = {"batch_size": batch_size, "lr": lr}
            try:
                result = train(config, data)
            except TrainingDiverged as error:
                rows.append({**row, "diverged": True, "diverged_at_epoch": error.epoch})
                continue
            rows.append(
                {
                    **row,
                    "diverged": False,
                    "best_val_accuracy": result.best_val_accuracy,
                    "best_epoch": result.best_epoch.epoch,
                    "final_val_accuracy": result.final_val_accuracy,
                    "test_accuracy_at_best_val": result.test_accuracy_at_best_val,
                    "train_seconds": result.total_train_seconds,
                }
            )
    frame = pd.DataFrame(rows)
    for column in ("best_val_accuracy", "best_epoch", "diverged_at_epoch"):
        if column not in frame:
            frame[column] = math.nan
    return frame


def best_lrs(sweep: pd.DataFrame) -> dict[int, float]:
    """The best lr per batch size (highest best validation accuracy; ties to the smaller lr)."""
    best = {}
    for batch_size, group in sweep[~sweep.diverged].groupby("batch_size"):
        group = group.sort_values("lr")
        best[int(batch_size)] = float(group.loc[group.best_val_accuracy.idxmax(), "lr"])
    return best


def first_reaching(history: list[EpochMetrics], target: float) -> EpochMetrics | None:
    return next((m for m in history if m.val_accuracy >= target), None)


def time_to_targets(
    context: Context, data: DataSplits, lrs: dict[int, float], label: str
) -> pd.DataFrame:
    """One row per (batch size, seed): seconds and epochs to each target, or NaN if never."""
    settings = context.settings
    targets = targets_for(data)
    rows = []
    for batch_size, lr in lrs.items():
        context.progress.line(
            f"  {label}: time to {targets[0]:.0%}, batch size {batch_size} at lr {lr:g}, "
            f"{settings.seeds} seed(s)"
        )
        for seed in range(1, settings.seeds + 1):
            config = TrainConfig(
                batch_size=batch_size,
                lr=lr,
                epochs=settings.tta_max_epochs,
                seed=seed,
                device=context.device.type,
                target_accuracy=targets[0],
            )
            row: dict[str, object] = {"batch_size": batch_size, "lr": lr, "seed": seed}
            try:
                # Stop as soon as the highest target is reached: later epochs change nothing.
                result = train(config, data, callback=lambda m: m.val_accuracy >= max(targets))
            except TrainingDiverged:
                rows.append({**row, "diverged": True, "epochs_run": math.nan})
                continue
            row.update(
                diverged=False,
                epochs_run=len(result.epochs),
                best_val_accuracy=result.best_val_accuracy,
                steady_epoch_seconds=result.steady_epoch_seconds,
            )
            for target in targets:
                reached = first_reaching(result.epochs, target)
                row[f"seconds_to_{target:g}"] = reached.train_seconds_total if reached else math.nan
                row[f"epochs_to_{target:g}"] = reached.epoch if reached else math.nan
            rows.append(row)
    return pd.DataFrame(rows)


def median_with_misses(values: pd.Series) -> float:
    """Median where a miss (NaN) counts as infinitely slow; NaN if that median is a miss."""
    median = statistics.median([math.inf if math.isnan(v) else v for v in values])
    return math.nan if math.isinf(median) else median


def summarise(
    sweep: pd.DataFrame, lrs: dict[int, float], tta: pd.DataFrame, targets: tuple[float, ...]
) -> pd.DataFrame:
    """One row per batch size: best lr, its sweep score, and per target: reached n/k, medians."""
    rows = []
    for batch_size, lr in lrs.items():
        point = sweep[(sweep.batch_size == batch_size) & (sweep.lr == lr)].iloc[0]
        runs = tta[tta.batch_size == batch_size]
        row: dict[str, object] = {
            "batch_size": batch_size,
            "best_lr": lr,
            "sweep_best_val_accuracy": point.best_val_accuracy,
            "seeds": len(runs),
        }
        for target in targets:
            seconds = runs[f"seconds_to_{target:g}"] if len(runs) else pd.Series(dtype=float)
            epochs = runs[f"epochs_to_{target:g}"] if len(runs) else pd.Series(dtype=float)
            reached = int(seconds.notna().sum())
            row[f"reached_{target:g}"] = f"{reached}/{len(runs)}"
            row[f"median_seconds_to_{target:g}"] = (
                median_with_misses(seconds) if len(runs) else math.nan
            )
            row[f"fastest_seconds_to_{target:g}"] = seconds.min() if reached else math.nan
            row[f"median_epochs_to_{target:g}"] = (
                median_with_misses(epochs) if len(runs) else math.nan
            )
        row["median_best_val_accuracy"] = (
            runs.best_val_accuracy.median() if "best_val_accuracy" in runs else math.nan
        )
        rows.append(row)
    return pd.DataFrame(rows)


def run(context: Context) -> SectionResult:
    result = run_dataset(context, context.mnist, key="time_to_accuracy")
    result.title = f"Time-to-accuracy per batch size ({context.mnist.name})"
    return result


def run_dataset(context: Context, data: DataSplits, key: str) -> SectionResult:
    settings = context.settings
    targets = targets_for(data)
    sweep = lr_sweep(context, data, key)
    lrs = best_lrs(sweep)
    tta = time_to_targets(context, data, lrs, key)
    summary = summarise(sweep, lrs, tta, targets)

    result = SectionResult(key=key, title=f"Time-to-accuracy per batch size ({data.name})")
    lr_grid = ", ".join(f"{lr:g}" for lr in settings.sweep_lrs)
    result.text.append(
        f"Dataset `{data.name}` (checksum `{data.checksum}`), {data.train_x.shape[0]:,} training "
        f"/ {data.val_x.shape[0]:,} validation examples. Best lr per batch size from a grid "
        f"({lr_grid}), {settings.sweep_epochs} epochs per point, seed {SELECTION_SEED}, scored "
        f"by best validation accuracy. Then seeds 1-{settings.seeds} train at that lr for up to "
        f"{settings.tta_max_epochs} epochs; time-to-target is training seconds (evaluation "
        f"excluded, warm-up included) until validation accuracy first reaches the target, "
        f"checked once per epoch. Medians count a seed that never reached the target as "
        f"infinitely slow, so '—' means most seeds did not reach it; `reached` says how many did."
    )
    note = TARGET_NOTES.get(data.name, "synthetic data: MNIST's targets, for the smoke check")
    result.text.append(
        "Targets: " + " and ".join(f"{t:.0%}" for t in targets) + f" validation accuracy ({note})."
    )
    primary, *others = targets
    reached_any = summary[summary[f"median_seconds_to_{primary:g}"].notna()]
    if reached_any.empty:
        best_val = summary.median_best_val_accuracy.max() if len(summary) else math.nan
        result.text.append(
            f"**No batch size reached {primary:.0%} validation accuracy in most seeds** (best "
            f"median validation accuracy {best_val:.4f}); "
            + (
                "the secondary target(s) "
                + ", ".join(f"{t:.0%}" for t in others)
                + " show how fast each batch size gets close."
                if others
                else ""
            )
        )
    for target in targets:
        column = summary[f"median_seconds_to_{target:g}"]
        if column.notna().any():
            fastest = summary.loc[column.idxmin()]
            seconds = float(fastest[f"median_seconds_to_{target:g}"])
            result.metrics[f"fastest_median_seconds_to_{target:g}"] = seconds
            text = (
                f"{seconds:.2f} s (bs {int(fastest.batch_size)}, lr {fastest.best_lr:g}, "
                f"{fastest[f'reached_{target:g}']} seeds reached it)"
            )
        else:
            text = (
                "not reached by most seeds at any batch size (reached: "
                + ", ".join(
                    f"bs {int(r.batch_size)} {r[f'reached_{target:g}']}"
                    for _, r in summary.iterrows()
                )
                + ")"
            )
        result.headlines.append(
            (f"{data.name}: fastest median time to {target:.0%} validation accuracy", text)
        )
    for _, row in summary.iterrows():
        bs = int(row.batch_size)
        result.metrics[f"best_lr_bs{bs}"] = float(row.best_lr)
        result.metrics[f"sweep_best_val_accuracy_bs{bs}"] = float(row.sweep_best_val_accuracy)
        for target in targets:
            value = row[f"median_seconds_to_{target:g}"]
            if not math.isnan(value):
                result.metrics[f"median_seconds_to_{target:g}_bs{bs}"] = float(value)
    result.tables += [
        Table(f"{key}", "Best lr and time-to-accuracy per batch size", summary),
        Table(f"{key}_lr_sweep", "Learning-rate grid (validation split)", sweep, show=False),
        Table(f"{key}_seeds", "Every time-to-accuracy run", tta, show=False),
    ]
    record_rounds(result, tta, targets, data.name)
    result.plots += plot(sweep, summary, targets, data.name, key, context)
    result.params = {
        "dataset": data.name,
        "checksum": data.checksum,
        "lr_grid": lr_grid,
        "sweep_epochs": str(settings.sweep_epochs),
        "seeds": str(settings.seeds),
        "max_epochs": str(settings.tta_max_epochs),
        "targets": " ".join(f"{t:g}" for t in targets),
    }
    return result


def record_rounds(
    result: SectionResult, tta: pd.DataFrame, targets: tuple[float, ...], name: str
) -> None:
    """Per batch size and its chosen lr, every seed: steady epoch, seconds to each target (the
    seeds that reached it) and best validation accuracy."""
    label = name + ": {what}, bs {batch_size}, lr {lr}"
    runs = tta[~tta.diverged.astype(bool)]
    result.add_rounds_by(
        runs, ["batch_size", "lr"], "steady_epoch_seconds", label.replace("{what}", "steady epoch")
    )
    for target in targets:
        column = f"seconds_to_{target:g}"
        reached = runs[runs[column].notna()]
        what = f"seconds to {target:.0%} validation accuracy"
        result.add_rounds_by(reached, ["batch_size", "lr"], column, label.replace("{what}", what))
    result.add_rounds_by(
        runs,
        ["batch_size", "lr"],
        "best_val_accuracy",
        label.replace("{what}", "best validation accuracy"),
        kind="accuracy",
        better="higher",
        unit="",
    )
