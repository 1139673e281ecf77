"""The best trial's model: stored on the trial, logged with mlflow.pytorch, registered, loadable.

A real sweep on synthetic data with real SQLite stores; the registered model is loaded back
through MLflow's own loaders and must score exactly what its trial recorded.
"""

from __future__ import annotations

import mlflow
import mlflow.pyfunc
import mlflow.pytorch
import optuna
import pytest
import torch
from mlflow import MlflowClient
from optuna.trial import TrialState

from experiments.config import SweepConfig
from experiments.model_registry import best_trial_with_weights, registered_model_name
from experiments.reconcile import reconcile_study
from experiments.weights import decode_weights, encode_weights, model_of_trial
from experiments.worker import run_sweep
from softmaxreg.config import DataConfig, TrainConfig
from softmaxreg.model import build_model
from tests.services import copy_mlflow_db


def accuracy(logits, labels: torch.Tensor) -> float:
    predicted = torch.as_tensor(logits).argmax(dim=1)
    return (predicted == labels.cpu()).float().mean().item()


@pytest.fixture
def swept(tmp_path, tmp_path_factory, monkeypatch, synthetic_splits):
    copy_mlflow_db(tmp_path_factory, tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)  # MLflow writes artifacts to ./mlruns
    config = SweepConfig(
        study_name="model-study",
        n_trials=3,
        batch_sizes=(32, 128),
        lr_range=(0.05, 1.0),
        quiet=True,
        storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    run_sweep(config, TrainConfig(epochs=2, device="cpu"), DataConfig(), synthetic_splits,
              log=lambda _: None)  # fmt: skip
    study = optuna.load_study(study_name="model-study", storage=config.storage)
    return config, study


def test_weights_round_trip_exactly():
    model = build_model("logits", seed=3)
    encoded = encode_weights(model)
    assert encoded["tensors"]["linear.weight"]["shape"] == [10, 784]
    for name, tensor in decode_weights(encoded).items():
        assert torch.equal(tensor, model.state_dict()[name]), name


def test_registered_model_loads_and_scores_its_trials_test_accuracy(
    swept, synthetic_splits, monkeypatch
):
    config, study = swept
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert complete and all("weights" in t.user_attrs for t in complete)
    assert all("weights" not in t.user_attrs for t in study.trials if t not in complete)
    best = best_trial_with_weights(study)
    assert best.user_attrs["best_val_accuracy"] == max(
        t.user_attrs["best_val_accuracy"] for t in complete
    )

    client = MlflowClient(config.tracking_uri, registry_uri=config.tracking_uri)
    name = registered_model_name("model-study")
    versions = client.search_model_versions(f"name = '{name}'")
    assert [str(v.version) for v in versions] == ["1"]
    run = client.get_run(versions[0].run_id)
    assert run.data.tags["optuna.trial_number"] == str(best.number)  # the best trial's own run
    assert versions[0].tags["optuna.trial_number"] == str(best.number)
    # MLflow 3's LoggedModel entity: in the run's own experiment (the runs table's Models column
    # lists only that experiment's models), linked to the run both ways, the version's source.
    logged = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
    )
    assert [m.name for m in logged] == ["model"]
    assert logged[0].params["batch_size"] == str(best.params["batch_size"])
    assert [o.model_id for o in run.outputs.model_outputs] == [logged[0].model_id]
    assert versions[0].source == f"models:/{logged[0].model_id}"

    monkeypatch.setenv("MLFLOW_TRACKING_URI", config.tracking_uri)  # as a user would load it
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", config.tracking_uri)
    uri = f"models:/{name}/1"
    model = mlflow.pytorch.load_model(uri)
    with torch.no_grad():
        logits = model(synthetic_splits.test_x.cpu())
    expected = best.user_attrs["final_test_accuracy"]
    tolerance = 0.5 / len(synthetic_splits.test_y)  # under half an example: the same count
    assert accuracy(logits, synthetic_splits.test_y) == pytest.approx(expected, abs=tolerance)
    served = mlflow.pyfunc.load_model(uri)
    assert served.metadata.get_input_schema().inputs[0].shape == (-1, 784)
    predictions = served.predict(synthetic_splits.test_x.cpu().numpy())
    assert accuracy(predictions, synthetic_splits.test_y) == pytest.approx(expected, abs=tolerance)
    # The stored weights are the model's: rebuilding from the trial gives the same logits.
    with torch.no_grad():
        rebuilt = model_of_trial(best)(synthetic_splits.test_x.cpu())
    assert torch.equal(rebuilt, logits)


def test_reconcile_registers_a_missing_model_once(swept):
    config, _ = swept
    client = MlflowClient(config.tracking_uri, registry_uri=config.tracking_uri)
    name = registered_model_name("model-study")
    client.delete_registered_model(name)

    _, _, repaired = reconcile_study(config, log=lambda _: None)
    assert repaired == 1
    assert len(client.search_model_versions(f"name = '{name}'")) == 1
    _, _, repaired = reconcile_study(config, log=lambda _: None)
    assert repaired == 0
    assert len(client.search_model_versions(f"name = '{name}'")) == 1
