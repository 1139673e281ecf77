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
runs code when loaded, so load only models from stores you trust. How a model is logged and
registered against MLflow's global state is `experiments.model_logging`'s part.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import optuna
from mlflow import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from experiments.locks import store_lock
from experiments.model_logging import ModelSource, log_model_version
from experiments.tracking import ROLE_TAG, STUDY_UUID_TAG, TRIAL_NUMBER_TAG
from experiments.weights import WEIGHTS_ATTR, model_from_weights, model_of_trial

if TYPE_CHECKING:
    from experiments.mirror import Mirror

MODEL_NAME_SUFFIX = "-best"
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


def registry_lock_name(study_name: str) -> str:
    """Held while the study's best model is looked up and registered."""
    return f"softmaxreg-registry:{study_name}"


def refit_record(study: optuna.Study, trial: FrozenTrial) -> dict[str, object] | None:
    """The study's refit record if it is `trial`'s (a resumed study may have a newer best)."""
    record = study.user_attrs.get(REFIT_ATTR)
    if isinstance(record, dict) and record.get("trial") == trial.number:
        return record
    return None


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
