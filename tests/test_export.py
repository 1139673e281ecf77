"""The export: Optuna trials joined with their MLflow runs, written atomically as CSV/Markdown."""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess

import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient

import experiments.export
from experiments.config import SweepConfig
from experiments.export import main
from experiments.results import BEST_PER_BATCH_SIZE_COLUMNS, TRIAL_COLUMNS
from experiments.worker import run_sweep
from softmaxreg.config import DataConfig, TrainConfig
from tests.test_sweep import enqueue


def initialised_mlflow_db(tmp_path_factory: pytest.TempPathFactory):
    """An MLflow SQLite database whose schema is created once per session (see test_sweep)."""
    template = tmp_path_factory.getbasetemp() / "mlflow-template" / "mlflow.db"
    if not template.exists():
        template.parent.mkdir(exist_ok=True)
        MlflowClient(f"sqlite:///{template}").search_experiments()
    return template


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory, synthetic_splits):
    """A study of two COMPLETE trials (two seeds each) and one diverged trial."""
    folder = tmp_path_factory.mktemp("export-sweep")
    shutil.copyfile(initialised_mlflow_db(tmp_path_factory), folder / "mlflow.db")
    stores = {
        "storage": f"sqlite:///{folder / 'optuna.db'}",
        "tracking_uri": f"sqlite:///{folder / 'mlflow.db'}",
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # MLflow writes artifacts to ./mlruns
        train_config = TrainConfig(epochs=2, device="cpu")
        # The last trial is queued outside the study's --lr-range (fixed for its life).
        for n_trials, queued in ((2, ()), (1, (1.5e35,))):
            config = SweepConfig(
                study_name="export-study",
                n_trials=n_trials,
                batch_sizes=(32, 128),
                lr_range=(0.05, 1.0),
                repeats=2,
                quiet=True,
                **stores,
            )
            enqueue(stores, "export-study", [{"batch_size": 32, "lr": lr} for lr in queued])
            outcome = run_sweep(
                config, train_config, DataConfig(), synthetic_splits, log=lambda _: None
            )
    return stores, outcome


def export(stores, out, capsys, *extra) -> int:
    argv = ["--study-name", "export-study", "--out", str(out), "--storage", stores["storage"],
            "--tracking-uri", stores["tracking_uri"], *extra]  # fmt: skip
    try:
        return main(argv)
    except SystemExit as exit_info:
        return int(exit_info.code)


def test_export_writes_one_documented_row_per_trial(finished_sweep, tmp_path, capsys):
    stores, outcome = finished_sweep
    out = tmp_path / "results.csv"
    out.write_text("stale content that must be replaced whole\n")
    assert export(stores, out, capsys) == 0

    table = pd.read_csv(out)
    assert list(table.columns) == list(TRIAL_COLUMNS)
    assert list(table["trial_number"]) == [0, 1, 2]
    assert list(table["state"]) == ["COMPLETE", "COMPLETE", "FAIL"]
    assert list(table["mlflow_status"]) == ["FINISHED", "FINISHED", "FAILED"]
    assert "diverged" in table.loc[2, "fail_reason"]
    assert table["fail_reason"][:2].isna().all()
    # Settings and environment come from MLflow (params and tags), joined by run id.
    assert (table["repeats"] == 2).all() and (table["epochs"] == 2).all()
    assert (table["dataset_checksum"] == "synthetic-2000-500-500-0").all()
    assert table["device"].eq("cpu").all() and table["git_commit"].notna().all()
    assert (table["lr_schedule"] == "cosine").all()
    assert list(table["population"]) == [2, 2, 1]  # a pass of the first two, then the third
    assert (table["warmup_steps"] == 0).all()

    study = optuna.load_study(study_name="export-study", storage=stores["storage"])
    client = MlflowClient(stores["tracking_uri"])
    for trial, (_, row) in zip(study.trials, table.iterrows(), strict=True):
        run = client.get_run(row["mlflow_run_id"])
        assert run.data.tags["optuna.trial_number"] == str(trial.number)
        assert row["batch_size"] == trial.params["batch_size"]
        if trial.state.name != "COMPLETE":
            continue
        # Two seeds per configuration: the figures are their mean, recorded per seed too.
        per_seed = [s["best_val_accuracy"] for s in trial.user_attrs["per_seed"]]
        assert len(per_seed) == 2
        assert row["best_val_accuracy"] == pytest.approx(statistics.fmean(per_seed))
        assert row["best_val_accuracy_std"] == pytest.approx(statistics.pstdev(per_seed))
        assert row["objective_value"] == pytest.approx(trial.value)
        metrics = client.get_run(row["mlflow_run_id"]).data.metrics
        assert row["test_accuracy_at_best_val"] == pytest.approx(
            metrics["summary/test_accuracy_at_best_val"]
        )
        assert {"seed_0.val_accuracy", "seed_1.val_accuracy"} <= set(metrics)

    # The best-per-batch-size table is the one the sweep attached to its parent run.
    best_csv = tmp_path / "results_best_per_batch_size.csv"
    best_md = tmp_path / "results_best_per_batch_size.md"
    best = pd.read_csv(best_csv)
    assert list(best.columns) == list(BEST_PER_BATCH_SIZE_COLUMNS)
    complete = table[table["state"] == "COMPLETE"]
    assert set(best["batch_size"]) == set(complete["batch_size"])
    for _, row in best.iterrows():
        same = complete[complete["batch_size"] == row["batch_size"]]
        assert row["best_val_accuracy"] == same["best_val_accuracy"].max()
    downloaded = client.download_artifacts(outcome.parent_run_id, "best_per_batch_size.csv")
    with open(downloaded) as attached:
        assert best_csv.read_text() == attached.read()
    assert best_md.read_text().startswith("| batch_size | best_lr |")
    assert best_md.read_text() in capsys.readouterr().out

    # Atomic writes leave exactly the three files, no temporary ones.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "results.csv",
        "results_best_per_batch_size.csv",
        "results_best_per_batch_size.md",
    ]


def test_every_column_is_documented_in_the_export_docstring():
    doc = experiments.export.__doc__
    for column in (*TRIAL_COLUMNS, *BEST_PER_BATCH_SIZE_COLUMNS):
        assert re.search(rf"^    {column} +\S", doc, re.MULTILINE), column


def test_export_errors_exit_2_and_create_nothing(finished_sweep, tmp_path, capsys):
    stores, _ = finished_sweep
    out = tmp_path / "results.csv"
    assert export(stores, out, capsys, "--study-name", "no-such-study") == 2
    assert "studies there: export-study" in capsys.readouterr().err
    missing = {
        "storage": f"sqlite:///{tmp_path / 'optuna.db'}",
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    assert export(missing, out, capsys) == 2
    assert "no such database file" in capsys.readouterr().err
    assert export(stores, tmp_path / "missing" / "results.csv", capsys) == 2
    assert "does not exist" in capsys.readouterr().err
    assert export(stores, tmp_path / "results.txt", capsys) == 2
    assert list(tmp_path.iterdir()) == []
    # Onto a directory, or into a folder nobody may write: exit 2, no traceback, nothing written.
    (tmp_path / "taken.csv").mkdir()
    assert export(stores, tmp_path / "taken.csv", capsys) == 2
    assert "exists and is not a file" in capsys.readouterr().err
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK):  # root ignores permissions: make the folder read-only instead
        subprocess.run(["chattr", "+i", str(locked)], check=False)
    try:
        if not os.access(locked, os.W_OK) or _immutable(locked):
            assert export(stores, locked / "results.csv", capsys) == 2
            assert "locked" in capsys.readouterr().err
        assert list(locked.iterdir()) == []
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=False)


def _immutable(folder) -> bool:
    probe = subprocess.run(["lsattr", "-d", str(folder)], capture_output=True, text=True)
    return probe.returncode == 0 and "i" in probe.stdout.split()[0]
