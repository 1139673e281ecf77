"""Read-only views of a study: the end-of-run report and the parent run's summary and artifacts.

    outcome = SweepOutcome(...)                 # what one worker (or the coordinator) did
    print(format_report(outcome, sweep, stores))
    write_study_tables(trials, best, plot_notes, folder)   # beside the plots

Everything here is computed from the Optuna study (the source of truth) and the MLflow runs
joined to it, so the figures describe the whole study, whichever worker prints them.
"""

from __future__ import annotations

import math
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import TrialState

from experiments.config import SweepConfig
from experiments.model_registry import (
    best_trial_with_weights,
    refit_record,
    registered_model_name,
)
from experiments.results import (
    best_per_batch_size_markdown,
    best_per_batch_size_text,
    write_csv_atomically,
    write_text_atomically,
)
from experiments.store_urls import Stores
from experiments.stores import (
    DEFAULT_OPTUNA_STORAGE,
    DEFAULT_TRACKING_URI,
    display_url,
    mlflow_ui_command,
)

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


@dataclass
class SweepOutcome:
    """What a sweep invocation did (its own trials) and what the study holds (all trials)."""

    study: optuna.Study
    study_name: str
    trials: pd.DataFrame
    best_per_batch_size: pd.DataFrame
    parent_run_id: str
    experiment_id: str
    new_trials: int
    """Trials this invocation ran (its workers' own, not other machines')."""
    wall_seconds: float
    trial_seconds: float
    """Wall seconds of this invocation's loop of trials (their mirroring included); for a
    `--workers` coordinator, the sum of its trials' durations."""
    tracking_seconds: float
    artifact_uri: str
    notes: list[str] = field(default_factory=list)
    own_states: dict[str, int] = field(default_factory=dict)
    """States of this invocation's trials."""

    @property
    def tracking_overhead_fraction(self) -> float:
        return self.tracking_seconds / self.trial_seconds if self.trial_seconds else math.nan


def state_counts(states: pd.Series | list[str]) -> str:
    counts = pd.Series(list(states), dtype="object").value_counts()
    shown = [s for s in STATES if counts.get(s, 0) or s in ("COMPLETE", "PRUNED", "FAIL")]
    return ", ".join(f"{int(counts.get(s, 0))} {s.lower()}" for s in shown)


def study_metrics(trials: pd.DataFrame) -> dict[str, float]:
    """The parent run's summary of the whole study, under names no child run uses."""
    counts = trials["state"].value_counts()
    metrics = {
        "study_trials_total": float(len(trials)),
        "study_trials_complete": float(counts.get("COMPLETE", 0)),
        "study_trials_pruned": float(counts.get("PRUNED", 0)),
        "study_trials_failed": float(counts.get("FAIL", 0)),
        "study_trial_seconds_total": float(trials["trial_seconds"].sum(skipna=True)),
    }
    complete = trials[trials["state"] == "COMPLETE"]
    if not complete.empty:
        top = complete.loc[complete["best_val_accuracy"].idxmax()]
        metrics["study_best_val_accuracy"] = float(top["best_val_accuracy"])
        metrics["study_best_test_accuracy_at_best_val"] = float(top["test_accuracy_at_best_val"])
        metrics["study_best_trial_number"] = float(top["trial_number"])
    return metrics


def write_study_tables(
    trials: pd.DataFrame, best: pd.DataFrame, plot_notes: list[str], folder: Path
) -> None:
    """The parent run's tables in `folder`, beside its plots, and the notes on plots skipped."""
    write_csv_atomically(trials, folder / "trials.csv")
    write_csv_atomically(best, folder / "best_per_batch_size.csv")
    write_text_atomically(folder / "best_per_batch_size.md", best_per_batch_size_markdown(best))
    if plot_notes:
        write_text_atomically(folder / "plot_notes.txt", "\n".join(plot_notes) + "\n")


def _best_lines(outcome: SweepOutcome, sweep: SweepConfig) -> list[str]:
    trials = outcome.trials
    complete = trials[trials["state"] == "COMPLETE"]
    if complete.empty:
        return ["no trial completed, so there is no best trial yet"]
    if sweep.multi_objective:
        lines = ["Pareto front (validation accuracy vs time-to-accuracy):"]
        for trial in sorted(outcome.study.best_trials, key=lambda t: -t.values[0]):
            row = trials[trials["trial_number"] == trial.number].iloc[0]
            seconds = "not reached" if math.isinf(trial.values[1]) else f"{trial.values[1]:.2f} s"
            lines.append(
                f"  trial {trial.number}: batch size {trial.params['batch_size']}, lr "
                f"{trial.params['lr']:.3g} -> val accuracy {trial.values[0]:.4f}, test "
                f"{row['test_accuracy_at_best_val']:.4f}, time to target {seconds}"
            )
        return lines
    top = complete.loc[complete["best_val_accuracy"].idxmax()]
    return [
        f"best trial {int(top['trial_number'])}: batch size {int(top['batch_size'])}, lr "
        f"{top['lr']:.4g} -> best val accuracy {top['best_val_accuracy']:.4f}; test "
        f"accuracy {top['test_accuracy_at_best_val']:.4f} at that epoch, "
        f"{top['final_test_accuracy']:.4f} after the last epoch",
        *_refit_lines(outcome),
    ]


def _refit_lines(outcome: SweepOutcome) -> list[str]:
    """The registered model: the best trial refit on train + validation, or its own weights."""
    name = registered_model_name(outcome.study_name)
    best = best_trial_with_weights(outcome.study)
    if best is None:
        return []
    record = refit_record(outcome.study, best)
    if record is None:
        return [f"registered model {name}: trial {best.number}'s own weights (no refit)"]
    return [
        f"refit of trial {best.number} on train + validation ({record['train_examples']:,} "
        f"images, seed {record['seed']}): test accuracy {record['test_accuracy']:.4f}, beside "
        f"the trial's {record['trial_test_accuracy']:.4f} on {record['trial_train_examples']:,}; "
        f"registered as {name}"
    ]


def _population_line(outcome: SweepOutcome) -> list[str]:
    """Time figures of population members are the shared pass's: say so under the table."""
    sizes = pd.to_numeric(outcome.trials["population"], errors="coerce").dropna()
    if sizes.empty or sizes.max() <= 1:
        return []
    return [
        f"time to target and samples/s of trials trained in a population (up to "
        f"{int(sizes.max())} per pass) are those of the shared pass; --population 1 times each "
        "trial alone"
    ]


def _coverage_line(outcome: SweepOutcome, sweep: SweepConfig) -> list[str]:
    """Batch sizes the comparison cannot speak for yet (no COMPLETE trial)."""
    complete = outcome.trials[outcome.trials["state"] == "COMPLETE"]
    missing = [b for b in sweep.batch_sizes if b not in set(complete["batch_size"].dropna())]
    if not missing:
        return []
    hint = ""
    if sweep.population > 1:
        hint = (
            f" (a pass trains {sweep.population} trials of one batch size: "
            f"{sweep.population * len(sweep.batch_sizes)} trials give each batch size one)"
        )
    return [
        f"note: no complete trial yet at batch size {', '.join(map(str, missing))}; run more "
        f"trials{hint}"
    ]


def _tracking_line(outcome: SweepOutcome) -> list[str]:
    if math.isnan(outcome.tracking_seconds):  # measured by the workers, not by a coordinator
        return []
    return [
        f"tracking: {outcome.tracking_seconds:.2f} s in MLflow calls over "
        f"{outcome.trial_seconds:.1f} s of trials ({outcome.tracking_overhead_fraction:.1%})"
    ]


def _export_command(outcome: SweepOutcome, sweep: SweepConfig) -> str:
    # The interpreter this sweep ran under, by its full path: pasted into a shell without the
    # venv on PATH, `python` is the system's, which has none of our packages.
    command = (
        f"{shlex.quote(sys.executable)} -m experiments.export --study-name {outcome.study_name}"
    )
    if sweep.storage != DEFAULT_OPTUNA_STORAGE:
        command += f" --storage {display_url(sweep.storage)}"
    if sweep.tracking_uri != DEFAULT_TRACKING_URI:
        command += f" --tracking-uri {display_url(sweep.tracking_uri)}"
    return command


def this_run_line(outcome: SweepOutcome) -> str:
    """The report's first line: this invocation's own trials (a forked worker's whole report)."""
    return (
        f"this run: {outcome.new_trials} trials in {outcome.wall_seconds:.1f} s "
        f"({state_counts([s for s, n in outcome.own_states.items() for _ in range(n)])})"
    )


def format_report(outcome: SweepOutcome, sweep: SweepConfig, stores: Stores) -> str:
    """The end-of-run summary: own and study counts, best trial, comparison table, where to
    look, what to run next."""
    optuna_shown, tracking_shown = stores.shown()
    lines = [
        this_run_line(outcome),
        f"study {outcome.study_name}: {len(outcome.trials)} trials in total "
        f"({state_counts(outcome.trials['state'])})",
        *_best_lines(outcome, sweep),
        "",
        "best learning rate per batch size (chosen by validation accuracy; test is only reported):",
        best_per_batch_size_text(outcome.best_per_batch_size),
        *_population_line(outcome),
        *_coverage_line(outcome, sweep),
        "",
        *_tracking_line(outcome),
        *outcome.notes,
        "",
        "written:",
        f"  Optuna study   {optuna_shown}",
        f"  MLflow runs    {tracking_shown} (experiment {outcome.study_name!r} id "
        f"{outcome.experiment_id}, parent run {outcome.parent_run_id})",
        f"  plots, tables  {outcome.artifact_uri}",
        "",
        f"compare the runs:  {mlflow_ui_command(stores.tracking_uri)}",
        f"export the table:  {_export_command(outcome, sweep)}",
    ]
    return "\n".join(lines)


def opening_line(study: optuna.Study) -> str:
    """What a worker says as it starts: a new study, or what the resumed one holds already.

    Counted in the storage (four counts), not by reading every trial of a large study."""
    storage, study_id = study._storage, study._study_id
    total = storage.get_n_trials(study_id)
    if total == 0:
        return f"new study {study.study_name}"
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    counts = ", ".join(
        f"{storage.get_n_trials(study_id, state)} {state.name.lower()}" for state in states
    )
    return f"resuming study {study.study_name}: {total} trials so far ({counts})"
