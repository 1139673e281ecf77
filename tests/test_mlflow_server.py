"""A real `mlflow server` on 127.0.0.1: the sweep tracks through it, its REST API lists the runs."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pandas as pd
import pytest
from mlflow import MlflowClient

from experiments.config import SweepConfig
from experiments.export import main as export_main
from experiments.stores import mlflow_ui_command
from experiments.worker import run_sweep
from softmaxreg.config import DataConfig, TrainConfig
from tests.services import MlflowServer, copy_mlflow_db


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


@pytest.fixture
def mlflow_server(tmp_path, tmp_path_factory):
    """`mlflow server` on a free port, with its own SQLite store; always stopped afterwards."""
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    copy_mlflow_db(tmp_path_factory, server_dir / "mlflow.db")
    with MlflowServer(f"sqlite:///{server_dir / 'mlflow.db'}", server_dir) as server:
        yield server.url


def test_sweep_through_a_tracking_server_and_list_runs_over_rest(
    mlflow_server, tmp_path, monkeypatch, synthetic_splits
):
    monkeypatch.chdir(tmp_path)
    config = SweepConfig(
        study_name="served-study",
        n_trials=2,
        batch_sizes=(32, 128),
        lr_range=(0.05, 1.0),
        storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        tracking_uri=mlflow_server,
        quiet=True,
    )
    outcome = run_sweep(config, TrainConfig(epochs=2, device="cpu"), DataConfig(), synthetic_splits)
    assert not (tmp_path / "mlflow.db").exists()  # everything went to the server

    api = f"{mlflow_server}/api/2.0/mlflow"
    experiment = get_json(f"{api}/experiments/get-by-name?experiment_name=served-study")
    experiment_id = experiment["experiment"]["experiment_id"]
    runs = post_json(f"{api}/runs/search", {"experiment_ids": [experiment_id]})["runs"]
    tags = [{t["key"]: t["value"] for t in run["data"].get("tags", [])} for run in runs]
    parents = [r for r, t in zip(runs, tags, strict=True) if t["softmaxreg.role"] == "study"]
    children = [r for r, t in zip(runs, tags, strict=True) if t["softmaxreg.role"] == "trial"]
    assert len(parents) == 1 and parents[0]["info"]["run_id"] == outcome.parent_run_id
    assert sorted(r["info"]["run_name"].split()[0] for r in children) == ["trial-0", "trial-1"]
    for child in children:
        child_tags = {t["key"]: t["value"] for t in child["data"]["tags"]}
        assert child_tags["mlflow.parentRunId"] == outcome.parent_run_id
        assert child["info"]["status"] == "FINISHED"
        metrics = {m["key"] for m in child["data"]["metrics"]}
        assert {"val_accuracy", "summary/best_val_accuracy"} <= metrics
        history = get_json(
            f"{api}/metrics/get-history?run_id={child['info']['run_id']}&metric_key=val_accuracy"
        )["metrics"]
        assert sorted(m["step"] for m in history) == [1, 2]

    # The parent's artifacts were uploaded through the server.
    artifacts = MlflowClient(mlflow_server).list_artifacts(outcome.parent_run_id)
    assert "trials.csv" in {a.path for a in artifacts}

    # The export reads the runs back through the server too.
    out = tmp_path / "results.csv"
    code = export_main(["--study-name", "served-study", "--out", str(out),
                        "--storage", config.storage, "--tracking-uri", mlflow_server])  # fmt: skip
    assert code == 0
    table = pd.read_csv(out)
    assert list(table["mlflow_status"]) == ["FINISHED", "FINISHED"]
    assert mlflow_ui_command(mlflow_server).startswith(f"open {mlflow_server}")
