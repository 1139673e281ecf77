"""A population's bookkeeping off the hot path: batched Optuna writes, MLflow behind a queue.

Real SQLite stores throughout. The batched path (`experiments.trial_records`, one transaction
per pass-epoch for all members) must store exactly what the public one-attribute-per-call path
stores; a worker killed with -9 mid-pass must leave no COMPLETE trial without its whole record
(each member is told only after its record's transaction); the MLflow queue must leave every
run matching its trial once drained, and a reconcile must repair what a kill left in it.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from benchmarks.bookkeeping_probe import open_loop as probe_loop
from experiments import trial_records
from experiments.config import SweepConfig
from experiments.mirror import Mirror
from experiments.objective import EPOCH_FIGURES, SUMMARY_FIGURES
from experiments.reconcile import reconcile_study
from experiments.store_urls import Stores
from experiments.study import open_storage
from experiments.trial_loop import run_trials
from experiments.weights import WEIGHTS_ATTR
from experiments.worker import run_sweep
from softmaxreg.config import DataConfig, TrainConfig
from tests.services import sqlite_rows, wait_for
from tests.test_sweep import child_runs, sweep_config
from tests.test_workers import PROCESS_TIMEOUT, start, sweep_args

TWO_EPOCHS = TrainConfig(epochs=2, device="cpu")
TIMED = {"epoch_seconds", "eval_seconds", "samples_per_second", "train_seconds_total", "time_ms"}
"""Per-epoch columns that are clock readings: they differ between any two runs."""
TIMED_SUMMARY = {
    "time_to_target_seconds",
    "total_train_seconds",
    "steady_epoch_seconds",
    "steady_samples_per_second",
    "warmup_epoch_seconds",
}


def quiet(_message: str) -> None:
    pass


def untimed_record(trial: optuna.trial.FrozenTrial) -> dict[str, object]:
    """Everything a trial stored except the clock readings."""
    attrs = dict(trial.user_attrs)
    attrs["epochs"] = {k: v for k, v in attrs["epochs"].items() if k not in TIMED}
    for name in TIMED_SUMMARY:
        attrs.pop(name)
    attrs["per_seed"] = [
        {k: v for k, v in seed.items() if k not in TIMED_SUMMARY} for seed in attrs["per_seed"]
    ]
    return {"state": trial.state, "params": trial.params, "values": trial.values, **attrs}


def test_the_batched_writes_store_exactly_what_one_write_per_figure_stores(
    stores, synthetic_splits, monkeypatch
):
    """The same population study (TPE, same seed, two seeds per trial, two epochs) written
    in one transaction per pass-epoch and one attribute per call: every trial's record is the
    same, figure by figure, the clock readings aside."""
    config = sweep_config(stores, n_trials=6, population=3, repeats=2, pruner="none", refit=False)
    run_sweep(config, TWO_EPOCHS, DataConfig(), synthetic_splits, log=quiet)
    batched = optuna.load_study(study_name="test-study", storage=stores["storage"])
    assert trial_records._rdb_backend(batched) is not None  # the one-transaction path ran

    monkeypatch.setattr(trial_records, "BATCHED", False)
    one_by_one = replace(config, study_name="one-by-one")
    run_sweep(one_by_one, TWO_EPOCHS, DataConfig(), synthetic_splits, log=quiet)
    public = optuna.load_study(study_name="one-by-one", storage=stores["storage"])

    assert len(batched.trials) == len(public.trials) == 6
    for fast, slow in zip(batched.trials, public.trials, strict=True):
        assert fast.state == TrialState.COMPLETE
        assert set(fast.user_attrs) == set(slow.user_attrs)
        assert untimed_record(fast) == untimed_record(slow)
        assert fast.user_attrs["epochs"]["step"] == [1, 2]
        assert set(fast.user_attrs["epochs"]) >= {"step", "time_ms", *EPOCH_FIGURES}
        assert fast.user_attrs[WEIGHTS_ATTR] == slow.user_attrs[WEIGHTS_ATTR]
        assert not fast.intermediate_values  # no pruner: no report per epoch


def test_a_batch_with_a_finished_trial_is_refused_whole(tmp_path):
    """A member failed meanwhile by another worker (stale heartbeat) refuses the batch as
    `set_user_attr` would, and none of the batch is stored: a batch is whole or absent."""
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.create_study(study_name="batch", storage=storage)
    running, finished = study.ask(), study.ask()
    study.tell(finished, state=TrialState.FAIL)
    batch = [(running, {"epochs": {"step": [1]}}), (finished, {"epochs": {"step": [1]}})]
    with pytest.raises(UpdateFinishedTrialError):
        trial_records.write_user_attrs(study, batch)
    assert study.trials[0].user_attrs == {}
    trial_records.write_user_attrs(study, batch[:1])
    assert study.trials[0].user_attrs == {"epochs": {"step": [1]}}


def open_loop(config: SweepConfig, synthetic_splits):
    """The sweep's trial loop without its start and end reconcile (which would repair what
    the queue left undone, hiding it): (study, tracker, objective)."""
    study, objective, tracker = probe_loop(config, TWO_EPOCHS, synthetic_splits, quiet)
    return study, tracker, objective


def test_once_the_queue_drains_every_run_matches_its_trial(stores, synthetic_splits):
    config = sweep_config(stores, n_trials=8, population=4, pruner="none")
    study, tracker, objective = open_loop(config, synthetic_splits)
    run_trials(study, objective, tracker, 8, timeout=None)
    assert tracker.synced == {t._trial_id for t in study.trials}

    fresh = Mirror.open(Stores.from_config(config), study, wait_seconds=5, log=quiet)
    fresh.ensure_parent_run(study, {}, reopen=False)
    report = fresh.reconcile(study)
    assert (report.trials, report.mismatches) == (8, 0)  # nothing left for reconcile to do
    runs = child_runs(MlflowClient(stores["tracking_uri"]), "test-study")
    assert sorted(runs) == list(range(8))
    for trial in study.trials:
        run = runs[trial.number]
        assert run.info.status == "FINISHED"
        assert run.data.metrics["summary/best_val_accuracy"] == trial.value
        assert run.data.params["population"] == "4"


def complete_count(database: Path) -> int:
    rows = sqlite_rows(database, "SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'")
    return rows[0][0] if rows else 0


def assert_whole_record(trial: optuna.trial.FrozenTrial, epochs: int) -> None:
    attrs = trial.user_attrs
    assert {"settings", "environment", "worker", WEIGHTS_ATTR} <= set(attrs), trial.number
    assert set(SUMMARY_FIGURES) <= set(attrs), trial.number
    assert attrs["epochs"]["step"] == list(range(1, epochs + 1)), trial.number
    assert all(len(attrs["epochs"][name]) == epochs for name in EPOCH_FIGURES)
    assert attrs["best_val_accuracy"] == trial.value


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kill_9_while_a_pass_is_told_leaves_no_complete_trial_without_its_record(
    real_mnist_root, tmp_path
):
    """A worker training passes of 16 is killed with -9 the moment some of a pass's members
    are COMPLETE and others not yet: every COMPLETE trial holds its whole record; reconcile
    then fails the rest and gives every finished trial one run that matches it."""
    process = start(tmp_path, sweep_args(real_mnist_root, "--n-trials", "10000",
                    "--population", "16", "--heartbeat-seconds", "1"))  # fmt: skip
    database = tmp_path / "optuna.db"
    wait_for(lambda: complete_count(database) % 16 != 0 or process.poll() is not None,
             "a pass half told", timeout=PROCESS_TIMEOUT, every=0.002)  # fmt: skip
    process.kill()
    process.communicate(timeout=PROCESS_TIMEOUT)
    assert process.returncode == -9

    stores = {"storage": f"sqlite:///{database}",
              "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}  # fmt: skip
    study = optuna.load_study(study_name="workers", storage=stores["storage"])
    states = [t.state for t in study.trials]
    assert TrialState.COMPLETE in states and TrialState.RUNNING in states
    for trial in study.trials:
        if trial.state == TrialState.COMPLETE:
            assert_whole_record(trial, epochs=2)

    sweep = SweepConfig(study_name="workers", heartbeat_seconds=1, **stores)
    time.sleep(sweep.grace_seconds + 1)  # the heartbeat's grace period is the contract here
    reconcile_study(sweep, log=print)
    assert reconcile_study(sweep, log=print)[2] == 0  # the first one repaired everything
    study = optuna.load_study(study_name="workers", storage=stores["storage"])
    finished = [t for t in study.trials if t.state != TrialState.WAITING]  # WAITING: retries
    assert {t.state for t in finished} == {TrialState.COMPLETE, TrialState.FAIL}
    runs = child_runs(MlflowClient(stores["tracking_uri"]), "workers")
    assert sorted(runs) == [t.number for t in finished]
    status = {TrialState.COMPLETE: "FINISHED", TrialState.FAIL: "FAILED"}
    for trial in finished:
        run = runs[trial.number]
        assert run.info.status == status[trial.state]
        assert run.data.params["population"] == "16"
        if trial.state == TrialState.COMPLETE:
            assert run.data.metrics["summary/best_val_accuracy"] == trial.value
