"""The study's best model: the best trial refit on train + validation (or, with --no-refit, the
trial's own weights), stored in Optuna, logged with mlflow.pytorch, registered, loadable.

A real sweep on synthetic data with real SQLite stores; the registered model is loaded back
through MLflow's own loaders and must score exactly what its record says.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

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
from softmaxreg import train, train_and_validation
from softmaxreg.config import DataConfig, TrainConfig
from softmaxreg.model import build_model
from tests.services import copy_mlflow_db

REPO_ROOT = Path(__file__).resolve().parent.parent


def accuracy(logits, labels: torch.Tensor) -> float:
    predicted = torch.as_tensor(logits).argmax(dim=1)
    return (predicted == labels.cpu()).float().mean().item()


TRAIN = TrainConfig(epochs=2, device="cpu")


def sweep_in(folder, tmp_path_factory, monkeypatch, synthetic_splits, *, refit: bool):
    copy_mlflow_db(tmp_path_factory, folder / "mlflow.db")
    # MLflow writes artifacts to ./mlruns. A folder of its own, not the stores' folder: there
    # MLflow's default store (sqlite:///mlflow.db) would be the study's own, and a call that
    # wrongly used the process's default rather than the study's store would pass unseen.
    (folder / "cwd").mkdir()
    monkeypatch.chdir(folder / "cwd")
    config = SweepConfig(
        study_name="model-study",
        n_trials=3,
        batch_sizes=(32, 128),
        lr_range=(0.05, 1.0),
        refit=refit,
        quiet=True,
        storage=f"sqlite:///{folder / 'optuna.db'}",
        tracking_uri=f"sqlite:///{folder / 'mlflow.db'}",
    )
    run_sweep(config, TRAIN, DataConfig(), synthetic_splits, log=lambda _: None)
    study = optuna.load_study(study_name="model-study", storage=config.storage)
    return config, study


@pytest.fixture
def swept(tmp_path, tmp_path_factory, monkeypatch, synthetic_splits):
    """A study run with --no-refit: the best trial's own weights are registered."""
    return sweep_in(tmp_path, tmp_path_factory, monkeypatch, synthetic_splits, refit=False)


@pytest.fixture
def refit_swept(tmp_path, tmp_path_factory, monkeypatch, synthetic_splits):
    """A study run with the default refit."""
    return sweep_in(tmp_path, tmp_path_factory, monkeypatch, synthetic_splits, refit=True)


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


LOAD_WITHOUT_OUR_PACKAGE = """
import importlib.util, sys
# Neither the checkout nor the editable install may provide softmaxreg: only the model's code.
sys.path = [p for p in sys.path if p not in ("", sys.argv[2])]
sys.meta_path = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
assert importlib.util.find_spec("softmaxreg") is None, "softmaxreg importable"
import mlflow.pytorch, torch
model = mlflow.pytorch.load_model(sys.argv[1])
print(type(model).__module__, tuple(model(torch.zeros(3, 784)).shape))
"""


def test_the_registered_model_loads_where_softmaxreg_is_not_installed(swept, tmp_path):
    """The model carries the library's code (pickled, with MLflow's code_paths): a consumer
    needs torch and mlflow, not our package."""
    config, _ = swept
    name = registered_model_name("model-study")
    env = {**os.environ, "MLFLOW_TRACKING_URI": config.tracking_uri,
           "MLFLOW_REGISTRY_URI": config.tracking_uri, "PYTHONPATH": ""}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_OUR_PACKAGE, f"models:/{name}/1", str(REPO_ROOT)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["softmaxreg.model", "(3,", "10)"]


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


def test_the_refit_model_is_trained_on_train_and_validation_and_registered(
    refit_swept, synthetic_splits, monkeypatch
):
    config, study = refit_swept
    best = best_trial_with_weights(study)
    record = study.user_attrs["refit"]
    merged = len(synthetic_splits.train_y) + len(synthetic_splits.val_y)
    assert record["trial"] == best.number and record["train_examples"] == merged == 2500

    client = MlflowClient(config.tracking_uri, registry_uri=config.tracking_uri)
    name = registered_model_name("model-study")
    (version,) = client.search_model_versions(f"name = '{name}'")
    run = client.get_run(version.run_id)
    # The refit's own run, beside the trial runs: it says what it trained on, and both scores.
    assert run.data.tags["softmaxreg.role"] == "refit"
    assert run.data.tags["softmaxreg.refit_of_trial"] == str(best.number)
    assert run.data.tags["mlflow.parentRunId"] == study.user_attrs["mlflow_parent_run_id"]
    assert run.data.params["train_examples"] == "2500"
    assert run.data.params["train_split"] == "train+validation"
    assert run.data.metrics["test_accuracy"] == pytest.approx(record["test_accuracy"])
    assert run.data.metrics["trial_test_accuracy"] == pytest.approx(
        best.user_attrs["final_test_accuracy"]
    )
    assert version.tags["train_examples"] == "2500"
    assert version.description.startswith(f"trial {best.number}'s configuration (batch size")
    assert f"test accuracy {record['test_accuracy']:.4f}" in version.description

    # The registered model is the refit: the same weights as training the trial's settings
    # again on the merged split, and not those of training on the training split alone.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", config.tracking_uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", config.tracking_uri)
    model = mlflow.pytorch.load_model(f"models:/{name}/{version.version}")
    settings = best.user_attrs["settings"]
    again = replace(TRAIN, batch_size=best.params["batch_size"], lr=best.params["lr"],
                    seed=settings["seeds"][0], lr_schedule=settings["lr_schedule"])  # fmt: skip
    refit_again = train(again, train_and_validation(synthetic_splits)).model.state_dict()
    trained_alone = train(again, synthetic_splits).model.state_dict()
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, refit_again[key]), key
    assert not torch.equal(model.state_dict()["linear.weight"], trained_alone["linear.weight"])
    assert not torch.equal(model.state_dict()["linear.weight"], model_of_trial(best).linear.weight)
    # Its test accuracy is reproducible from the registered model.
    with torch.no_grad():
        logits = model(synthetic_splits.test_x.cpu())
    tolerance = 0.5 / len(synthetic_splits.test_y)
    assert accuracy(logits, synthetic_splits.test_y) == pytest.approx(
        record["test_accuracy"], abs=tolerance
    )


def test_a_repair_registers_the_refit_again_without_training(refit_swept):
    config, study = refit_swept
    client = MlflowClient(config.tracking_uri, registry_uri=config.tracking_uri)
    name = registered_model_name("model-study")
    (first,) = client.search_model_versions(f"name = '{name}'")
    client.delete_registered_model(name)

    _, _, repaired = reconcile_study(config, log=lambda _: None)
    assert repaired == 1
    (version,) = client.search_model_versions(f"name = '{name}'")
    assert version.run_id == first.run_id  # the same refit run, found again by its tags
    assert client.get_run(version.run_id).data.tags["softmaxreg.role"] == "refit"
    assert reconcile_study(config, log=lambda _: None)[2] == 0
    assert len(client.search_model_versions(f"name = '{name}'")) == 1
    reloaded = optuna.load_study(study_name="model-study", storage=config.storage)
    assert reloaded.user_attrs["refit"] == study.user_attrs["refit"]  # rebuilt, not retrained
