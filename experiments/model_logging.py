"""Logging a PyTorch model to an MLflow run and registering it as a version, in one study's
store: the mechanics `experiments.model_registry` uses (what is registered, and when, is its).

    version = log_model_version(client, tracking_uri, ModelSource(run_id, model, tags, text), name)

MLflow's `log_model` reads the process's global tracking and registry URIs, prints events,
checks requirements against every installed distribution and creates its LoggedModel in the
active experiment; each of those is put right for the one call here (`tracking_uri`,
`mlflow_events_silenced`, `requirements_trusted`, `create_logged_model`).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.entities import LoggedModel
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.protos.databricks_pb2 import (
    ALREADY_EXISTS,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)
from mlflow.tracking._model_registry import utils as registry_utils
from mlflow.tracking._tracking_service import utils as tracking_utils
from mlflow.utils.autologging_utils.logging_and_warnings import (
    MlflowEventsAndWarningsBehaviorGlobally,
)

import softmaxreg
from softmaxreg.model import IMAGE_PIXELS

PACKAGE_DIR = Path(softmaxreg.__file__).parent
"""The library's code, copied into every logged model so that loading it needs no install."""
ARTIFACT_NAME = "model"


@dataclass
class ModelSource:
    """What one registered version is built from: the run it is logged to, and the model."""

    run_id: str
    model: torch.nn.Module
    tags: dict[str, str]
    description: str


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


def mlflow_events_silenced() -> MlflowEventsAndWarningsBehaviorGlobally:
    """MLflow's event stream off for the call: `log_model` can print a link to the logged
    model on stderr (as MLflow's own registration prints "Successfully registered model ..."),
    which the sweep's report says once.

    MLflow's own counted switch, not `MLFLOW_LOGGING_STREAM.enabled = False`: modules that
    `log_model` imports on first use (`mlflow.types.responses`, through `mlflow.pyfunc`) wrap
    their import-time work in this switch, and its exit turns the stream back on whenever its
    count falls to zero, so a flag set beside it was undone before registration printed."""
    return MlflowEventsAndWarningsBehaviorGlobally(
        disable_event_logs=True, disable_warnings=False, reroute_warnings=False
    )


@contextlib.contextmanager
def requirements_trusted() -> Iterator[None]:
    """MLflow's check of a model's requirements against the installed packages off for the call.

    `log_model` checks every requirement it writes (and loading the model back to validate the
    input example checks them again) through a map of every installed distribution's files,
    built by reading all of them: 0.4-0.8 s here, more than logging the model itself. Ours are
    pinned from this very process (`torch.__version__`, and MLflow pins its own version), so
    the check cannot find a mismatch; the pins written to the model are the same."""
    import mlflow.pyfunc
    import mlflow.utils.environment

    modules = (mlflow.utils.environment, mlflow.pyfunc)
    saved = [module.warn_dependency_requirement_mismatches for module in modules]
    for module in modules:
        module.warn_dependency_requirement_mismatches = _no_check
    try:
        yield
    finally:
        for module, function in zip(modules, saved, strict=True):
            module.warn_dependency_requirement_mismatches = function


def _no_check(_requirements: list[str]) -> None:
    return None


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


def log_model_version(client: MlflowClient, uri: str, source: ModelSource, name: str) -> str | None:
    """Log `source`'s model to its run and register it as `name`; return the new version, or
    None when that run's version is already registered."""
    if registered_version(client, name, source.run_id) is not None:
        return None
    import mlflow.pytorch  # here, not at the top: seconds of import every worker would pay

    example = input_example()
    with torch.no_grad():
        signature = infer_signature(example, source.model(torch.from_numpy(example)).numpy())
    logged = create_logged_model(client, source.run_id, source.tags)
    with (
        tracking_uri(uri),
        warnings.catch_warnings(),
        mlflow_events_silenced(),
        requirements_trusted(),
    ):
        warnings.simplefilter("ignore")  # pickle-format and pip-version advice on every call
        mlflow.pytorch.log_model(
            source.model,
            model_id=logged.model_id,
            run_id=source.run_id,  # the run's outputs list the model
            signature=signature,
            input_example=example,
            # Named, not inferred: inference imports the model in a subprocess (seconds).
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            # Pickled with our package's code inside the model, not MLflow's default pt2: pt2
            # runs torch.export, whose import of torch._dynamo alone is 4-10 s here, more than
            # a short study's training; the code travels with the model so loading it needs
            # only torch and mlflow (pickle runs code on load: load models you made).
            serialization_format="pickle",
            code_paths=[str(PACKAGE_DIR)],
        )
        ensure_registered_model(client, name)
        # The version with its tags and description in one write, not registered by
        # `log_model` and then tagged one write per tag: a version is found by its run
        # (`registered_version`), so one cut off between those writes stayed untagged for
        # good; and it is 4 writes fewer at the end of every study. Inside `tracking_uri`:
        # a SQL registry store looks the logged model up through a new `MlflowClient()`,
        # which reads the process's tracking URI, not this client's.
        version = client.create_model_version(
            name,
            f"models:/{logged.model_id}",  # what `log_model`'s registration records
            run_id=source.run_id,
            tags=source.tags,
            description=source.description,
            model_id=logged.model_id,
        )
    return str(version.version)


def ensure_registered_model(client: MlflowClient, name: str) -> None:
    """Create the registered model `name` unless it exists (another study's end made it)."""
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code not in (
            ErrorCode.Name(RESOURCE_ALREADY_EXISTS), ErrorCode.Name(ALREADY_EXISTS)
        ):  # fmt: skip
            raise
