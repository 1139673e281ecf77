"""A worker's faults: kill -9 mid-trial and mid-population, SIGTERM and SIGHUP, a tracking
outage, and a mirror run twice. Real processes (`python -m experiments.sweep`), real stores, real
MNIST, as in test_workers.py (whose helpers these tests share; a module of their own so that
pytest-xdist runs them beside the many-workers tests).

Every wait is on an event read from the stores, never on a guess of how fast the machine is.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from experiments.config import SweepConfig
from experiments.mirror import Mirror
from experiments.objective import WORKER_LOST_REASON
from experiments.reconcile import reconcile_study
from tests.services import MlflowServer, copy_mlflow_db, recorded_epochs, trial_states, wait_for
from tests.test_workers import (
    LONG_TRIAL,
    PROCESS_TIMEOUT,
    assert_study_mirrored,
    finish,
    runs_of,
    start,
    sweep_args,
)

pytestmark = [pytest.mark.real_data, pytest.mark.slow, pytest.mark.timeout(900)]


def endless_worker(folder: Path, data_root: Path, *extra: str) -> subprocess.Popen:
    """A worker whose trial only ends when it is stopped, once it has stored an epoch."""
    process = start(folder, sweep_args(data_root, *LONG_TRIAL, "--n-trials", "1",
                                       "--heartbeat-seconds", "1", *extra))  # fmt: skip
    database = folder / "optuna.db"
    wait_for(lambda: recorded_epochs(database, 0) >= 1 or process.poll() is not None,
             "the trial's first stored epoch")  # fmt: skip
    assert process.poll() is None, process.communicate()[1]
    return process


def test_kill_9_mid_trial_is_failed_retried_and_reconciled(real_mnist_root, tmp_path):
    process = endless_worker(tmp_path, real_mnist_root, "--retries", "1")
    process.kill()  # SIGKILL: nothing runs in the worker after this
    process.communicate(timeout=PROCESS_TIMEOUT)
    stores = {"storage": f"sqlite:///{tmp_path}/optuna.db",
              "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}  # fmt: skip
    sweep = SweepConfig(study_name="workers", heartbeat_seconds=1, **stores)
    time.sleep(sweep.grace_seconds + 1)  # the heartbeat's grace period is the contract here
    _, trials, repaired = reconcile_study(sweep, log=print)
    study = optuna.load_study(study_name="workers", storage=stores["storage"])
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING]
    retried = study.trials[1]
    assert retried.params == study.trials[0].params  # queued again with the same configuration
    assert trials == 2 and repaired >= 2  # the dead trial's run, and the parent left RUNNING
    client = MlflowClient(stores["tracking_uri"])
    parents, children = runs_of(client, "workers")
    (dead,) = children[0]
    assert dead.info.status == "FAILED"
    assert dead.data.tags["optuna.fail_reason"] == WORKER_LOST_REASON
    assert client.get_metric_history(dead.info.run_id, "val_accuracy")  # the epochs it stored
    assert parents[0].info.status == "KILLED"
    assert reconcile_study(sweep, log=print)[2] == 0  # nothing left to repair

    # The next command runs the queued retry first.
    resume = sweep_args(real_mnist_root, *LONG_TRIAL, "--n-trials", "1")
    code, _, err = finish(start(tmp_path, resume))
    assert code == 0, err
    study = optuna.load_study(study_name="workers", storage=stores["storage"])
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert study.trials[1].params == study.trials[0].params
    parents, children = runs_of(client, "workers")
    assert children[1][0].info.status == "FINISHED" and parents[0].info.status == "FINISHED"


def test_kill_9_mid_population_fails_and_retries_every_member(real_mnist_root, tmp_path):
    """A worker training 3 trials as one population is killed: each member is failed by the
    heartbeat and queued again, and the next command trains the retries as a population."""
    process = start(tmp_path, sweep_args(real_mnist_root, *LONG_TRIAL, "--n-trials", "3",
                    "--population", "3", "--heartbeat-seconds", "1", "--retries", "1"))  # fmt: skip
    database = tmp_path / "optuna.db"
    wait_for(lambda: all(recorded_epochs(database, n) >= 1 for n in range(3))
             or process.poll() is not None, "every member's first stored epoch")  # fmt: skip
    assert process.poll() is None, process.communicate()[1]
    process.kill()
    process.communicate(timeout=PROCESS_TIMEOUT)
    stores = {"storage": f"sqlite:///{database}",
              "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}  # fmt: skip
    sweep = SweepConfig(study_name="workers", heartbeat_seconds=1, **stores)
    time.sleep(sweep.grace_seconds + 1)  # the heartbeat's grace period is the contract here
    reconcile_study(sweep, log=print)
    study = optuna.load_study(study_name="workers", storage=stores["storage"])
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 3 + [TrialState.WAITING] * 3
    dead, retries = study.trials[:3], study.trials[3:]
    assert [t.params for t in retries] == [t.params for t in dead]
    client = MlflowClient(stores["tracking_uri"])
    _, children = runs_of(client, "workers")
    for trial in dead:
        (run,) = children[trial.number]
        assert run.info.status == "FAILED"
        assert run.data.tags["optuna.fail_reason"] == WORKER_LOST_REASON
        assert run.data.params["population"] == "3"

    code, _, err = finish(start(tmp_path, sweep_args(real_mnist_root, *LONG_TRIAL, "--n-trials",
                                "3", "--population", "3")))  # fmt: skip
    assert code == 0, err
    study = optuna.load_study(study_name="workers", storage=stores["storage"])
    retried = study.trials[3:]
    assert [t.state for t in retried] == [TrialState.COMPLETE] * 3
    assert [t.params for t in retried] == [t.params for t in dead]
    assert all(t.user_attrs["settings"]["population"] == 3 for t in retried)
    assert_study_mirrored(study, client, trials=6)


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_stop_like_ctrl_c(real_mnist_root, tmp_path, signum, status):
    process = endless_worker(tmp_path, real_mnist_root)
    process.send_signal(signum)
    code, _, err = finish(process)
    name = signal.Signals(signum).name
    assert code == status, err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if name in line] == [
        f"stopped by {name}: the running trial is stored as FAIL; run the same command again "
        "to resume"
    ]
    study = optuna.load_study(study_name="workers", storage=f"sqlite:///{tmp_path}/optuna.db")
    (trial,) = study.trials
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["fail_reason"] == f"interrupted by {name}"
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    parents, children = runs_of(client, "workers")
    assert children[0][0].info.status == "FAILED"
    assert children[0][0].data.tags["optuna.fail_reason"] == f"interrupted by {name}"
    assert parents[0].info.status == "KILLED"
    # Resumable: the same command goes on with the next trial.
    code, _, err = finish(start(tmp_path, sweep_args(real_mnist_root, *LONG_TRIAL, "--n-trials",
                                "1")))  # fmt: skip
    assert code == 0, err
    assert trial_states(tmp_path / "optuna.db") == ["FAIL", "COMPLETE"]


def test_tracking_outage_stops_cleanly_and_reconcile_rebuilds(
    real_mnist_root, tmp_path, tmp_path_factory
):
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    copy_mlflow_db(tmp_path_factory, server_dir / "mlflow.db")
    server = MlflowServer(f"sqlite:///{server_dir / 'mlflow.db'}", server_dir)
    server.start()
    try:
        wait_seconds = 4
        process = start(tmp_path, sweep_args(real_mnist_root, "--n-trials", "500",
                        "--tracking-uri", server.url,
                        "--tracking-wait-seconds", str(wait_seconds)))  # fmt: skip
        database = tmp_path / "optuna.db"
        wait_for(lambda: trial_states(database).count("COMPLETE") >= 2, "two complete trials")
        server.stop()
        stopped = time.monotonic()
        code, _, err = finish(process)
        waited = time.monotonic() - stopped
        assert code == 1, err
        assert "Traceback" not in err
        assert f"retrying for up to {wait_seconds} s" in err
        assert f"unreachable for {wait_seconds} s" in err.splitlines()[-1]
        # Within the stated wait plus one trial (well under a second here) and slack for
        # process start-up on a busy machine: not the minutes MLflow's own retries would take.
        assert waited < wait_seconds + 30
        study = optuna.load_study(study_name="workers", storage=f"sqlite:///{database}")
        complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
        assert len(complete) >= 2
        for trial in complete:  # everything measured is in Optuna, whatever MLflow holds
            assert trial.user_attrs["epochs"]["step"] == [1, 2]
            assert trial.user_attrs["best_val_accuracy"] == trial.value

        server.start()  # back, same port, same database
        sweep = SweepConfig(study_name="workers", storage=f"sqlite:///{database}",
                            tracking_uri=server.url)  # fmt: skip
        repaired = reconcile_study(sweep, log=print)[2]
        assert repaired >= 1
        client = MlflowClient(server.url)
        _, children = runs_of(client, "workers")
        for trial in complete:
            (run,) = children[trial.number]
            assert run.info.status == "FINISHED"
            history = client.get_metric_history(run.info.run_id, "val_accuracy")
            assert sorted(m.step for m in history) == [1, 2]
            assert run.data.metrics["summary/best_val_accuracy"] == trial.value
        assert reconcile_study(sweep, log=print)[2] == 0
    finally:
        server.stop()


def test_mirror_is_idempotent(real_mnist_root, tmp_path):
    """Syncing a finished trial again changes nothing: no second run, no doubled history."""
    code, _, err = finish(start(tmp_path, sweep_args(real_mnist_root, "--n-trials", "1")))
    assert code == 0, err
    sweep = SweepConfig(study_name="workers", storage=f"sqlite:///{tmp_path}/optuna.db",
                        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")  # fmt: skip
    mirror, _, _ = reconcile_study(sweep, log=print)
    assert isinstance(mirror, Mirror)
    study = optuna.load_study(study_name="workers", storage=sweep.storage)
    for _ in range(2):
        mirror.sync(study.trials[0])
    client = MlflowClient(sweep.tracking_uri)
    _, children = runs_of(client, "workers")
    (run,) = children[0]
    assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == 2
