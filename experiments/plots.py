"""Optuna's study plots as PNG files, for the sweep's parent MLflow run.

    written, notes = write_study_plots(study, Path("plots"))

Each plot is attempted on its own; one that cannot be drawn yet (parameter importances need at
least two COMPLETE trials, a contour needs two parameters that varied, ...) is skipped with a
note saying why, instead of ending the sweep.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never needs a display

import matplotlib.pyplot as plt
import optuna
from optuna.trial import TrialState
from optuna.visualization import matplotlib as optuna_plots

ACCURACY_NAME = "best validation accuracy"


def _accuracy_target(trial: optuna.trial.FrozenTrial) -> float:
    return trial.values[0]


def study_plots(study: optuna.Study) -> dict[str, Callable[[], object]]:
    """File name → function drawing that plot on the current matplotlib figure."""
    multi = len(study.directions) > 1
    # Multi-objective plots need a scalar target; accuracy is the one a reader compares.
    target = {"target": _accuracy_target, "target_name": ACCURACY_NAME} if multi else {}
    plots: dict[str, Callable[[], object]] = {
        "optimization_history.png": lambda: optuna_plots.plot_optimization_history(study, **target),
        "contour_lr_batch_size.png": lambda: optuna_plots.plot_contour(
            study, params=["lr", "batch_size"], **target
        ),
        "param_importances.png": lambda: optuna_plots.plot_param_importances(study, **target),
    }
    if multi:
        plots["pareto_front.png"] = lambda: optuna_plots.plot_pareto_front(
            study, target_names=[ACCURACY_NAME, "time to accuracy (s)"]
        )
    else:
        plots["intermediate_values.png"] = lambda: optuna_plots.plot_intermediate_values(study)
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
                result = draw()
            figure = (result.flat[0] if hasattr(result, "flat") else result).get_figure()
            figure.set_size_inches(8, 6)
            figure.tight_layout()
            path = folder / name
            figure.savefig(path, dpi=100)
            written.append(path)
        except (ValueError, RuntimeError, ZeroDivisionError, IndexError) as error:
            notes.append(f"{name} skipped: {error}")
        finally:
            plt.close("all")
    return written, notes
