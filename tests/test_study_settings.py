"""One study, one set of settings: a resume that changes a fixed setting exits 2 before the data
is loaded, naming the flag with the study's value; real SQLite stores, one short trial."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from experiments.store_urls import Stores
from experiments.study import SweepError, open_or_create_study, open_storage
from experiments.study_settings import DataIdentity
from experiments.sweep import check_before_start, main, parse_args
from experiments.worker import run_sweep
from softmaxreg.config import DataConfig, TrainConfig
from tests.test_sweep import sweep_config

CPU = TrainConfig(epochs=1, device="cpu")

# (changed flags, what the message must show: the flag with the study's value)
CHANGED = [
    (["--epochs", "3"], "--epochs 1 (asked: 3)"),
    (["--momentum", "0.9"], "--momentum 0.0 (asked: 0.9)"),
    (["--weight-decay", "0.001"], "--weight-decay 0.0 (asked: 0.001)"),
    (["--seed", "1"], "--seed 0 (asked: 1)"),
    (["--target-accuracy", "0.5"], "--target-accuracy 0.92 (asked: 0.5)"),
    (["--model", "tutorial_double_softmax", "--population", "1"], "--model logits"),
    (["--lr-schedule", "constant"], "--lr-schedule cosine (asked: constant)"),
    (["--warmup-steps", "5"], "--warmup-steps 0 (asked: 5)"),
    (["--lr-range", "0.01", "1"], "--lr-range 0.05 1.0 (asked: 0.01 1.0)"),
    (["--lr-schedules", "cosine", "constant"], "--lr-schedules (none)"),
    (["--repeats", "2"], "--repeats 1 (asked: 2)"),
    (["--sampler", "random"], "--sampler tpe (asked: random)"),
    (["--dataset", "fashion_mnist"], "--dataset mnist (asked: fashion_mnist)"),
    (["--val-size", "1000"], "--val-size 5000 (asked: 1000)"),
    (["--split-seed", "1"], "--split-seed 0 (asked: 1)"),
    (["--objective", "accuracy_vs_time", "--pruner", "none", "--population", "1"], "optimises"),
    (["--batch-sizes", "32", "512"], "chooses batch sizes 32 128"),
]


def _argv(stores, tmp_path, *extra: str) -> list[str]:
    return ["--study-name", "test-study", "--batch-sizes", "32", "128", "--lr-range", "0.05",
            "1", "--epochs", "1", "--storage", stores["storage"],
            "--tracking-uri", stores["tracking_uri"], "--data-root", str(tmp_path / "data"),
            *extra]  # fmt: skip


def test_each_changed_fixed_setting_exits_2_before_the_data_is_loaded(
    stores, synthetic_splits, tmp_path, capsys
):
    config = sweep_config(stores, n_trials=1)
    run_sweep(config, CPU, DataConfig(), synthetic_splits, log=lambda _: None)
    study = optuna.load_study(study_name="test-study", storage=stores["storage"])
    assert study.user_attrs["fixed_settings"]["--val-size"] == 5000
    for extra, shown in CHANGED:
        with pytest.raises(SystemExit) as exit_info:
            main(_argv(stores, tmp_path, *extra))
        message = capsys.readouterr().err
        assert exit_info.value.code == 2, (extra, message)
        assert shown in message, (extra, message)
        assert "--study-name test-study-" in message, message
    assert not (tmp_path / "data").exists()  # refused before the data load
    study = optuna.load_study(study_name="test-study", storage=stores["storage"])
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]
    # What may change does not stop a resume: how much to run, where, with what pruning.
    sweep, train, data = _configs(stores, tmp_path, "--n-trials", "7", "--timeout", "30",
                                  "--workers", "2", "--pruner", "none", "--threads", "1",
                                  "--batch-sizes", "128", "32")  # fmt: skip
    check_before_start(sweep, train, data)


def test_refused_objective_names_the_storage(stores, synthetic_splits, tmp_path, capsys):
    run_sweep(sweep_config(stores, n_trials=1), CPU, DataConfig(), synthetic_splits,
              log=lambda _: None)  # fmt: skip
    extra = ["--objective", "accuracy_vs_time", "--pruner", "none", "--population", "1"]
    with pytest.raises(SystemExit):
        main(_argv(stores, tmp_path, *extra))
    assert f"in {stores['storage']} optimises" in capsys.readouterr().err


def test_a_worker_opening_the_study_checks_the_data_settings(stores, synthetic_splits):
    """The same check under the study lock, for a second command that got past the first."""
    run_sweep(sweep_config(stores, n_trials=1), CPU, DataConfig(), synthetic_splits,
              log=lambda _: None)  # fmt: skip
    with pytest.raises(SweepError, match="--split-seed 0 "):
        run_sweep(sweep_config(stores, n_trials=1), CPU, DataConfig(split_seed=3),
                  synthetic_splits, log=lambda _: None)  # fmt: skip
    study = optuna.load_study(study_name="test-study", storage=stores["storage"])
    assert len(study.trials) == 1


def test_a_study_from_older_code_resumes_and_compares_what_it_recorded(stores, tmp_path):
    """Older code recorded `search_settings` but not the data split: those still resume."""
    sweep, train, _ = _configs(stores, tmp_path)
    storage = open_storage(Stores.from_config(sweep).optuna_url, sweep)
    identity = DataIdentity("mnist", "abc")
    study, _ = open_or_create_study(
        sweep, storage, "test-study", train, identity, optuna.samplers.RandomSampler()
    )
    assert "fixed_settings" not in study.user_attrs and "search_settings" in study.user_attrs
    check_before_start(*_configs(stores, tmp_path, "--val-size", "1000", "--split-seed", "2"))
    with pytest.raises(SweepError, match=r"--momentum 0.0 \(asked: 0.5\)"):
        check_before_start(*_configs(stores, tmp_path, "--momentum", "0.5"))
    with pytest.raises(SweepError, match=r"--dataset mnist \(asked: kmnist\)"):
        check_before_start(*_configs(stores, tmp_path, "--dataset", "kmnist"))


def _configs(stores, tmp_path, *extra: str):
    _, sweep, train, data = parse_args(_argv(stores, tmp_path, *extra))
    return sweep, train, data
