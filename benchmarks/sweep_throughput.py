"""Sweep throughput: trials per minute of a default sweep (`experiments.sweep.run_sweep`).

The sweep runs with `SweepConfig`'s defaults (TPE sampler, median pruner per batch size, batch
sizes 16/64/256/1024, lr 0.003-1, 40 trials) and `TrainConfig`'s (10 epochs), on the suite's
data, into fresh SQLite stores (Optuna and MLflow) in a scratch folder, so nothing is resumed.
Two rates: end to end (`SweepOutcome.wall_seconds`: store creation, every trial, plots and
tables) and over the trials alone (`SweepOutcome.trial_seconds`). Quick mode runs 2 trials of
2 epochs.

The study ends as every default study does: its best trial's configuration is refit on train +
validation (`experiments.refit`) and that model is registered. The section shows the refit
model's test accuracy beside the best trial's own (the same configuration and seed, trained on
the training split alone), both from the study's refit record, so the report says what the
registered model scores against what the sweep's best trial scored.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

import pandas as pd

from benchmarks.common import Context, NotMeasured, SectionResult, Table
from softmaxreg.config import DataConfig, TrainConfig

if TYPE_CHECKING:
    import optuna

TRIAL_MODEL = "best trial (its own weights)"
REFIT_MODEL = "refit (the registered model)"


def run(context: Context) -> SectionResult:
    if importlib.util.find_spec("experiments.worker") is None:
        raise NotMeasured("experiments.sweep does not exist in this checkout")
    from experiments.config import SweepConfig
    from experiments.worker import run_sweep

    settings = context.settings
    defaults = SweepConfig()
    n_trials = settings.sweep_trials or defaults.n_trials
    train_config = TrainConfig(device=context.device.type)
    if settings.sweep_epochs_per_trial:
        train_config = TrainConfig(
            epochs=settings.sweep_epochs_per_trial, device=context.device.type
        )
    sweep = SweepConfig(
        study_name="benchmark-sweep-throughput",
        n_trials=n_trials,
        storage=f"sqlite:///{(context.store_dir / 'sweep-optuna.db').resolve()}",
        tracking_uri=f"sqlite:///{(context.store_dir / 'sweep-mlflow.db').resolve()}",
        quiet=True,
    )
    context.progress.line(
        f"  sweep_throughput: {n_trials} trials of {train_config.epochs} epochs "
        f"({defaults.sampler} sampler, {defaults.pruner} pruner)"
    )
    outcome = run_sweep(
        sweep,
        train_config,
        DataConfig(dataset="mnist"),
        context.mnist,
        log=lambda message: context.progress.line(f"  sweep_throughput: {message}"),
    )
    counts = outcome.trials["state"].value_counts()
    per_minute_wall = outcome.new_trials / outcome.wall_seconds * 60
    per_minute_trials = (
        outcome.new_trials / outcome.trial_seconds * 60 if outcome.trial_seconds else float("nan")
    )
    summary = pd.DataFrame(
        [
            {"figure": "trials", "value": outcome.new_trials},
            {"figure": "complete", "value": int(counts.get("COMPLETE", 0))},
            {"figure": "pruned", "value": int(counts.get("PRUNED", 0))},
            {"figure": "failed (diverged)", "value": int(counts.get("FAIL", 0))},
            {"figure": "wall seconds, end to end", "value": outcome.wall_seconds},
            {"figure": "seconds inside trials", "value": outcome.trial_seconds},
            {"figure": "seconds inside MLflow calls", "value": outcome.tracking_seconds},
            {"figure": "trials per minute, end to end", "value": per_minute_wall},
            {"figure": "trials per minute, trials only", "value": per_minute_trials},
        ]
    )
    result = SectionResult(key="sweep_throughput", title="Sweep throughput")
    result.text.append(
        f"`experiments.sweep.run_sweep` with `SweepConfig` defaults ({defaults.sampler} sampler, "
        f"{defaults.pruner} pruner, batch sizes "
        f"{', '.join(map(str, defaults.batch_sizes))}, lr {defaults.lr_range[0]:g}-"
        f"{defaults.lr_range[1]:g}) and {n_trials} trials of {train_config.epochs} epochs on "
        f"`{context.mnist.name}`, into fresh SQLite stores. **{per_minute_wall:.1f} trials per "
        f"minute end to end** (store creation, plots and tables included; "
        f"{per_minute_trials:.1f} per minute over the trials alone)."
    )
    refit = refit_table(outcome.study)
    result.tables += [
        Table("sweep_throughput", "Sweep throughput", summary),
        Table("sweep_throughput_refit", "The registered model against the best trial", refit),
        Table("sweep_throughput_trials", "The sweep's trials", outcome.trials, show=False),
    ]
    add_refit_figures(result, refit)
    result.metrics = {
        "trials": float(outcome.new_trials),
        "wall_seconds": outcome.wall_seconds,
        "trial_seconds": outcome.trial_seconds,
        "tracking_seconds": outcome.tracking_seconds,
        "trials_per_minute_wall": per_minute_wall,
        "trials_per_minute_trials": per_minute_trials,
        "trials_pruned": float(counts.get("PRUNED", 0)),
    }
    result.params = {
        "n_trials": str(n_trials),
        "epochs": str(train_config.epochs),
        "sampler": defaults.sampler,
        "pruner": defaults.pruner,
    }
    result.headlines.append(
        (
            "sweep throughput",
            f"{per_minute_wall:.1f} trials/min end to end, {per_minute_trials:.1f} over trials "
            f"({outcome.new_trials} trials, {int(counts.get('PRUNED', 0))} pruned)",
        )
    )
    trials = outcome.trials[outcome.trials.state == "COMPLETE"]
    result.add_rounds_by(
        trials,
        ["batch_size", "epochs"],
        "trial_seconds",
        "sweep trial, bs {batch_size}, {epochs} epochs",
    )
    return result


def refit_table(study: optuna.Study) -> pd.DataFrame:
    """Two rows, the best trial's own model and its refit on train + validation, from the
    study's refit record (`experiments.refit`); empty when the study has no refit."""
    from experiments.model_registry import best_trial_with_weights, refit_record

    trial = best_trial_with_weights(study)
    record = refit_record(study, trial) if trial is not None else None
    if record is None:
        return pd.DataFrame(columns=["model", "trial", "train_examples", "test_accuracy"])
    shared = {
        "trial": trial.number,
        "batch_size": trial.params.get("batch_size"),
        "lr": trial.params.get("lr"),
        "seed": record["seed"],
        "best_val_accuracy": trial.user_attrs.get("best_val_accuracy"),
    }
    return pd.DataFrame(
        [
            {
                "model": TRIAL_MODEL,
                **shared,
                "train_examples": record["trial_train_examples"],
                "test_accuracy": record["trial_test_accuracy"],
            },
            {
                "model": REFIT_MODEL,
                **shared,
                "train_examples": record["train_examples"],
                "test_accuracy": record["test_accuracy"],
            },
        ]
    )


def add_refit_figures(result: SectionResult, refit: pd.DataFrame) -> None:
    """The two test accuracies in the section's text, summary, metrics and rounds."""
    if refit.empty:
        result.text.append("The study recorded no refit: no trial completed with its weights.")
        return
    trial, model = refit.iloc[0], refit.iloc[1]
    both = (
        f"{model.test_accuracy:.4f} for the refit model ({model.train_examples:,} images) "
        f"beside {trial.test_accuracy:.4f} for the best trial's own weights "
        f"({trial.train_examples:,} images)"
    )
    result.text.append(
        f"**Test accuracy {both}**: trial {trial.trial}'s configuration (batch size "
        f"{trial.batch_size}, lr {trial.lr:.4g}, chosen on validation), seed {trial.seed}, "
        "trained again on train + validation when the study ended; the test split is scored "
        "once, after the choice. One study, one seed: the accuracy ceiling section gives the "
        "refit's spread over seeds."
    )
    result.headlines.append(("default study, test accuracy: refit vs best trial", both))
    result.metrics |= {
        "best_trial_test_accuracy": float(trial.test_accuracy),
        "refit_test_accuracy": float(model.test_accuracy),
    }
    for row in (trial, model):
        result.add_rounds(
            f"default study test accuracy, {row.model}",
            [row.test_accuracy],
            kind="accuracy",
            better="higher",
            unit="",
        )
