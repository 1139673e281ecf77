"""The time-to-accuracy section's plots: accuracy against lr per batch size, and seconds to
each target against batch size (each batch size at its best lr).

    result.plots += plot(sweep, summary, targets, "mnist", "time_to_accuracy", context)
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from benchmarks.common import Context


def plot(
    sweep: pd.DataFrame,
    summary: pd.DataFrame,
    targets: tuple[float, ...],
    dataset: str,
    key: str,
    context: Context,
) -> list[tuple[str, str]]:
    """Both plots of a dataset's section: (file name, caption) of each, written to --out."""
    return [
        plot_accuracy_vs_lr(sweep, targets, dataset, key, context),
        plot_time_to_targets(summary, targets, dataset, key, context),
    ]


def plot_accuracy_vs_lr(
    sweep: pd.DataFrame, targets: tuple[float, ...], dataset: str, key: str, context: Context
) -> tuple[str, str]:
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for index, (batch_size, group) in enumerate(sweep.groupby("batch_size")):
        group = group.sort_values("lr")
        axes.plot(
            group.lr,
            group.best_val_accuracy,
            marker="o",
            color=plt.cm.viridis(index / max(1, sweep.batch_size.nunique() - 1)),
            label=f"bs {batch_size}",
        )
    for target in targets:
        axes.axhline(target, color="grey", linestyle="--", linewidth=1)
    finite = sweep.best_val_accuracy.dropna()
    if len(finite):
        axes.set_ylim(max(0.0, min(finite.quantile(0.25), min(targets)) - 0.02), 1.0)
    axes.set_xscale("log")
    axes.set_xlabel("learning rate")
    axes.set_ylabel(f"best validation accuracy in {context.settings.sweep_epochs} epochs")
    axes.set_title(f"{dataset}: accuracy vs learning rate per batch size")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    name = f"{key}_accuracy_vs_lr.png"
    figure.savefig(context.out / name, dpi=110)
    plt.close(figure)
    return name, f"{dataset}: validation accuracy vs lr per batch size (dashed: targets)"


def plot_time_to_targets(
    summary: pd.DataFrame, targets: tuple[float, ...], dataset: str, key: str, context: Context
) -> tuple[str, str]:
    figure, axes = plt.subplots(figsize=(7, 4.5))
    plotted = False
    for index, target in enumerate(targets):
        column = f"median_seconds_to_{target:g}"
        if not summary[column].notna().any():
            continue
        plotted = True
        axes.plot(
            summary.batch_size,
            summary[column],
            marker="o",
            color=f"C{index}",
            label=f"{target:.0%} val accuracy",
        )
    if plotted:
        axes.set_yscale("log")
        axes.legend(fontsize=8)
    else:
        axes.text(
            0.5,
            0.5,
            "no batch size reached any target in most seeds",
            ha="center",
            va="center",
            transform=axes.transAxes,
        )
    axes.set_xscale("log", base=2)
    if len(summary):
        axes.set_xlim(summary.batch_size.min() / 1.5, summary.batch_size.max() * 1.5)
    axes.set_xlabel("batch size (at its best lr)")
    axes.set_ylabel("median training seconds to target")
    axes.set_title(f"{dataset}: time-to-accuracy (gaps: most seeds missed)")
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    name = f"{key}_time_to_accuracy.png"
    figure.savefig(context.out / name, dpi=110)
    plt.close(figure)
    return name, f"{dataset}: median seconds to each target vs batch size"
