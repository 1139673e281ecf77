"""Optuna's storage goes away mid-sweep: PostgreSQL behind a TCP proxy (`socat`) that the test
stops (every connection through it dies, as in a database restart or a network cut) and starts
again on the same port.

Real processes (`python -m experiments.sweep`), the local PostgreSQL (a database of the test's
own), real MNIST on 1,000 training examples at batch size 1 (a trial lasts about a second, so
the outage lands mid-trial). Every wait is on an event: a trial's epoch read from the database
directly (not through the proxy), a line the sweep printed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from mlflow import MlflowClient
from optuna.trial import TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from experiments.config import SweepConfig
from experiments.reconcile import main as reconcile_main
from experiments.stores import normalise_sql_url
from experiments.study import open_storage
from softmaxreg.data import DATA_ENV_VAR
from tests.services import free_port, postgres_database, wait_for
from tests.test_workers import PROCESS_TIMEOUT, REPO_ROOT, runs_of, sweep_args

pytestmark = [pytest.mark.real_data, pytest.mark.slow, pytest.mark.timeout(900)]

TRIALS = ("--epochs", "4", "--batch-sizes", "1", "--lr-range", "0.001", "0.01")
"""About a second a trial: 4 epochs of 1,000 steps. Given again on every run of a study."""
UNREACHABLE = "is unreachable"


class Proxy:
    """`socat` forwarding a free port on 127.0.0.1 to PostgreSQL, in its own process group:
    stopping it kills the forked child of every open connection too, so each one dies."""

    def __init__(self, target_port: int = 5432) -> None:
        self.port = free_port()
        self.target_port = target_port
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["socat", f"TCP-LISTEN:{self.port},bind=127.0.0.1,reuseaddr,fork",
             f"TCP:127.0.0.1:{self.target_port}"],
            start_new_session=True,
        )  # fmt: skip
        wait_for(self._listening, "the proxy to listen", timeout=30)

    def _listening(self) -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


@pytest.fixture
def proxied_database():
    """(direct URL, URL through the proxy, the proxy) of a new PostgreSQL database."""
    if shutil.which("socat") is None:
        pytest.skip("socat is not installed (apt-get install socat)")
    with postgres_database("outage") as url:
        proxy = Proxy(make_url(url).port or 5432)
        proxy.start()
        try:
            yield url, url.replace(f":{make_url(url).port}/", f":{proxy.port}/"), proxy
        finally:
            proxy.stop()


class Sweep:
    """`python -m experiments.sweep` with its stderr read line by line as it comes."""

    def __init__(self, cwd: Path, argv: list[str]) -> None:
        env = {k: v for k, v in os.environ.items() if k != DATA_ENV_VAR}  # as test_workers
        env["PYTHONPATH"] = str(REPO_ROOT)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "experiments.sweep", *argv],
            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def finish(self) -> tuple[int, list[str]]:
        code = self.process.wait(timeout=PROCESS_TIMEOUT)
        self._reader.join(timeout=30)
        return code, self.lines


def scalar(url: str, query: str, **params):
    """One value read directly from PostgreSQL (not through the proxy); None before the
    tables exist."""
    engine = sqlalchemy.create_engine(make_url(url).set(drivername="postgresql+psycopg"),
                                      poolclass=NullPool)  # fmt: skip
    try:
        with engine.connect() as connection:
            return connection.execute(sqlalchemy.text(query), params).scalar()
    except sqlalchemy.exc.ProgrammingError:  # the tables do not exist yet
        return None
    finally:
        engine.dispose()


def epochs_stored(url: str, trial_number: int) -> bool:
    """Whether the trial has stored an epoch."""
    return bool(scalar(url, "SELECT count(*) FROM trial_user_attributes a JOIN trials t "
                       "USING (trial_id) WHERE t.number = :n AND a.key = 'epochs'",
                       n=trial_number))  # fmt: skip


def start_sweep(tmp_path: Path, real_mnist_root: Path, storage: str, *extra: str) -> Sweep:
    argv = sweep_args(real_mnist_root, *TRIALS, "--storage", storage,
                      "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", *extra)  # fmt: skip
    return Sweep(tmp_path, argv)


def cut_mid_trial(sweep: Sweep, direct_url: str, proxy: Proxy) -> None:
    """Stop the proxy while trial 1 trains (it stored an epoch), then wait until the sweep
    has noticed (its "unreachable" line)."""
    wait_for(lambda: epochs_stored(direct_url, 1) or sweep.process.poll() is not None,
             "trial 1's first stored epoch")  # fmt: skip
    assert sweep.process.poll() is None, sweep.lines
    proxy.stop()
    wait_for(lambda: sweep.said(UNREACHABLE) or sweep.process.poll() is not None,
             "the sweep to notice the outage")  # fmt: skip


@pytest.mark.parametrize("population", ["1", "2"])
def test_an_outage_shorter_than_the_wait_is_survived_and_every_trial_mirrored(
    real_mnist_root, tmp_path, proxied_database, population
):
    """One trial at a time (`study.optimize`) and populations of 2: the outage cuts trial 1
    mid-epoch; once the storage answers, the trials held are failed with the reason, the rest
    of the 6 trials run, and exit 0."""
    direct, through_proxy, proxy = proxied_database
    sweep = start_sweep(tmp_path, real_mnist_root, through_proxy, "--n-trials", "6",
                        "--population", population, "--storage-wait-seconds", "120")  # fmt: skip
    cut_mid_trial(sweep, direct, proxy)
    proxy.start()  # the database is back, on the same address
    code, lines = sweep.finish()

    assert code == 0, "\n".join(lines)
    assert not any("Traceback" in line for line in lines), "\n".join(lines)
    (waiting,) = [line for line in lines if UNREACHABLE in line]
    assert waiting.startswith(f"Optuna's storage {through_proxy.split('://')[0]}")
    assert waiting.endswith("waiting up to 120 s")
    assert sum("Optuna's storage reachable again after" in line for line in lines) == 1
    study = optuna.load_study(study_name="workers", storage=direct)
    assert len(study.trials) == 6, "\n".join(lines)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert [t.state for t in study.trials if t not in failed] == [TrialState.COMPLETE] * (
        6 - len(failed)
    )
    assert 1 in [t.number for t in failed]  # the trial training when the proxy stopped
    for trial in failed:
        assert trial.user_attrs["fail_reason"].startswith("Optuna's storage was unreachable")
        said = f"trial {trial.number} failed: Optuna's storage was unreachable"
        assert any(line.startswith(said) for line in lines), lines
    for trial in study.trials:  # finished trials intact: every epoch of theirs is stored
        if trial.state == TrialState.COMPLETE:
            assert trial.user_attrs["epochs"]["step"] == [1, 2, 3, 4]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    parents, children = runs_of(client, "workers")
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert sorted(children) == list(range(6))
    status = {TrialState.COMPLETE: "FINISHED", TrialState.FAIL: "FAILED"}
    for trial in study.trials:
        (run,) = children[trial.number]
        assert run.info.status == status[trial.state]
        assert run.data.tags.get("optuna.fail_reason", "") == trial.user_attrs.get(
            "fail_reason", ""
        )


def test_two_workers_wait_out_an_outage_and_the_study_ends_whole(
    real_mnist_root, tmp_path, proxied_database
):
    """`--workers 2` (forked workers, one shared storage) and the database gone mid-trial: each
    worker that hit the outage says so once and once that it is back, both go on, exit 0, and
    the study ends whole: 6 trials, none RUNNING, each mirrored to one run of its state."""
    direct, through_proxy, proxy = proxied_database
    sweep = start_sweep(tmp_path, real_mnist_root, through_proxy, "--n-trials", "6",
                        "--workers", "2", "--storage-wait-seconds", "120")  # fmt: skip
    cut_mid_trial(sweep, direct, proxy)
    proxy.start()
    code, lines = sweep.finish()

    assert code == 0, "\n".join(lines)
    assert not any("Traceback" in line for line in lines), "\n".join(lines)
    waits = sum(UNREACHABLE in line for line in lines)
    assert 1 <= waits <= 2, "\n".join(lines)  # one line per worker that met the outage
    said_back = sum("Optuna's storage reachable again after" in line for line in lines)
    assert said_back == waits, "\n".join(lines)
    study = optuna.load_study(study_name="workers", storage=direct)
    assert len(study.trials) == 6, "\n".join(lines)
    assert {t.state for t in study.trials} <= {TrialState.COMPLETE, TrialState.FAIL}
    # The workers claim the 6 as they go: one stalled by the outage may have left the rest.
    assert {t.user_attrs["worker"] for t in study.trials} <= {0, 1}
    parents, children = runs_of(MlflowClient(f"sqlite:///{tmp_path}/mlflow.db"), "workers")
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert sorted(children) == list(range(6))
    status = {TrialState.COMPLETE: "FINISHED", TrialState.FAIL: "FAILED"}
    assert all(children[t.number][0].info.status == status[t.state] for t in study.trials)
    assert all(len(children[t.number]) == 1 for t in study.trials)


def test_a_lasting_outage_exits_1_in_one_line_and_a_reconcile_closes_everything(
    real_mnist_root, tmp_path, proxied_database, capsys
):
    """One trial at a time (`study.optimize`): a 3 s wait runs out, exit 1 with one line; the
    trial it held and the runs stay open until the storage is back and a reconcile, after the
    heartbeat's grace period, fails the trial and closes every run."""
    direct, through_proxy, proxy = proxied_database
    sweep = start_sweep(tmp_path, real_mnist_root, through_proxy, "--n-trials", "5",
                        "--population", "1", "--storage-wait-seconds", "3",
                        "--heartbeat-seconds", "1")  # fmt: skip
    cut_mid_trial(sweep, direct, proxy)
    code, lines = sweep.finish()

    assert code == 1, "\n".join(lines)
    shown = through_proxy.split("://")[0]
    assert lines[0] == "new study workers"
    waiting, error = lines[1:]  # nothing else: no traceback, no log record
    assert waiting.startswith(f"Optuna's storage {shown}") and "waiting up to 3 s" in waiting
    assert error.startswith(f"error: Optuna's storage {shown}")
    assert "unreachable for 3 s" in error and "run the same command once it answers" in error

    proxy.start()
    time.sleep(3 + 1)  # the heartbeat's grace period (3 heartbeats of 1 s) is the contract here
    flags = ["--study-name", "workers", "--storage", through_proxy, "--tracking-uri",
             f"sqlite:///{tmp_path}/mlflow.db", "--heartbeat-seconds", "1"]  # fmt: skip
    assert reconcile_main(flags) == 0
    assert "runs repaired" in capsys.readouterr().out
    study = optuna.load_study(study_name="workers", storage=direct)
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states and states[0] == TrialState.COMPLETE
    assert states[1] == TrialState.FAIL  # the held trial, failed by the heartbeat check
    parents, children = runs_of(MlflowClient(f"sqlite:///{tmp_path}/mlflow.db"), "workers")
    assert [p.info.status for p in parents] == ["KILLED"]
    assert {r.info.status for runs in children.values() for r in runs} <= {"FINISHED", "FAILED"}
    assert children[1][0].info.status == "FAILED"
    assert reconcile_main(flags) == 0
    assert capsys.readouterr().out.strip().endswith(", 0 runs repaired")


def test_a_heartbeat_in_an_outage_is_a_missed_beat_and_a_restarted_database_is_picked_up(
    proxied_database,
):
    """The sweep's storage itself: a restart between two calls (every pooled connection dead)
    costs the next write nothing, since connections are pinged before use; a heartbeat in the
    outage is skipped without an error (the thread that beats goes on), and the next one
    after it is written."""
    direct, through_proxy, proxy = proxied_database
    sweep = SweepConfig(heartbeat_seconds=1, storage=through_proxy)
    storage = open_storage(normalise_sql_url(through_proxy), sweep)
    study = optuna.create_study(storage=storage, study_name="beats")
    first, second = study.ask(), study.ask()
    proxy.stop()
    proxy.start()  # the pool's connections all died with the proxy's
    study.tell(first, 0.5)  # first try, no error: the dead connection was replaced
    assert optuna.load_study(study_name="beats", storage=direct).trials[0].value == 0.5

    beat = "SELECT heartbeat FROM trial_heartbeats WHERE trial_id = :id"
    storage.record_heartbeat(second._trial_id)
    before = scalar(direct, beat, id=second._trial_id)
    proxy.stop()
    storage.record_heartbeat(second._trial_id)  # refused connection: a missed beat, no error
    proxy.start()
    storage.record_heartbeat(second._trial_id)
    assert scalar(direct, beat, id=second._trial_id) > before
