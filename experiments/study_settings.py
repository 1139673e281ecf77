"""One study, one set of settings: what a study fixes when it is created, and the resume check.

    recorded = fixed_settings(sweep, train_config, data_config)   # {"--epochs": 10, ...}
    check_resumable(study, sweep, train_config, data_config, data=None)   # raises SweepError

Trials of one study are compared with each other (the best per batch size, the export's best
trial), so every setting that changes what a trial's figures mean is recorded on the study when
it is created (user attribute `fixed_settings`, keyed by flag) and a resume that changes any of
them is refused, naming each changed flag with the study's value. The checks run in
`python -m experiments.sweep` before the data is loaded, and again under the study lock when a
worker opens the study.

Settings that only say how much to run or where (--n-trials, --timeout, --workers, --worker-id,
--threads, --device, --data-root, --quiet, the stores' URLs, liveness and wait times) and how the
next trials are picked (--pruner, --population, --retries) may change on resume.

Studies created before `fixed_settings` existed kept their search space and training settings
in `search_settings` (and the dataset's name in `dataset`): those are compared; what they never
recorded (--val-size, --split-seed) cannot be, and is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna

from experiments.config import SweepConfig
from experiments.stores import display_url
from softmaxreg.cli import flag_name
from softmaxreg.config import DATASET_CHOICES, DataConfig, TrainConfig

FIXED_SETTINGS_ATTR = "fixed_settings"
FIXED_SWEEP_FIELDS = ("objective", "batch_sizes", "lr_range", "lr_schedules", "repeats")
FIXED_SWEEP_FIELDS += ("sampler", "grid_lr_points")
FIXED_TRAIN_FIELDS = ("epochs", "momentum", "weight_decay", "seed", "target_accuracy", "model")
FIXED_TRAIN_FIELDS += ("lr_schedule", "warmup_steps")
FIXED_DATA_FIELDS = ("dataset", "val_size", "split_seed")
LEGACY_SETTING_FLAGS = {"batch_sizes", "lr_range", "repeats", "epochs", "target_accuracy"}
LEGACY_SETTING_FLAGS |= {"model", "momentum", "weight_decay", "sampler", "grid_lr_points"}
LEGACY_SETTING_FLAGS |= {"lr_schedule", "warmup_steps", "lr_schedules"}
"""Keys of the older `search_settings` attribute (field names), compared on resume."""
MAX_STUDY_NAME = 100
UNORDERED_FLAGS = ("--batch-sizes", "--lr-schedules")
"""Categorical choices: the same set in another order is the same search space."""


class SweepError(RuntimeError):
    """The sweep cannot start as asked (e.g. a study that cannot be resumed); exit status 2."""


@dataclass(frozen=True)
class DataIdentity:
    """Which data a study was run on; a resumed study must use the same bytes."""

    name: str
    checksum: str


def _stored_value(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value  # as JSON gives it back


def fixed_settings(
    sweep: SweepConfig, train_config: TrainConfig, data_config: DataConfig | None
) -> dict[str, object]:
    """Every setting a study keeps for life, keyed by its flag (data ones only with a config)."""
    settings = {flag_name(f): getattr(sweep, f) for f in FIXED_SWEEP_FIELDS}
    if sweep.sampler == "grid":  # the grid's shuffle: another seed would repeat grid points
        settings["--sampler-seed"] = sweep.sampler_seed
    settings |= {flag_name(f): getattr(train_config, f) for f in FIXED_TRAIN_FIELDS}
    if data_config is not None:
        settings |= {flag_name(f): getattr(data_config, f) for f in FIXED_DATA_FIELDS}
    return {flag: _stored_value(value) for flag, value in settings.items()}


def search_settings(sweep: SweepConfig, train_config: TrainConfig) -> dict[str, object]:
    """The older record of the search space (still written: reports and old code read it)."""
    return {
        name: _stored_value(getattr(sweep if hasattr(sweep, name) else train_config, name))
        for name in sorted(LEGACY_SETTING_FLAGS)
    }


def recorded_settings(study: optuna.Study) -> dict[str, object]:
    """The study's fixed settings by flag: `fixed_settings`, else what older code recorded."""
    stored = study.user_attrs.get(FIXED_SETTINGS_ATTR)
    if stored is not None:
        return dict(stored)
    legacy = study.user_attrs.get("search_settings", {})
    found = {flag_name(name): value for name, value in legacy.items() if value is not None}
    dataset = study.user_attrs.get("dataset")
    if dataset in DATASET_CHOICES:
        found["--dataset"] = dataset  # a real dataset's name (tests use synthetic data)
    return found


def shown_value(value: object) -> str:
    """A setting as the user would type it after its flag."""
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value)) if value else "(none)"
    return str(value)


def _same_setting(flag: str, stored: object, wanted: object) -> bool:
    if flag in UNORDERED_FLAGS and isinstance(stored, list) and isinstance(wanted, list):
        return sorted(map(str, stored)) == sorted(map(str, wanted))
    return stored == wanted


def _other_name(study_name: str, changed: dict[str, object]) -> str:
    parts = [study_name] + [
        flag.lstrip("-") + shown_value(value).replace(" ", "-") for flag, value in changed.items()
    ]
    suggestion = "-".join(parts).replace("(none)", "none")
    return suggestion[:MAX_STUDY_NAME].rstrip("-._")


def _stored_choices(study: optuna.Study, param: str, setting: str) -> list | None:
    """The choices `study` was created with for categorical `param` (kept in its search
    settings as `setting`; for older studies, read off a trial's distribution)."""
    stored = study.user_attrs.get("search_settings", {}).get(setting)
    if stored is not None:
        return list(stored)
    for trial in study.get_trials(deepcopy=False):
        distribution = trial.distributions.get(param)
        if distribution is not None:
            return list(distribution.choices)  # type: ignore[attr-defined]
    return None


def _check_choices(
    study: optuna.Study, param: str, setting: str, wanted: tuple, flag: str, short: str
) -> None:
    """Optuna cannot change a categorical's choices once a trial has used them."""
    stored = _stored_choices(study, param, setting)
    if not stored or not wanted or sorted(map(str, stored)) == sorted(map(str, wanted)):
        return
    shown = " ".join(map(str, stored))
    raise SweepError(
        f"study {study.study_name!r} chooses {param.replace('_', ' ')}s {shown}, not "
        f"{' '.join(map(str, wanted))} (Optuna cannot change a categorical choice): resume "
        f"with {flag} {shown}, or start a new study with --study-name {study.study_name}-{short}"
        + "-".join(map(str, wanted))
    )


def _storage_shown(study: optuna.Study) -> str:
    # load_study wraps the RDB storage in a cache; the URL is on the storage behind it.
    storage = getattr(study._storage, "_backend", study._storage)
    return display_url(storage.url) if hasattr(storage, "url") else "its storage"


def _check_directions(study: optuna.Study, sweep: SweepConfig) -> None:
    wanted = [d.upper() for d in sweep.directions]
    found = [d.name for d in study.directions]
    if wanted != found:
        raise SweepError(
            f"study {study.study_name!r} in {_storage_shown(study)} optimises {found}, but "
            f"--objective {sweep.objective} needs {wanted}: use another --study-name (e.g. "
            f"--study-name {study.study_name}-{sweep.objective.replace('_', '-')})"
        )


def check_resumable(
    study: optuna.Study,
    sweep: SweepConfig,
    train_config: TrainConfig,
    data_config: DataConfig | None,
    data: DataIdentity | None,
) -> None:
    """Raise `SweepError` unless `study` can be resumed with these settings.

    Each changed fixed setting is named with the study's value; without `data_config` the data
    settings are not compared, without `data` the data's checksum is not."""
    _check_directions(study, sweep)
    _check_choices(study, "batch_size", "batch_sizes", sweep.batch_sizes, "--batch-sizes", "bs")
    _check_choices(study, "lr_schedule", "lr_schedules", sweep.lr_schedules, "--lr-schedules", "")
    wanted = fixed_settings(sweep, train_config, data_config)
    changed = {
        flag: value
        for flag, value in recorded_settings(study).items()
        if flag in wanted and not _same_setting(flag, value, wanted[flag])
    }
    if changed:
        listed = ", ".join(
            f"{flag} {shown_value(value)} (asked: {shown_value(wanted[flag])})"
            for flag, value in changed.items()
        )
        others = {flag: wanted[flag] for flag in changed}
        raise SweepError(
            f"study {study.study_name!r} was created with {listed}; its trials are only "
            f"comparable with the same settings: resume with the study's values, or start a "
            f"new study with --study-name {_other_name(study.study_name, others)}"
        )
    stored = study.user_attrs
    if data is not None and stored.get("dataset_checksum") not in (None, data.checksum):
        raise SweepError(
            f"study {study.study_name!r} was run on {stored.get('dataset')} with checksum "
            f"{stored.get('dataset_checksum')}, but this data has checksum {data.checksum}; "
            "results would not be comparable: use another --study-name"
        )
