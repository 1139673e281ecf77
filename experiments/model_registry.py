"""The study's best model in MLflow: logged with `mlflow.pytorch`, registered under the study.

    name = registered_model_name("softmaxreg-mnist")       # "softmaxreg-mnist-best"
    version = ensure_best_model(mirror, study)             # None if already registered

Built from Optuna's records alone, so a rebuilt mirror registers the same model: the study's
`refit` record (`experiments.refit`: the best trial's configuration trained again on train +
validation, 60,000 images), logged to a run of its own, `refit-trial-<n>` (role `refit`, beside
the trial runs under the parent run); or, with `--no-refit`, the best trial's own weights (its
`weights` user attribute, `experiments.weights`, 55,000 images) logged to the trial's run. One
model version per best trial: the version is found again by its run, under the study's registry
lock (`experiments.locks`, held in Optuna's storage), so any number of workers, the
`--workers` command's final reconcile and `python -m experiments.reconcile` register it once,
and a resumed study whose best trial changed gets a new version on top.

In MLflow 3 a logged model is a LoggedModel entity of an experiment, linked to its run by
`source_run_id` and listed in the run's outputs; the version's source is `models:/<model id>`.
The entity is created here, in the run's own experiment, so MLflow's runs table shows the model
and its registered version in the best trial's Models column.

The model takes a batch of flattened, normalised images (float32, N × 784, as
`softmaxreg.load_splits` returns them) and returns N × 10 logits; loading it back with
`mlflow.pytorch.load_model` or `mlflow.pyfunc.load_model` needs torch and mlflow only: the
model is pickled with the `softmaxreg` package's code inside it (MLflow's `code_paths`), which
is quicker to log than MLflow's default pt2 format (`torch.export`, seconds of import). Pickle
runs code when loaded, so load only models from stores you trust.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import optuna
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
from optuna.trial import FrozenTrial, TrialState

import softmaxreg
from experiments.locks import store_lock
from experiments.tracking import ROLE_TAG, STUDY_UUID_TAG, TRIAL_NUMBER_TAG
from experiments.weights import WEIGHTS_ATTR, model_from_weights, model_of_trial
from softmaxreg.model import IMAGE_PIXELS

if TYPE_CHECKING:
    from experiments.mirror import Mirror

PACKAGE_DIR = Path(softmaxreg.__file__).parent
"""The library's code, copied into every logged model so that loading it needs no install."""
MODEL_NAME_SUFFIX = "-best"
ARTIFACT_NAME = "model"
REFIT_ATTR = "refit"
"""Study user attribute holding the refit of its best trial (`experiments.refit`)."""
REFIT_ROLE = "refit"
REFIT_OF_TAG = "softmaxreg.refit_of_trial"


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


def registry_lock_name(study_name: str) -> str:
    """Held while the study's best model is looked up and registered."""
    return f"softmaxreg-registry:{study_name}"


def refit_record(study: optuna.Study, trial: FrozenTrial) -> dict[str, object] | None:
    """The study's refit record if it is `trial`'s (a resumed study may have a newer best)."""
    record = study.user_attrs.get(REFIT_ATTR)
    if isinstance(record, dict) and record.get("trial") == trial.number:
        return record
    return None


@dataclass
class ModelSource:
    """What one registered version is built from: the run it is logged to, and the model."""

    run_id: str
    model: torch.nn.Module
    tags: dict[str, str]
    description: str


def trial_source(run_id: str, trial: FrozenTrial, study_uuid: str) -> ModelSource | None:
    model = model_of_trial(trial)
    if model is None:
        return None
    return ModelSource(
        run_id,
        model,
        {STUDY_UUID_TAG: study_uuid, TRIAL_NUMBER_TAG: str(trial.number)},
        f"trial {trial.number}: batch size {trial.params.get('batch_size')}, lr "
        f"{trial.params.get('lr', float('nan')):.4g}, best validation accuracy "
        f"{trial.user_attrs['best_val_accuracy']:.4f}",
    )


def refit_source(
    run_id: str, trial: FrozenTrial, record: dict[str, object], study_uuid: str
) -> ModelSource:
    settings = trial.user_attrs.get("settings") or {}
    model = model_from_weights(record["weights"], str(settings.get("model", "logits")))
    return ModelSource(
        run_id,
        model,
        {
            STUDY_UUID_TAG: study_uuid,
            TRIAL_NUMBER_TAG: str(trial.number),
            "train_examples": str(record["train_examples"]),
        },
        f"trial {trial.number}'s configuration (batch size {trial.params.get('batch_size')}, "
        f"lr {trial.params.get('lr', float('nan')):.4g}, chosen on validation) refit on train + "
        f"validation, {record['train_examples']:,} images: test accuracy "
        f"{record['test_accuracy']:.4f} (the trial's own weights: "
        f"{record['trial_test_accuracy']:.4f})",
    )


def refit_run_filter(study_uuid: str, trial_number: int) -> str:
    return (
        f"tags.`{ROLE_TAG}` = '{REFIT_ROLE}' AND tags.`{STUDY_UUID_TAG}` = '{study_uuid}' "
        f"AND tags.`{REFIT_OF_TAG}` = '{trial_number}'"
    )


def ensure_refit_run(
    client: MlflowClient,
    parent_run_id: str,
    study_uuid: str,
    trial: FrozenTrial,
    record: dict[str, object],
) -> str:
    """The refit's run under the study's parent run, found by its tags or created (called
    under the registry lock): its settings are the trial's, and it says what it trained on."""
    parent = client.get_run(parent_run_id)
    experiment_id = parent.info.experiment_id
    found = client.search_runs([experiment_id], refit_run_filter(study_uuid, trial.number))
    if found:
        return found[0].info.run_id
    tags = {
        ROLE_TAG: REFIT_ROLE,
        STUDY_UUID_TAG: study_uuid,
        REFIT_OF_TAG: str(trial.number),
        "mlflow.parentRunId": parent_run_id,
        "dataset_checksum": str(record.get("dataset_checksum", "")),
    }
    run = client.create_run(
        experiment_id, tags={k: v for k, v in tags.items() if v}, run_name=refit_run_name(trial)
    )
    run_id = run.info.run_id
    settings = {k: v for k, v in (trial.user_attrs.get("settings") or {}).items() if k != "seeds"}
    params = {**settings, **trial.params, "seed": record["seed"], "refit_of_trial": trial.number}
    params |= {"train_examples": record["train_examples"], "train_split": "train+validation"}
    for key, value in params.items():
        if str(value) != "":
            client.log_param(run_id, key, str(value))
    metrics = {
        "test_accuracy": record["test_accuracy"],
        "trial_test_accuracy": record["trial_test_accuracy"],
        "train_examples": record["train_examples"],
        "trial_train_examples": record["trial_train_examples"],
        "refit_seconds": record["seconds"],
    }
    for key, value in metrics.items():
        if value is not None:
            client.log_metric(run_id, key, float(value))
    client.log_metric(parent_run_id, "study_refit_test_accuracy", float(record["test_accuracy"]))
    client.set_terminated(run_id, "FINISHED")
    return run_id


def refit_run_name(trial: FrozenTrial) -> str:
    return f"refit-trial-{trial.number} bs{trial.params.get('batch_size')} train+val"


def ensure_best_model(mirror: Mirror, study: optuna.Study) -> str | None:
    """Log and register the study's best model unless its version exists; return the new
    version. The refit's when the study has one for its best trial, else the trial's own."""
    trial = best_trial_with_weights(study)
    if trial is None:
        return None
    trial_run_id = mirror.sync(trial)
    name = registered_model_name(mirror.study_name)
    uri = mirror.stores.tracking_uri
    with store_lock(mirror.stores.optuna_url, registry_lock_name(mirror.study_name)):
        record = refit_record(study, trial)
        if record is None:
            source = trial_source(trial_run_id, trial, mirror.study_uuid)
        else:
            run_id = mirror.call(
                ensure_refit_run, mirror.client, mirror.parent_run_id, mirror.study_uuid,
                trial, record,
            )  # fmt: skip
            source = refit_source(run_id, trial, record, mirror.study_uuid)
        if source is None:
            return None
        return mirror.call(log_model_version, mirror.client, uri, source, name)


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
