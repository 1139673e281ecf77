"""Tables of a sweep's results, shared by the sweep's end-of-run report and the export.

    trials = trials_table(study, runs)        # one row per trial: Optuna joined with MLflow
    best = best_per_batch_size(trials)        # per batch size, the best learning rate
    print(best_per_batch_size_markdown(best))

`trials_table` is a pure function of the Optuna study and its MLflow runs (the entities
`experiments.tracking.trial_runs` reads), so its columns are the same wherever it is called.
The column names are part of the product's interface: they are listed, with their meaning,
in `TRIAL_COLUMNS` and `BEST_PER_BATCH_SIZE_COLUMNS` and in `experiments.export`'s docstring.
Add columns at the end; never rename one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
import pandas as pd

from experiments.objective import SUMMARY_FIGURES, fail_reason
from experiments.run_record import summary_metric_name
from experiments.tracking import runs_by_trial_number
from softmaxreg.idx_files import write_atomically

if TYPE_CHECKING:
    from mlflow.entities import Run

TRIAL_COLUMNS: dict[str, str] = {
    "study_name": "Optuna study (and MLflow experiment) name",
    "trial_number": "Optuna trial number, 0-based, unique within the study",
    "state": "Optuna trial state: COMPLETE, PRUNED, FAIL, RUNNING or WAITING",
    "batch_size": "batch size the trial trained with",
    "lr": "learning rate the trial trained with",
    "objective_value": "Optuna's objective value: mean best validation accuracy over the seeds "
    "(empty unless COMPLETE)",
    "objective_value_2": "second objective of accuracy_vs_time studies: mean time-to-accuracy "
    "in seconds, inf when a seed never reached the target (empty for single-objective studies)",
    "best_val_accuracy": "validation accuracy of the best epoch, mean over the seeds",
    "best_val_accuracy_std": "standard deviation of best_val_accuracy over the seeds (0 for one)",
    "test_accuracy_at_best_val": "test accuracy of the epoch chosen by validation accuracy, mean "
    "over the seeds (reported only, never optimised)",
    "final_val_accuracy": "validation accuracy after the last epoch trained, mean over the seeds",
    "final_test_accuracy": "test accuracy after the last epoch trained, mean over the seeds",
    "time_to_target_seconds": "training seconds until validation accuracy first reached "
    "target_accuracy, mean over the seeds; empty if any seed never reached it",
    "target_accuracy": "the validation accuracy that time_to_target_seconds waits for",
    "total_train_seconds": "training seconds of the whole run (evaluation excluded), mean over "
    "the seeds",
    "steady_epoch_seconds": "median epoch seconds after the warm-up epoch, mean over the seeds",
    "steady_samples_per_second": "training examples per second after warm-up, mean over the seeds",
    "epochs": "epochs configured per run",
    "epochs_completed": "epochs the first seed trained (fewer than epochs when pruned or failed)",
    "repeats": "seeds trained per configuration",
    "seed": "first seed (the others are seed+1, seed+2, ...)",
    "momentum": "SGD momentum",
    "weight_decay": "SGD weight decay",
    "model": "model variant (logits or tutorial_double_softmax)",
    "fail_reason": "why a FAIL trial failed (e.g. where training diverged), else empty",
    "trial_seconds": "wall seconds of the whole trial, tracking included",
    "datetime_start": "when the trial started (ISO 8601, local time)",
    "mlflow_run_id": "MLflow run of the trial (a child of the study's parent run)",
    "mlflow_status": "MLflow run status: FINISHED, KILLED (pruned), FAILED or RUNNING",
    "device": "torch device the trial trained on",
    "device_name": "hardware behind the device (CPU model or GPU name)",
    "dataset": "dataset name",
    "dataset_checksum": "MD5 over the raw files' MD5s: exactly which bytes were trained on",
    "git_commit": "commit of the code that ran the trial ('-dirty' if it had local changes)",
    "lr_schedule": "learning-rate schedule (constant, linear or cosine; searched with "
    "--lr-schedules, else the study's --lr-schedule)",
    "warmup_steps": "steps of linear learning-rate warm-up before the schedule",
    "population": "trials trained together in one pass with this one (1: alone); time figures "
    "of a member are those of the shared pass",
}
"""Columns of the per-trial table, in order, with their meaning."""

BEST_PER_BATCH_SIZE_COLUMNS: dict[str, str] = {
    "batch_size": "batch size",
    "best_lr": "learning rate of the COMPLETE trial with the highest best_val_accuracy at this "
    "batch size (earliest trial on ties)",
    "best_val_accuracy": "that trial's best validation accuracy (mean over seeds)",
    "test_accuracy_at_best_val": "that trial's test accuracy at its best validation epoch",
    "final_test_accuracy": "that trial's test accuracy after its last epoch",
    "time_to_target_seconds": "that trial's time-to-accuracy in seconds (empty if not reached)",
    "steady_samples_per_second": "that trial's training throughput after warm-up",
    "trial_number": "that trial's number",
    "complete_trials": "COMPLETE trials at this batch size (how well its lr was searched)",
}
"""Columns of the best-learning-rate-per-batch-size table, in order, with their meaning."""

# Summary figures (user attributes in Optuna, metrics in MLflow) that are table columns.
SUMMARY_COLUMNS = tuple(name for name in TRIAL_COLUMNS if name in SUMMARY_FIGURES)
# Trial settings (user attribute `settings`, MLflow params as strings) that are table columns.
SETTING_COLUMNS: dict[str, Callable[[str], object]] = {
    "target_accuracy": float,
    "epochs": int,
    "repeats": int,
    "seed": int,
    "momentum": float,
    "weight_decay": float,
    "model": str,
    "lr_schedule": str,
    "warmup_steps": int,
    "population": int,
}
ENVIRONMENT_COLUMNS = ("device", "device_name", "dataset", "dataset_checksum", "git_commit")
INTEGER_COLUMNS = (
    "trial_number",
    "batch_size",
    "epochs",
    "epochs_completed",
    "repeats",
    "seed",
    "warmup_steps",
    "population",
)


def _optuna_row(study_name: str, trial: optuna.trial.FrozenTrial) -> dict[str, object]:
    values = trial.values or []
    attrs = trial.user_attrs
    row: dict[str, object] = {
        "study_name": study_name,
        "trial_number": trial.number,
        "state": trial.state.name,
        "batch_size": trial.params.get("batch_size"),
        "lr": trial.params.get("lr"),
        "objective_value": values[0] if len(values) >= 1 else math.nan,
        "objective_value_2": values[1] if len(values) >= 2 else math.nan,
        "fail_reason": fail_reason(trial),
        "trial_seconds": trial.duration.total_seconds() if trial.duration else math.nan,
        "datetime_start": trial.datetime_start.isoformat() if trial.datetime_start else "",
        "mlflow_run_id": "",
    }
    # The trial's record is the source of truth; MLflow's copy fills the same columns.
    settings = attrs.get("settings") or {}
    for name in SUMMARY_COLUMNS:
        value = attrs.get(name)
        row[name] = math.nan if value is None else value
    for name in SETTING_COLUMNS:
        row[name] = settings.get(name, math.nan)
    environment = attrs.get("environment") or {}
    for name in ENVIRONMENT_COLUMNS:
        row[name] = environment.get(name, "")
    return row


def _mlflow_row(run: Run) -> dict[str, object]:
    row: dict[str, object] = {
        "mlflow_status": run.info.status,
        "mlflow_run_id": run.info.run_id,
    }
    metrics, params, tags = run.data.metrics, run.data.params, run.data.tags
    for name in SUMMARY_COLUMNS:
        # A run names its summary figures apart from its per-epoch curves; the columns keep the
        # figure's own name.
        value = metrics.get(summary_metric_name(name))
        if value is not None and not math.isnan(value):
            row[name] = float(value)
    for name, convert in SETTING_COLUMNS.items():
        value = params.get(name)
        if isinstance(value, str):
            row[name] = convert(value)
    for name in ENVIRONMENT_COLUMNS:
        value = tags.get(name)
        if isinstance(value, str):
            row[name] = value
    return row


def trials_table(study: optuna.Study, runs: Sequence[Run] | None) -> pd.DataFrame:
    """One row per trial of `study`, joined with its MLflow run (by trial number; the oldest
    where a trial has several).

    `runs` are `experiments.tracking.trial_runs` of the study (or None/empty when no tracking
    store is available). Both sources hold the same figures, since every run is
    rebuilt from its trial; the trial's own record fills the columns of a run not mirrored yet.
    """
    oldest_run = {number: copies[0] for number, copies in runs_by_trial_number(runs or ()).items()}
    rows = []
    for trial in study.get_trials(deepcopy=False):
        row = _optuna_row(study.study_name, trial)
        row["mlflow_status"] = ""
        run = oldest_run.get(trial.number)
        if run is not None:
            row.update(_mlflow_row(run))
        rows.append(row)
    table = pd.DataFrame(rows, columns=list(TRIAL_COLUMNS))
    for name in INTEGER_COLUMNS:
        table[name] = pd.to_numeric(table[name], errors="coerce").astype("Int64")
    for name in (*SUMMARY_COLUMNS, "lr", "objective_value", "objective_value_2", "trial_seconds"):
        if name != "epochs_completed":
            table[name] = pd.to_numeric(table[name], errors="coerce").astype("float64")
    return table.sort_values("trial_number", kind="stable").reset_index(drop=True)


def best_per_batch_size(trials: pd.DataFrame) -> pd.DataFrame:
    """For each batch size, the COMPLETE trial with the best validation accuracy.

    Batch sizes are compared at their own best learning rate (Google's tuning playbook), using
    validation accuracy only; test accuracy is carried along for reporting.
    """
    complete = trials[(trials["state"] == "COMPLETE") & trials["best_val_accuracy"].notna()]
    if complete.empty:
        return pd.DataFrame(columns=list(BEST_PER_BATCH_SIZE_COLUMNS))
    ordered = complete.sort_values(
        ["batch_size", "best_val_accuracy", "trial_number"], ascending=[True, False, True]
    )
    best = ordered.groupby("batch_size", sort=True).head(1)
    counts = complete.groupby("batch_size").size()
    table = pd.DataFrame(
        {
            "batch_size": best["batch_size"].to_numpy(),
            "best_lr": best["lr"].to_numpy(),
            "best_val_accuracy": best["best_val_accuracy"].to_numpy(),
            "test_accuracy_at_best_val": best["test_accuracy_at_best_val"].to_numpy(),
            "final_test_accuracy": best["final_test_accuracy"].to_numpy(),
            "time_to_target_seconds": best["time_to_target_seconds"].to_numpy(),
            "steady_samples_per_second": best["steady_samples_per_second"].to_numpy(),
            "trial_number": best["trial_number"].to_numpy(),
            "complete_trials": counts.loc[best["batch_size"]].to_numpy(),
        },
        columns=list(BEST_PER_BATCH_SIZE_COLUMNS),
    )
    return table.reset_index(drop=True)


def _format_cell(column: str, value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or pd.isna(value):
        return "not reached" if column == "time_to_target_seconds" else ""
    if column in ("batch_size", "trial_number", "complete_trials"):
        return str(int(value))
    if column == "best_lr":
        return f"{float(value):.3g}"
    if "accuracy" in column:
        return f"{float(value):.4f}"
    if column == "time_to_target_seconds":
        return f"{float(value):.2f}"
    if column == "steady_samples_per_second":
        return f"{float(value):,.0f}"
    return str(value)


def best_per_batch_size_markdown(table: pd.DataFrame) -> str:
    """The best-per-batch-size table as a GitHub Markdown table (no extra dependency)."""
    columns = list(BEST_PER_BATCH_SIZE_COLUMNS)
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---:" for _ in columns) + "|",
    ]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(_format_cell(c, row[c]) for c in columns) + " |")
    if table.empty:
        lines.append("| " + " | ".join("" for _ in columns) + " |")
    return "\n".join(lines) + "\n"


def best_per_batch_size_text(table: pd.DataFrame) -> str:
    """A compact fixed-width version of the table for the terminal."""
    header = (
        f"{'batch':>6}  {'best lr':>8}  {'val acc':>7}  {'test acc':>8}  "
        f"{'time to target':>14}  {'samples/s':>10}  {'trial':>5}  {'of':>3}"
    )
    lines = [header]
    for _, row in table.iterrows():
        lines.append(
            f"{int(row['batch_size']):>6}  {_format_cell('best_lr', row['best_lr']):>8}  "
            f"{row['best_val_accuracy']:>7.4f}  {row['test_accuracy_at_best_val']:>8.4f}  "
            f"{_format_cell('time_to_target_seconds', row['time_to_target_seconds']):>14}  "
            f"{_format_cell('steady_samples_per_second', row['steady_samples_per_second']):>10}  "
            f"{int(row['trial_number']):>5}  {int(row['complete_trials']):>3}"
        )
    if table.empty:
        lines.append("(no COMPLETE trials yet)")
    return "\n".join(lines)


def write_text_atomically(path: Path, text: str) -> None:
    """Write `text` (UTF-8) via a temporary file and `os.replace`: never a half-written file."""
    write_atomically(Path(path), text.encode("utf-8"))


def write_csv_atomically(table: pd.DataFrame, path: Path) -> None:
    write_text_atomically(path, table.to_csv(index=False))
