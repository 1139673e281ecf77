"""The study's final model: its best trial's configuration trained again on train + validation.

    record = ensure_refit(study, data, train_config, optuna_url, log)  # at the study's end
    record = refit_record(study, trial)          # what was stored, if `trial` was refit

The study chose the configuration on validation; once it is chosen, the 5,000 validation
images are worth more as training data (`softmaxreg.refit`). The refit trains that
configuration with its trial's (first) seed on the 60,000 images, scores it once on the test
split, and stores the result on the study (user attribute `refit`: the trial's number, the
image count, both test accuracies and the weights), so Optuna's storage stays the source of
truth: the registered model is rebuilt from this record alone (`experiments.model_registry`),
by any worker or by `python -m experiments.reconcile`, without training again.

Stored under the study's refit lock (`experiments.locks`) unless a refit of the best trial is
there already, so the study holds one refit, of its best trial; a resumed study whose best
trial changed is refit again. With --workers N a forked child trains it on the core a first
worker to end frees while the last one still trains (`experiments.refit_process`): the best
so far, which is the study's best unless the last trials beat it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import optuna
from optuna.trial import FrozenTrial

from experiments.locks import store_lock
from experiments.model_registry import REFIT_ATTR, best_trial_with_weights, refit_record
from experiments.objective import SETTING_NAMES
from experiments.weights import encode_weights
from softmaxreg.config import TrainConfig
from softmaxreg.data import DataSplits
from softmaxreg.refit import refit


def refit_lock_name(study_name: str) -> str:
    return f"softmaxreg-refit:{study_name}"


def trial_train_config(trial: FrozenTrial, base: TrainConfig) -> TrainConfig:
    """The settings `trial` trained with (its stored settings and params, its first seed), on
    this worker's device and threads."""
    settings = trial.user_attrs.get("settings") or {}
    fixed = {name: settings[name] for name in SETTING_NAMES if name in settings}
    seeds = settings.get("seeds") or [fixed.get("seed", base.seed)]
    chosen = {k: v for k, v in trial.params.items() if k in ("batch_size", "lr", "lr_schedule")}
    return replace(base, **{**fixed, **chosen, "seed": int(seeds[0])})


def ensure_refit(
    study: optuna.Study,
    data: DataSplits,
    base: TrainConfig,
    optuna_url: str,
    log: Callable[[str], None],
) -> dict[str, object] | None:
    """Refit the best trial unless it already was; return its stored record (None: no best
    trial, or another became best while this one trained).

    The refit lock is not held while it trains: on SQLite every store lock is the one file
    lock, which the other workers' writes and this process's own reconcile need meanwhile. So
    the record is stored under the lock only if its trial is still the best and no refit of
    it is there yet (`store_refit`)."""
    trial = best_trial_with_weights(study)
    if trial is None:
        return None
    done = refit_record(study, trial)
    if done is not None:
        return done
    return store_refit(study, refit_trial(trial, data, base, log), optuna_url)


def store_refit(
    study: optuna.Study, record: dict[str, object], optuna_url: str
) -> dict[str, object] | None:
    """Store `record` on the study if its trial is still the best and has no refit stored yet
    (one made elsewhere meanwhile: the same training, the same figures); return what the study
    then holds for that trial (None: another trial became best)."""
    with store_lock(optuna_url, refit_lock_name(study.study_name)):
        best = best_trial_with_weights(study)
        if best is None or best.number != record["trial"]:
            return None
        done = refit_record(study, best)
        if done is not None:
            return done
        study.set_user_attr(REFIT_ATTR, record)
    return record


def refit_trial(
    trial: FrozenTrial,
    data: DataSplits,
    base: TrainConfig,
    log: Callable[[str], None],
) -> dict[str, object]:
    """Train `trial`'s configuration on train + validation; the record to store on the study."""
    config = trial_train_config(trial, base)
    examples = len(data.train_y) + len(data.val_y)
    log(
        f"refit: trial {trial.number}'s configuration (batch size {config.batch_size}, lr "
        f"{config.lr:.4g}, {config.epochs} epochs, seed {config.seed}) on train + "
        f"validation, {examples:,} images"
    )
    started = time.perf_counter()
    result = refit(config, data)
    return {
        "trial": trial.number,
        "seed": config.seed,
        "train_examples": examples,
        "epochs": len(result.epochs),
        "test_accuracy": result.final_test_accuracy,
        "trial_test_accuracy": trial.user_attrs.get("final_test_accuracy"),
        "trial_train_examples": len(data.train_y),
        "seconds": time.perf_counter() - started,
        "dataset_checksum": data.checksum,
        "weights": encode_weights(result.model),
    }
