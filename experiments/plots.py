"""The study's plots as PNG files, for the sweep's parent MLflow run.

    written, notes = write_study_plots(study, Path("plots"))

Optuna's plots (history, contour, importances, Pareto front) are drawn on a view of the study in
which the batch size is `log2_batch_size`, an integer axis on which 16, 64, 256 and 1024 are
evenly spaced (as a number, 16 and 64 would be squeezed together next to 1024), beside the
learning rate on its log axis. Two plots of our own answer the study's questions directly: every
trial's per-epoch validation accuracy coloured by batch size (pruned trials dashed), and the best
learning rate per batch size with its validation accuracy.

Each plot is attempted on its own; one that cannot be drawn yet (parameter importances need at
least two COMPLETE trials, a contour needs two parameters that varied, ...) is skipped with a
note saying why, instead of ending the sweep.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never needs a display

import matplotlib.pyplot as plt
import optuna
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState
from optuna.visualization import matplotlib as optuna_plots

ACCURACY_NAME = "best validation accuracy"
TIME_NAME = "time to accuracy (s)"
OBJECTIVE_LABELS = {"best_val_accuracy": ACCURACY_NAME, "time_to_target_seconds": TIME_NAME}
"""The study's metric names (`experiments.study` sets them) as the plots' axis labels."""
SHOWN_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


def objective_labels(study: optuna.Study) -> list[str]:
    """One readable label per objective. Optuna's contour and history plots label the objective
    with their `target_name` argument ("Objective Value" unless given), not the study's metric
    names, so every plot is given these."""
    names = study.metric_names or list(OBJECTIVE_LABELS)[: len(study.directions)]
    return [OBJECTIVE_LABELS.get(name, name) for name in names]


def _accuracy_target(trial: FrozenTrial) -> float:
    return trial.values[0]


def _log2_batch_size(trial: FrozenTrial) -> int:
    return round(math.log2(trial.params["batch_size"]))


def display_study(study: optuna.Study) -> optuna.Study:
    """An in-memory copy of the study's COMPLETE and PRUNED trials with `log2_batch_size` in
    place of `batch_size`, for Optuna's plots."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "a new study created in memory"
    try:
        view = optuna.create_study(directions=study.directions)
    finally:
        optuna.logging.set_verbosity(verbosity)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        view.set_metric_names(objective_labels(study))  # the importances' legend
    trials = [t for t in study.get_trials(deepcopy=False, states=SHOWN_STATES) if t.params]
    if not trials:
        return view
    levels = [_log2_batch_size(t) for t in trials]
    lrs = [t.params["lr"] for t in trials]
    distributions = {
        "lr": FloatDistribution(min(lrs), max(lrs), log=True),
        "log2_batch_size": IntDistribution(min(levels), max(levels)),
    }
    for trial, level in zip(trials, levels, strict=True):
        view.add_trial(
            optuna.trial.create_trial(
                state=trial.state,
                params={"lr": trial.params["lr"], "log2_batch_size": level},
                distributions=distributions,
                values=trial.values if trial.state == TrialState.COMPLETE else None,
                intermediate_values=trial.intermediate_values,
            )
        )
    return view


def _batch_colours(trials: list[FrozenTrial]) -> dict[int, object]:
    sizes = sorted({t.params["batch_size"] for t in trials})
    palette = plt.get_cmap("viridis")
    return {size: palette(i / max(len(sizes) - 1, 1)) for i, size in enumerate(sizes)}


def plot_validation_curves(study: optuna.Study) -> plt.Axes:
    """Per-epoch validation accuracy of every trial, one colour per batch size."""
    trials = [t for t in study.get_trials(deepcopy=False) if (t.user_attrs.get("epochs") or {})]
    trials = [t for t in trials if "batch_size" in t.params]
    colours = _batch_colours(trials)
    _, axes = plt.subplots()
    labelled: set[int] = set()
    for trial in trials:
        epochs = trial.user_attrs["epochs"]
        size = trial.params["batch_size"]
        label = None if size in labelled else f"batch {size}"
        labelled.add(size)
        style = "--" if trial.state == TrialState.PRUNED else "-"
        axes.plot(epochs["step"], epochs["val_accuracy"], style, color=colours[size],
                  alpha=0.7, label=label)  # fmt: skip
    axes.set_xlabel("epoch")
    axes.set_ylabel("validation accuracy")
    axes.set_title("validation accuracy per epoch (dashed: pruned)")
    handles, labels = axes.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: int(labels[i].split()[1]))
    axes.legend([handles[i] for i in order], [labels[i] for i in order], loc="lower right")
    axes.grid(alpha=0.3)
    return axes


def best_trial_per_batch_size(study: optuna.Study) -> dict[int, FrozenTrial]:
    """Per batch size, the COMPLETE trial with the best validation accuracy (earliest on ties),
    the rule of `experiments.results.best_per_batch_size`."""
    best: dict[int, FrozenTrial] = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        accuracy = trial.user_attrs.get("best_val_accuracy")
        size = trial.params.get("batch_size")
        if accuracy is None or size is None:
            continue
        held = best.get(size)
        if held is None or accuracy > held.user_attrs["best_val_accuracy"]:
            best[size] = trial
    return dict(sorted(best.items()))


def plot_best_lr_per_batch_size(study: optuna.Study) -> plt.Axes:
    """Left: every COMPLETE trial's accuracy against its learning rate, by batch size, the best
    of each starred. Right: the best learning rate per batch size, labelled with its accuracy."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    colours = _batch_colours(complete)
    best = best_trial_per_batch_size(study)
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 5))
    for size, colour in colours.items():
        ours = [t for t in complete if t.params["batch_size"] == size]
        left.scatter([t.params["lr"] for t in ours],
                     [t.user_attrs["best_val_accuracy"] for t in ours],
                     color=colour, alpha=0.6, label=f"batch {size}")  # fmt: skip
        top = best[size]
        left.scatter(top.params["lr"], top.user_attrs["best_val_accuracy"], marker="*", s=250,
                     color=colour, edgecolors="black")  # fmt: skip
    left.set(xscale="log", xlabel="learning rate (log)", ylabel=ACCURACY_NAME,
             title="every COMPLETE trial (star: best per batch size)")  # fmt: skip
    left.legend(loc="lower right")
    sizes = list(best)
    right.plot(sizes, [best[s].params["lr"] for s in sizes], "o-", color="black")
    for size in sizes:
        right.annotate(f"val {best[size].user_attrs['best_val_accuracy']:.4f}\ntrial "
                       f"{best[size].number}", (size, best[size].params["lr"]),
                       textcoords="offset points", xytext=(6, 6), fontsize=9)  # fmt: skip
    right.set(xscale="log", yscale="log", xlabel="batch size", ylabel="best learning rate",
              title="best learning rate per batch size")  # fmt: skip
    right.set_xticks(sizes, [str(s) for s in sizes])
    lrs = sorted({best[s].params["lr"] for s in sizes})
    right.set_yticks(lrs, [f"{lr:.3g}" for lr in lrs])  # a log axis within one decade: no labels
    right.margins(0.2)
    for axes in (left, right):
        axes.minorticks_off()  # log minor labels ("4x10^-2") crowd the axis
        axes.grid(alpha=0.3)
    figure.tight_layout()
    return left


def importance_evaluator() -> optuna.importance.FanovaImportanceEvaluator:
    """Optuna's default method (fANOVA) with a quarter of its default 64 trees, seeded: the
    forest was the costliest step of the whole end of a study (0.5 s of 100 trials here, 0.2 s
    with 16 trees), two parameters need no more trees (their shares moved by <0.01), and the
    seed draws the same plot of the same study every time. Imported here: `optuna.importance`
    imports scikit-learn (1-2 s), which a study too small for the plot never needs."""
    from optuna.importance import FanovaImportanceEvaluator

    return FanovaImportanceEvaluator(n_trees=16, seed=0)


def plot_param_importances(view: optuna.Study, **target) -> plt.Axes:
    """Optuna's importances plot with `importance_evaluator`, built only when this is drawn."""
    return optuna_plots.plot_param_importances(view, evaluator=importance_evaluator(), **target)


def study_plots(study: optuna.Study) -> dict[str, Callable[[], object]]:
    """File name → function drawing that plot on the current matplotlib figure."""
    view = display_study(study)
    labels = objective_labels(study)
    multi = len(study.directions) > 1
    target: dict[str, object] = {"target_name": labels[0]}
    if multi:  # multi-objective plots need a scalar target: accuracy, the one a reader compares
        target["target"] = _accuracy_target
    plots: dict[str, Callable[[], object]] = {
        "optimization_history.png": functools.partial(
            optuna_plots.plot_optimization_history, view, **target
        ),
        "contour_lr_batch_size.png": functools.partial(
            optuna_plots.plot_contour, view, params=["lr", "log2_batch_size"], **target
        ),
        "param_importances.png": functools.partial(plot_param_importances, view, **target),
        "validation_curves.png": functools.partial(plot_validation_curves, study),
        "best_lr_per_batch_size.png": functools.partial(plot_best_lr_per_batch_size, study),
    }
    if multi:
        plots["pareto_front.png"] = functools.partial(
            optuna_plots.plot_pareto_front,
            view,
            target_names=labels,
        )
    return plots


def _why_not(study: optuna.Study, name: str) -> str | None:
    """A reason a plot would be empty or meaningless, checked before drawing it."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return "no COMPLETE trials yet"
    if name == "param_importances.png" and len(complete) < 2:
        return "parameter importances need at least 2 COMPLETE trials"
    if name == "contour_lr_batch_size.png":
        varied = {
            param
            for param in ("lr", "batch_size")
            if len({t.params.get(param) for t in complete}) > 1
        }
        if len(varied) < 2:
            return "the contour needs COMPLETE trials that differ in both lr and batch size"
    return None


def _save(result: object, path: Path, size: tuple[float, float]) -> None:
    figure = (result.flat[0] if hasattr(result, "flat") else result).get_figure()
    if tuple(figure.get_size_inches()) == tuple(plt.rcParams["figure.figsize"]):
        figure.set_size_inches(*size)  # Optuna's default size; ours set their own
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def write_study_plots(study: optuna.Study, folder: Path) -> tuple[list[Path], list[str]]:
    """Draw every plot that can be drawn into `folder`; return (files written, skip notes)."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    notes: list[str] = []
    for name, draw in study_plots(study).items():
        reason = _why_not(study, name)
        if reason is not None:
            notes.append(f"{name} skipped: {reason}")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna's ExperimentalWarning on every plot
                _save(draw(), folder / name, (8, 6))
            written.append(folder / name)
        except (ValueError, RuntimeError, ZeroDivisionError, IndexError) as error:
            notes.append(f"{name} skipped: {error}")
        finally:
            plt.close("all")
    return written, notes
