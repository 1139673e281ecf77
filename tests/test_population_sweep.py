"""--population K: trials asked K at a time, trained together, each its own trial and run.

Real SQLite stores and `run_sweep` on small synthetic data, as in tests/test_sweep.py; the
reference for every member's figures is `softmaxreg.train` on the same configuration alone.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from experiments.interrupts import GATE, install_signal_handlers
from experiments.population_trials import on_epoch_end, on_member_epoch
from experiments.report import format_report
from experiments.store_urls import Stores
from experiments.sweep import main
from experiments.worker import run_sweep
from softmaxreg.config import ConfigError, DataConfig, TrainConfig
from softmaxreg.population import train_population
from softmaxreg.trainer import train
from tests.services import assert_sweep_refuses
from tests.test_sweep import (
    child_runs,
    enqueue,
    interrupt_once_trial_has_trained,
    runs_by_role,
    sweep_config,
)

THREE_EPOCHS = TrainConfig(epochs=3, device="cpu")
STABLE_LRS = (0.01, 0.1)
"""Learning rates where a population member and `train` alone agree epoch by epoch: they differ
by float rounding only (a stacked matmul may sum in another order), and on these 2,000 synthetic
images SGD at batch 32 with lr >= 0.3 amplifies that rounding into other accuracies within an
epoch on some CPUs (seen on an AVX-512 host), so figures compared exactly use lrs below it."""


def quiet(_message: str) -> None:
    pass


def test_members_share_a_batch_size_and_match_training_alone(stores, synthetic_splits):
    """Each member's stored epochs equal `train` of its configuration alone (same seed), and
    every trial of a pass has the first one's batch size."""
    config = sweep_config(
        stores, n_trials=6, population=3, sampler="random", pruner="none", lr_range=STABLE_LRS
    )
    outcome = run_sweep(config, THREE_EPOCHS, DataConfig(), synthetic_splits, log=quiet)
    report = format_report(outcome, config, Stores.from_config(config))
    assert "trained in a population (up to 3 per pass) are those of the shared pass" in report
    assert "no complete trial yet" not in report  # both batch sizes ran

    one_pass = replace(config, study_name="one-pass", n_trials=3)
    outcome = run_sweep(one_pass, THREE_EPOCHS, DataConfig(), synthetic_splits, log=quiet)
    report = format_report(outcome, one_pass, Stores.from_config(one_pass))
    assert (
        "note: no complete trial yet at batch size 128; run more trials (a pass trains 3 "
        "trials of one batch size: 6 trials give each batch size one)" in report
    )

    study = optuna.load_study(study_name="test-study", storage=stores["storage"])
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 6
    passes = [study.trials[first : first + 3] for first in (0, 3)]  # two passes of three
    for members in passes:
        assert len({t.params["batch_size"] for t in members}) == 1
        assert len({t.params["lr"] for t in members}) == 3
        assert all(t.user_attrs["settings"]["population"] == 3 for t in members)
    # The batch sizes take turns (the one with fewest trials next): each gets its lrs searched.
    assert [members[0].params["batch_size"] for members in passes] == [32, 128]
    for trial in study.trials:
        alone = train(
            replace(THREE_EPOCHS, batch_size=trial.params["batch_size"], lr=trial.params["lr"]),
            synthetic_splits,
        )
        stored = trial.user_attrs["epochs"]
        assert stored["val_accuracy"] == pytest.approx([m.val_accuracy for m in alone.epochs])
        assert stored["train_loss"] == pytest.approx([m.train_loss for m in alone.epochs], rel=1e-3)
        assert trial.value == pytest.approx(alone.best_val_accuracy)
        assert trial.user_attrs["final_test_accuracy"] == pytest.approx(alone.final_test_accuracy)


def test_passes_cover_every_batch_size_under_tpe(stores, synthetic_splits):
    """The default sampler, 4 passes over 2 batch sizes: 2 passes each, whatever TPE prefers."""
    config = sweep_config(stores, n_trials=8, population=2, pruner="none")  # TPE
    run_sweep(config, replace(THREE_EPOCHS, epochs=1), DataConfig(), synthetic_splits, log=quiet)
    study = optuna.load_study(study_name="test-study", storage=stores["storage"])
    sizes = [t.params["batch_size"] for t in study.trials]
    assert sorted(sizes) == [32] * 4 + [128] * 4
    assert all(sizes[i] == sizes[i + 1] for i in range(0, 8, 2))  # a pass shares one


def test_queued_trials_take_passes_of_their_own_batch_size(stores, synthetic_splits):
    """Enqueued trials (a dead worker's retries, a user's points) come first, as Optuna pops
    them: a pass stops where the queue's batch size changes, and a queue that ends inside a
    pass is joined by new trials of its batch size, so no trial trains in a population of one
    beside another batch size's."""
    config = sweep_config(stores, n_trials=2, population=2, sampler="random", pruner="none")
    one_epoch = replace(THREE_EPOCHS, epochs=1)
    run_sweep(config, one_epoch, DataConfig(), synthetic_splits, log=quiet)
    study = optuna.load_study(study_name="test-study", storage=stores["storage"])
    for batch_size, lr in ((32, 0.1), (32, 0.2), (128, 0.3), (128, 0.4), (128, 0.5), (32, 0.6)):
        study.enqueue_trial({"batch_size": batch_size, "lr": lr})
    resumed = replace(config, n_trials=8, population=4)
    run_sweep(resumed, one_epoch, DataConfig(), synthetic_splits, log=quiet)

    trials = optuna.load_study(study_name="test-study", storage=stores["storage"]).trials[2:]
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 8
    assert [t.params["batch_size"] for t in trials] == [32, 32, 128, 128, 128, 32, 32, 32]
    assert [t.params["lr"] for t in trials[:6]] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert [t.user_attrs["settings"]["population"] for t in trials] == [2, 2] + [3] * 6


def test_population_runs_have_the_fields_of_single_mode(stores, synthetic_splits):
    """One MLflow run per trial, with the same params, metrics and tags as a trial trained
    alone, and the same per-epoch history."""
    single = sweep_config(stores, study_name="single", n_trials=2, pruner="none")
    run_sweep(single, THREE_EPOCHS, DataConfig(), synthetic_splits, log=quiet)
    together = replace(single, study_name="together", n_trials=4, population=4)
    run_sweep(together, THREE_EPOCHS, DataConfig(), synthetic_splits, log=quiet)

    client = MlflowClient(stores["tracking_uri"])
    alone_run = next(iter(child_runs(client, "single").values()))
    runs = child_runs(client, "together")
    assert sorted(runs) == [0, 1, 2, 3]
    assert len(runs_by_role(client, "together")["study"]) == 1
    for run in runs.values():
        assert run.info.status == "FINISHED"
        assert set(run.data.params) == set(alone_run.data.params)
        assert set(run.data.metrics) == set(alone_run.data.metrics)
        assert set(run.data.tags) - {"mlflow.log-model.history"} == set(alone_run.data.tags) - {
            "mlflow.log-model.history"
        }
        assert run.data.params["population"] == "4"
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert sorted(m.step for m in history) == [1, 2, 3]
    assert alone_run.data.params["population"] == "1"


def test_a_pruned_member_stops_alone_and_a_diverging_one_fails_alone(stores, synthetic_splits):
    """One population of three at one batch size: a learning rate far too small is pruned
    after epoch 2, one far too large diverges in epoch 1, and the third trains all 3 epochs."""
    # Learning rates where a member and a lone run agree epoch by epoch (STABLE_LRS): above them
    # float rounding of the stacked matmul grows into other accuracies, and the median moves.
    one_batch_size = {"batch_sizes": (32,), "lr_range": STABLE_LRS}
    first = sweep_config(stores, n_trials=2, population=2, **one_batch_size)
    run_sweep(first, THREE_EPOCHS, DataConfig(), synthetic_splits, log=quiet)  # two to compare
    study = optuna.load_study(study_name="test-study", storage=stores["storage"])
    # The better of the two again: the same curve, so never below their median.
    good_lr, good_value = study.best_trial.params["lr"], study.best_value
    for lr in (1e-7, 1e35, good_lr):
        study.enqueue_trial({"batch_size": 32, "lr": lr})
    # Outside the study's --lr-range (which a resume cannot change): Optuna runs queued values.
    wide = replace(first, n_trials=3, population=3)
    run_sweep(wide, THREE_EPOCHS, DataConfig(), synthetic_splits, log=quiet)

    study = optuna.load_study(study_name="test-study", storage=stores["storage"])
    pruned, diverged, complete = study.trials[2:]
    assert [t.state for t in study.trials[2:]] == [
        TrialState.PRUNED,
        TrialState.FAIL,
        TrialState.COMPLETE,
    ]
    assert all(t.user_attrs["settings"]["population"] == 3 for t in study.trials[2:])
    assert pruned.user_attrs["epochs"]["step"] == [1, 2]
    assert pruned.value == pruned.user_attrs["best_val_accuracy"]
    assert "diverged at epoch 1" in diverged.user_attrs["fail_reason"]
    assert complete.user_attrs["epochs"]["step"] == [1, 2, 3]
    # Unaffected by the others leaving the population (or diverging in it).
    assert complete.value == pytest.approx(good_value)

    runs = child_runs(MlflowClient(stores["tracking_uri"]), "test-study")
    assert runs[pruned.number].info.status == "KILLED"
    assert runs[pruned.number].data.tags["optuna.pruned"] == "true"
    assert runs[diverged.number].info.status == "FAILED"
    assert "diverged" in runs[diverged.number].data.tags["optuna.fail_reason"]
    assert runs[complete.number].info.status == "FINISHED"


def test_repeats_train_each_seed_as_a_population(stores, synthetic_splits):
    config = sweep_config(
        stores, n_trials=2, population=2, repeats=2, pruner="none", lr_range=STABLE_LRS
    )
    run_sweep(config, THREE_EPOCHS, DataConfig(), synthetic_splits, log=quiet)
    study = optuna.load_study(study_name="test-study", storage=stores["storage"])
    for trial in study.trials:
        seeds = [
            train(
                replace(THREE_EPOCHS, batch_size=trial.params["batch_size"], lr=trial.params["lr"],
                        seed=seed),
                synthetic_splits,
            ).best_val_accuracy
            for seed in (0, 1)
        ]  # fmt: skip
        assert trial.value == pytest.approx(sum(seeds) / 2)
        assert [s["best_val_accuracy"] for s in trial.user_attrs["per_seed"]] == pytest.approx(
            seeds
        )


def test_ctrl_c_mid_pass_fails_every_member_with_the_reason(stores, synthetic_splits):
    # --epochs is the study's for life, so the interrupted pass is the long one by its batch
    # size: 2,000 steps an epoch at batch size 1 against 63 at 32, ten epochs to interrupt in.
    config = sweep_config(stores, n_trials=1, batch_sizes=(1, 32), pruner="none")
    endless = TrainConfig(epochs=10, device="cpu", lr_schedule="constant")
    run_sweep(config, endless, DataConfig(), synthetic_splits, log=quiet)
    enqueue(stores, "test-study", [{"batch_size": 1, "lr": lr} for lr in (0.05, 0.1, 0.2)])
    database = Path(stores["storage"].removeprefix("sqlite:///"))
    watcher = threading.Thread(
        target=interrupt_once_trial_has_trained, args=(database, 1), daemon=True
    )
    previous = signal.getsignal(signal.SIGINT)
    install_signal_handlers()
    watcher.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_sweep(replace(config, n_trials=3, population=3), endless, DataConfig(),
                      synthetic_splits, log=quiet)  # fmt: skip
    finally:
        watcher.join(timeout=5)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, previous if signum == signal.SIGINT else signal.SIG_DFL)

    study = optuna.load_study(study_name="test-study", storage=stores["storage"])
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] + [TrialState.FAIL] * 3
    for trial in study.trials[1:]:
        assert trial.user_attrs["fail_reason"] == "interrupted by Ctrl-C (SIGINT)"
        assert trial.user_attrs["epochs"]["step"][:1] == [1]  # the epoch every member stored
    client = MlflowClient(stores["tracking_uri"])
    runs = child_runs(client, "test-study")
    assert {n: r.info.status for n, r in runs.items()} == {
        0: "FINISHED",
        1: "FAILED",
        2: "FAILED",
        3: "FAILED",
    }
    assert runs_by_role(client, "test-study")["study"][0].info.status == "KILLED"


def test_searched_schedules_are_a_trial_param_and_a_resume_cannot_change_them(
    stores, synthetic_splits, tmp_path, capsys
):
    config = sweep_config(
        stores,
        n_trials=4,
        population=4,
        lr_schedules=("constant", "cosine"),
        pruner="none",
        lr_range=STABLE_LRS,
    )
    run_sweep(config, THREE_EPOCHS, DataConfig(), synthetic_splits, log=quiet)
    study = optuna.load_study(study_name="test-study", storage=stores["storage"])
    for trial in study.trials:
        schedule = trial.params["lr_schedule"]
        assert schedule in ("constant", "cosine")
        assert trial.user_attrs["settings"]["lr_schedule"] == schedule
        alone = train(
            replace(THREE_EPOCHS, batch_size=trial.params["batch_size"], lr=trial.params["lr"],
                    lr_schedule=schedule),
            synthetic_splits,
        )  # fmt: skip
        assert trial.value == pytest.approx(alone.best_val_accuracy)
    runs = child_runs(MlflowClient(stores["tracking_uri"]), "test-study")
    assert {r.data.params["lr_schedule"] for r in runs.values()} <= {"constant", "cosine"}

    argv = ["--study-name", "test-study", "--lr-schedules", "linear", "--batch-sizes", "32",
            "128", "--storage",
            stores["storage"], "--tracking-uri", stores["tracking_uri"],
            "--data-root", str(tmp_path / "data")]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert "chooses lr schedules constant cosine" in message
    assert "--lr-schedules constant cosine" in message


BAD_FLAGS = [
    (["--population", "0"], "--population 0 is invalid"),
    (["--population", "2", "--objective", "accuracy_vs_time", "--pruner", "none"], "shared pass"),
    (["--population", "2", "--model", "tutorial_double_softmax"], "logits model only"),
    # The default population names the flag to add.
    (["--model", "tutorial_double_softmax"], "--population 8 is invalid"),
    (["--objective", "accuracy_vs_time", "--pruner", "none"], "add --population 1"),
    (["--lr-schedules", "step"], "invalid choice"),
    (["--lr-schedules", "cosine", "cosine"], "distinct choices"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_population_flags_exit_2_and_create_nothing(
    argv, message, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert_sweep_refuses(argv, message, tmp_path, capsys)


def test_run_sweep_refuses_a_population_of_the_tutorial_model(stores, synthetic_splits):
    config = sweep_config(stores, population=2)
    tutorial = replace(THREE_EPOCHS, model="tutorial_double_softmax")
    with pytest.raises(ConfigError, match="logits model only"):
        run_sweep(config, tutorial, DataConfig(), synthetic_splits, log=quiet)
    assert not Path(stores["storage"].removeprefix("sqlite:///")).exists()


class SignallingRecorder:
    """Stands in for a member's `EpochRecorder`: notes each call; the first one sends this
    process SIGINT, as Ctrl-C pressed while that member stores its epoch would."""

    def __init__(self, name: str, calls: list, send_signal: bool) -> None:
        self.name, self.calls, self.send_signal = name, calls, send_signal

    def on_epoch(self, _seed_index: int, metrics) -> bool:
        self.calls.append((self.name, metrics.epoch))
        if self.send_signal:
            self.send_signal = False
            os.kill(os.getpid(), signal.SIGINT)
        return False


def test_a_signal_while_members_store_an_epoch_waits_for_all_of_them(synthetic_splits):
    calls: list[tuple[str, int]] = []
    recorders = [SignallingRecorder(name, calls, name == "a") for name in ("a", "b", "c")]
    configs = [replace(THREE_EPOCHS, lr=lr) for lr in (0.05, 0.1, 0.2)]
    callbacks = [functools.partial(on_member_epoch, r, 0) for r in recorders]
    previous = signal.getsignal(signal.SIGINT)
    install_signal_handlers()
    try:
        with pytest.raises(KeyboardInterrupt), GATE.interruptible():
            train_population(configs, synthetic_splits, callbacks, on_epoch_end=on_epoch_end)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, previous if signum == signal.SIGINT else signal.SIG_DFL)
    # Every member stored epoch 1, then the signal stopped the pass, before epoch 2.
    assert calls == [("a", 1), ("b", 1), ("c", 1)]


def test_a_grid_in_population_mode_runs_every_point_once(stores, synthetic_splits):
    """The grid sampler asks the study to stop at its last point, which Optuna allows only
    inside study.optimize: in population mode the sweep must still end cleanly."""
    config = sweep_config(stores, n_trials=6, population=4, sampler="grid", grid_lr_points=2)
    run_sweep(config, replace(THREE_EPOCHS, epochs=1), DataConfig(), synthetic_splits, log=quiet)
    study = optuna.load_study(study_name="test-study", storage=stores["storage"])
    points = sorted((t.params["batch_size"], t.params["lr"]) for t in study.trials)
    lrs = config.grid_learning_rates()
    assert points == sorted((b, lr) for b in (32, 128) for lr in lrs)  # 4 of 6 asked: the grid
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
