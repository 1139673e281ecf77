"""The parent run's plots say what they plot: the objective by its name, never "Objective Value".

Real Optuna studies built from trials as the sweep records them (params, values, the user
attributes the plots read), drawn with the same functions the sweep uses; the text on each
matplotlib figure is what a reader of the PNG sees.
"""

from __future__ import annotations

import warnings

import matplotlib.pyplot as plt
import optuna
import pytest
from matplotlib.text import Text
from optuna.distributions import CategoricalDistribution, FloatDistribution

from experiments.plots import ACCURACY_NAME, TIME_NAME, study_plots

BATCH_SIZES = (16, 64, 256, 1024)
DISTRIBUTIONS = {
    "batch_size": CategoricalDistribution(BATCH_SIZES),
    "lr": FloatDistribution(0.003, 1.0, log=True),
}


def recorded_trial(number: int, objectives: int) -> optuna.trial.FrozenTrial:
    """A COMPLETE trial as the sweep stores it: its params, objective values, and the
    per-epoch record and best validation accuracy its plots read."""
    batch_size, lr = BATCH_SIZES[number % 4], 0.003 * 3 ** (number % 5)
    accuracy = 0.9 + 0.001 * number
    values = [accuracy, 10.0 + number][:objectives]
    return optuna.trial.create_trial(
        params={"batch_size": batch_size, "lr": lr},
        distributions=DISTRIBUTIONS,
        values=values,
        user_attrs={
            "best_val_accuracy": accuracy,
            "epochs": {"step": [1, 2], "val_accuracy": [accuracy - 0.01, accuracy]},
        },
    )


def study_like_the_sweeps(objectives: int) -> optuna.Study:
    directions = ["maximize", "minimize"][:objectives]
    study = optuna.create_study(directions=directions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["best_val_accuracy", "time_to_target_seconds"][:objectives])
    for number in range(8):
        study.add_trial(recorded_trial(number, objectives))
    return study


def figure_text(draw) -> set[str]:
    """Every piece of text on the figure `draw()` makes (titles, axis and colour-bar labels,
    legends, tick labels)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's ExperimentalWarning on every plot
        result = draw()
    figure = (result.flat[0] if hasattr(result, "flat") else result).get_figure()
    try:
        return {t.get_text() for t in figure.findobj(Text) if t.get_text()}
    finally:
        plt.close("all")


@pytest.mark.parametrize(
    ("objectives", "labelled"),
    [
        (1, {"optimization_history.png", "contour_lr_batch_size.png", "param_importances.png"}),
        (2, {"optimization_history.png", "contour_lr_batch_size.png", "pareto_front.png"}),
    ],
)
def test_every_plot_names_the_objective(objectives, labelled):
    plots = study_plots(study_like_the_sweeps(objectives))
    texts = {name: figure_text(draw) for name, draw in plots.items()}
    for name, text in texts.items():
        assert not any("Objective" in t for t in text), (name, sorted(text))
    for name in labelled:
        assert ACCURACY_NAME in texts[name], (name, sorted(texts[name]))
    if objectives == 2:
        assert TIME_NAME in texts["pareto_front.png"]


def test_the_contours_colour_bar_is_the_accuracy():
    draw = study_plots(study_like_the_sweeps(1))["contour_lr_batch_size.png"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        axes = draw()
    figure = axes.get_figure()
    colour_bar = [a for a in figure.axes if a is not axes]
    assert [a.get_ylabel() for a in colour_bar] == [ACCURACY_NAME]
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("log2_batch_size", "lr")
    plt.close("all")
