"""The best trial's model in MLflow: logged with `mlflow.pytorch`, registered under the study.

    name = registered_model_name("softmaxreg-mnist")       # "softmaxreg-mnist-best"
    version = log_best_model(client, tracking_uri, run_id, trial, name)   # None if present

Built from the trial's record alone (its `weights` user attribute, `experiments.weights`), so a
rebuilt mirror registers the same model. One model version per best trial: the version is found
again by its run (the best trial's own run), so calling this twice registers nothing new, and a
resumed study whose best trial changed gets a new version on top.

In MLflow 3 a logged model is a LoggedModel entity of an experiment, linked to its run by
`source_run_id` and listed in the run's outputs; the version's source is `models:/<model id>`.
The entity is created here, in the run's own experiment, so MLflow's runs table shows the model
and its registered version in the best trial's Models column.

The model takes a batch of flattened, normalised images (float32, N × 784, as
`softmaxreg.load_splits` returns them) and returns N × 10 logits; loading it back with
`mlflow.pytorch.load_model` or `mlflow.pyfunc.load_model` needs the `softmaxreg` package.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import numpy as np
import optuna
import torch
from mlflow import MlflowClient
from mlflow.entities import LoggedModel
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.tracking._model_registry import utils as registry_utils
from mlflow.tracking._tracking_service import utils as tracking_utils
from optuna.trial import FrozenTrial, TrialState

from experiments.tracking import STUDY_UUID_TAG, TRIAL_NUMBER_TAG
from experiments.weights import WEIGHTS_ATTR, model_of_trial
from softmaxreg.model import IMAGE_PIXELS

MODEL_NAME_SUFFIX = "-best"
ARTIFACT_NAME = "model"


def registered_model_name(study_name: str) -> str:
    return study_name + MODEL_NAME_SUFFIX


def best_trial_with_weights(study: optuna.Study) -> FrozenTrial | None:
    """The COMPLETE trial with the highest best validation accuracy (the earliest on ties) that
    stored its weights; the same rule as the best-per-batch-size table, for one or two
    objectives alike."""
    candidates = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get(WEIGHTS_ATTR) and t.user_attrs.get("best_val_accuracy") is not None
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda t: (t.user_attrs["best_val_accuracy"], -t.number))


def input_example() -> np.ndarray:
    """Two all-zero images (the mean image after normalisation): the shape and dtype the model
    expects, without needing the data to rebuild the model."""
    return np.zeros((2, IMAGE_PIXELS), dtype=np.float32)


@contextlib.contextmanager
def tracking_uri(uri: str) -> Iterator[None]:
    """`mlflow.pytorch.log_model` reads the global tracking and registry URIs: point them at
    this study's store for the call only, then put back exactly what was set (None included,
    which `mlflow.get_registry_uri()` would have turned into a pinned value)."""
    registry_before = registry_utils._registry_uri
    with tracking_utils._use_tracking_uri(uri):
        registry_utils.set_registry_uri(uri)
        try:
            yield
        finally:
            registry_utils._registry_uri = registry_before


def registered_version(client: MlflowClient, name: str, run_id: str) -> str | None:
    """The version of `name` built from run `run_id`, if any."""
    try:
        versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except MlflowException as error:  # the registered model itself is missing (or deleted)
        if error.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise
        return None
    return versions[0].version if versions else None


def create_logged_model(client: MlflowClient, run_id: str, tags: dict[str, str]) -> LoggedModel:
    """The model's LoggedModel entity, in its run's experiment. Left to `log_model`, it would
    land in the process's active experiment (MLflow's Default, id 0, for a worker that never
    calls `set_experiment`), and MLflow's runs table, which lists the logged models of the
    experiment shown, would show "-" in the run's Models column."""
    run = client.get_run(run_id)
    return client.create_logged_model(
        run.info.experiment_id,
        name=ARTIFACT_NAME,
        source_run_id=run_id,
        tags=tags,
        params=run.data.params,  # what log_model copies from the run when it creates one
    )


def log_best_model(
    client: MlflowClient, uri: str, run_id: str, trial: FrozenTrial, name: str, study_uuid: str
) -> str | None:
    """Log `trial`'s model to its run `run_id` and register it as `name`; return the new
    version, or None when that run's version is already registered."""
    if registered_version(client, name, run_id) is not None:
        return None
    model = model_of_trial(trial)
    if model is None:
        return None
    import mlflow.pytorch  # here, not at the top: seconds of import every worker would pay

    example = input_example()
    with torch.no_grad():
        signature = infer_signature(example, model(torch.from_numpy(example)).numpy())
    tags = {STUDY_UUID_TAG: study_uuid, TRIAL_NUMBER_TAG: str(trial.number)}
    logged = create_logged_model(client, run_id, tags)
    with tracking_uri(uri), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pickle-format and pip-version advice on every call
        info = mlflow.pytorch.log_model(
            model,
            model_id=logged.model_id,
            run_id=run_id,  # the run's outputs list the model
            signature=signature,
            input_example=example,
            registered_model_name=name,
            # Named, not inferred: inference imports the model in a subprocess (seconds).
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        )
    version = str(info.registered_model_version)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.update_model_version(
        name,
        version,
        description=f"trial {trial.number}: batch size {trial.params.get('batch_size')}, lr "
        f"{trial.params.get('lr', float('nan')):.4g}, best validation accuracy "
        f"{trial.user_attrs['best_val_accuracy']:.4f}",
    )
    return version
