"""Export a sweep as tables: one row per trial, and the best learning rate per batch size.

    python -m experiments.export --study-name softmaxreg-mnist            # -> results.csv
    python -m experiments.export --study-name my-study --out runs/my.csv \\
        --storage sqlite:///optuna.db --tracking-uri sqlite:///mlflow.db

Reads the Optuna study (`--storage`) and its trials' MLflow runs (found by the study's tags in
the experiment of the same name, `--tracking-uri`), joins them by trial number, and writes,
each atomically (temporary file, then `os.replace`, so a reader never sees half a file):

- `--out` (default results.csv): one row per trial, the columns below;
- `<out stem>_best_per_batch_size.csv` and `.md`: for each batch size, the COMPLETE trial with
  the best validation accuracy (Google's tuning playbook: compare batch sizes at their own best
  learning rate), as CSV and as a Markdown table (also printed).

Nothing else is created: a missing store, an unknown study or a missing output folder is an error
(exit status 2) naming what was wrong.

Per-trial columns (`experiments.results.TRIAL_COLUMNS`; stable: new columns are only ever added
at the end). Accuracies are fractions in [0, 1]; times are seconds; figures marked "mean" are
means over the trial's seeds (`--repeats`):

    study_name                 Optuna study (and MLflow experiment) name
    trial_number               Optuna trial number, 0-based, unique within the study
    state                      COMPLETE, PRUNED, FAIL, RUNNING or WAITING
    batch_size                 batch size the trial trained with
    lr                         learning rate the trial trained with
    objective_value            Optuna's objective: mean best validation accuracy (empty unless
                               COMPLETE)
    objective_value_2          accuracy_vs_time studies: mean time-to-accuracy, inf when a seed
                               never reached the target (empty for single-objective studies)
    best_val_accuracy          validation accuracy of the best epoch (mean)
    best_val_accuracy_std      its standard deviation over the seeds (0 for one seed)
    test_accuracy_at_best_val  test accuracy of the epoch chosen by validation accuracy (mean;
                               reported only, never optimised)
    final_val_accuracy         validation accuracy after the last epoch trained (mean)
    final_test_accuracy        test accuracy after the last epoch trained (mean)
    time_to_target_seconds     training seconds until validation accuracy first reached
                               target_accuracy (mean; empty if any seed never reached it)
    target_accuracy            the validation accuracy time_to_target_seconds waits for
    total_train_seconds        training seconds of the run, evaluation excluded (mean)
    steady_epoch_seconds       median epoch seconds after the warm-up epoch (mean)
    steady_samples_per_second  training examples per second after warm-up (mean)
    epochs                     epochs configured per run
    epochs_completed           epochs the first seed trained (fewer when pruned or failed)
    repeats                    seeds trained per configuration
    seed                       first seed (the others are seed+1, seed+2, ...)
    momentum                   SGD momentum
    weight_decay               SGD weight decay
    model                      logits or tutorial_double_softmax
    fail_reason                why a FAIL trial failed (e.g. where training diverged)
    trial_seconds              wall seconds of the whole trial, tracking included
    datetime_start             when the trial started (ISO 8601, local time)
    mlflow_run_id              the trial's MLflow run (child of the study's parent run)
    mlflow_status              FINISHED, KILLED (pruned), FAILED or RUNNING
    device                     torch device the trial trained on
    device_name                hardware behind the device (CPU model or GPU name)
    dataset                    dataset name
    dataset_checksum           MD5 over the raw files' MD5s: exactly which bytes were used
    git_commit                 commit of the code that ran the trial ('-dirty' if modified)
    lr_schedule                constant, linear or cosine (searched with --lr-schedules)
    warmup_steps               steps of linear learning-rate warm-up
    population                 trials trained together with this one (--population; 1: alone);
                               a member's time figures are the shared pass's

Best-per-batch-size columns (`experiments.results.BEST_PER_BATCH_SIZE_COLUMNS`):

    batch_size                 batch size
    best_lr                    learning rate of the COMPLETE trial with the highest
                               best_val_accuracy at this batch size (earliest on ties)
    best_val_accuracy          that trial's best validation accuracy
    test_accuracy_at_best_val  that trial's test accuracy at its best validation epoch
    final_test_accuracy        that trial's test accuracy after its last epoch
    time_to_target_seconds     that trial's time-to-accuracy (empty if not reached)
    steady_samples_per_second  that trial's training throughput after warm-up
    trial_number               that trial's number
    complete_trials            COMPLETE trials at this batch size (how well its lr was searched)
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
import pandas as pd

from experiments.common import say
from experiments.config import STUDY_NAME_PATTERN
from experiments.process_exit import exit_without_teardown
from experiments.results import (
    best_per_batch_size,
    best_per_batch_size_markdown,
    trials_table,
    write_csv_atomically,
    write_text_atomically,
)
from experiments.store_urls import normalise_tracking
from experiments.stores import (
    DEFAULT_OPTUNA_STORAGE,
    DEFAULT_TRACKING_URI,
    ServerRefused,
    StoreError,
    absolute_sqlite_url,
    check_optuna_storage,
    check_tracking_uri,
    display_url,
    normalise_sql_url,
    parse_sql_url,
    store_exists,
    validate_tracking_uri,
)
from experiments.study import open_storage
from experiments.third_party_warnings import hide_third_party_warnings
from experiments.tracking import trial_runs
from softmaxreg.cli import add_dataclass_arguments, dataclass_from_args
from softmaxreg.config import require


@dataclass(frozen=True)
class ExportConfig:
    """Which study to export, from which stores, to which file."""

    study_name: str = "softmaxreg-mnist"
    """Optuna study (and MLflow experiment) to export; the default sweep's study on MNIST."""

    out: str = "results.csv"
    """Per-trial CSV; the best-per-batch-size tables go beside it as
    <stem>_best_per_batch_size.csv and .md."""

    storage: str = DEFAULT_OPTUNA_STORAGE
    """Optuna storage URL the sweep used."""

    tracking_uri: str = DEFAULT_TRACKING_URI
    """MLflow tracking URI the sweep used."""

    def __post_init__(self) -> None:
        require(
            isinstance(self.study_name, str)
            and bool(STUDY_NAME_PATTERN.fullmatch(self.study_name)),
            "study_name",
            self.study_name,
            "a study name (letters, digits, '.', '_' or '-')",
        )
        require(
            isinstance(self.out, str) and self.out.endswith(".csv"),
            "out",
            self.out,
            "a path ending in .csv",
        )
        parse_sql_url(self.storage, "storage")
        validate_tracking_uri(self.tracking_uri, "tracking_uri")

    @property
    def best_csv(self) -> Path:
        out = Path(self.out)
        return out.with_name(f"{out.stem}_best_per_batch_size.csv")

    @property
    def best_markdown(self) -> Path:
        return self.best_csv.with_suffix(".md")

    @property
    def outputs(self) -> list[Path]:
        return [Path(self.out), self.best_csv, self.best_markdown]


@dataclass
class Export:
    """What `export_study` wrote."""

    trials: pd.DataFrame
    best_per_batch_size: pd.DataFrame
    paths: list[Path]
    notes: list[str]


class ExportError(RuntimeError):
    """The export cannot be made as asked; the message says why (exit status 2)."""


def load_study(config: ExportConfig) -> optuna.Study:
    """The study to export, without creating any store to find out it is not there."""
    if not store_exists(config.storage):
        raise ExportError(f"--storage {display_url(config.storage)}: no such database file")
    storage = open_storage(normalise_sql_url(absolute_sqlite_url(config.storage)), read_only=True)
    names = sorted(s.study_name for s in storage.get_all_studies())
    if config.study_name not in names:
        raise ExportError(
            f"--study-name {config.study_name}: no such study in "
            f"{display_url(config.storage)}; studies there: {', '.join(names) or 'none'}"
        )
    return optuna.load_study(study_name=config.study_name, storage=storage)


def check_export(config: ExportConfig) -> None:
    """Every check that needs I/O but writes nothing; raises `StoreError`/`ExportError`."""
    folder = Path(config.out).parent
    if not folder.is_dir():
        raise ExportError(f"--out {config.out}: folder {folder.resolve()} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ExportError(f"--out {config.out}: folder {folder.resolve()} is not writable")
    for path in config.outputs:
        if path.exists() and not path.is_file():
            raise ExportError(f"--out {config.out}: {path.resolve()} exists and is not a file")
    # Export only reads the stores: they may sit in a read-only folder.
    check_optuna_storage(config.storage, "--storage", writable=False)
    check_tracking_uri(config.tracking_uri, "--tracking-uri", writable=False)
    if not store_exists(config.tracking_uri):
        raise ExportError(
            f"--tracking-uri {display_url(config.tracking_uri)}: no such database file"
        )


def export_study(config: ExportConfig) -> Export:
    """Join the study's trials with their MLflow runs and write the tables (atomically)."""
    check_export(config)
    study = load_study(config)
    runs = trial_runs(
        normalise_tracking(config.tracking_uri),
        config.study_name,
        study.user_attrs.get("study_uuid", ""),
    )
    notes = []
    if not runs and study.trials:
        notes.append(
            f"note: no MLflow runs for experiment {config.study_name!r} in "
            f"{display_url(config.tracking_uri)}; columns from MLflow are filled from Optuna's "
            "user attributes where it has them"
        )
    trials = trials_table(study, runs)
    best = best_per_batch_size(trials)
    try:
        write_csv_atomically(trials, Path(config.out))
        write_csv_atomically(best, config.best_csv)
        write_text_atomically(config.best_markdown, best_per_batch_size_markdown(best))
    except OSError as error:
        raise ExportError(f"--out {config.out}: cannot write: {error}") from error
    return Export(trials, best, config.outputs, notes)


def main(argv: Sequence[str] | None = None) -> int:
    hide_third_party_warnings()
    parser = argparse.ArgumentParser(
        prog="python -m experiments.export",
        description="Export a sweep: one CSV row per trial (Optuna joined with MLflow), and the "
        "best learning rate per batch size as CSV and Markdown.",
    )
    add_dataclass_arguments(parser, ExportConfig, title="export")
    config = dataclass_from_args(parser, ExportConfig, parser.parse_args(argv))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        export = export_study(config)
    except ServerRefused as error:  # one line: nothing about the flags is wrong
        say(f"{parser.prog}: error: {error}")
        return 2
    except (StoreError, ExportError) as error:
        parser.error(str(error))
    for note in export.notes:
        say(note)
    print(best_per_batch_size_markdown(export.best_per_batch_size))
    print(f"{len(export.trials)} trials of study {config.study_name!r} written to:")
    for path in export.paths:
        print(f"  {path.resolve()}")
    return 0


if __name__ == "__main__":
    exit_without_teardown(main())
