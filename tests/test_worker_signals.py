"""Signals to the `--workers` command: each one reaches every worker, is never lost, and no
trial starts after it; a command killed with -9 takes its workers with it.

Real processes (`python -m experiments.sweep --workers 2`, forked workers), real SQLite stores,
real MNIST (1,000 training examples, so trials start every fraction of a second: the window
in which a lost signal used to let a new trial start). Every wait is on an event read from the
stores.
"""

from __future__ import annotations

import datetime
import json
import signal
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.services import sqlite_rows, wait_for
from tests.test_workers import PROCESS_TIMEOUT, finish, runs_of, start, sweep_args

pytestmark = [pytest.mark.real_data, pytest.mark.slow, pytest.mark.timeout(1200)]


def completed_trials(database: Path) -> int:
    rows = sqlite_rows(database, "SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'")
    return rows[0][0] if rows else 0


def trials(database: Path) -> list[tuple[int, str, datetime.datetime, int]]:
    """(number, state, start, worker) of every trial."""
    rows = sqlite_rows(
        database,
        "SELECT t.number, t.state, t.datetime_start, a.value_json FROM trials t "
        "JOIN trial_user_attributes a ON a.trial_id = t.trial_id AND a.key = 'worker'",
    )
    return [
        (number, state, datetime.datetime.fromisoformat(start), int(worker))
        for number, state, start, worker in rows
    ]


def both_workers_going(database: Path, completed: int) -> bool:
    """`completed` trials are complete and each of the 2 workers has started one: with passes
    of 4, one worker can complete 4 before the other has asked for its first."""
    return completed_trials(database) >= completed and {w for *_, w in trials(database)} == {0, 1}


def assert_stopped_cleanly(err: str) -> None:
    for sign in ("Traceback", "Exception ignored", "BrokenPipeError"):
        assert sign not in err, err


@pytest.mark.parametrize("round_", range(6))
def test_a_signal_to_the_workers_command_stops_every_worker_and_starts_no_trial(
    real_mnist_root, tmp_path, round_
):
    """Six rounds (SIGTERM five times, SIGHUP once; one trial at a time and in populations):
    every worker stops with the signal's status, no trial that started after the signal was
    completed, nothing is left RUNNING, and the parent run is KILLED."""
    signum = signal.SIGHUP if round_ == 5 else signal.SIGTERM
    population = "1" if round_ % 2 == 0 else "4"
    process = start(tmp_path, sweep_args(
        real_mnist_root, "--workers", "2", "--n-trials", "10000", "--population", population,
        "--heartbeat-seconds", "1",
    ))  # fmt: skip
    database = tmp_path / "optuna.db"
    wait_for(
        lambda: both_workers_going(database, 3 + round_) or process.poll() is not None,
        "trials completing, and a trial of each worker",
        timeout=PROCESS_TIMEOUT,
    )
    assert process.poll() is None, process.communicate()[1]
    sent = datetime.datetime.now()
    process.send_signal(signum)
    code, out, err = finish(process)

    status = {signal.SIGTERM: 143, signal.SIGHUP: 129}[signum]
    assert code == status, err
    assert_stopped_cleanly(err)
    assert f"worker 0 (exit {status})" in out and f"worker 1 (exit {status})" in out, out
    every = trials(database)
    assert {worker for *_, worker in every} == {0, 1}
    assert all(state != "RUNNING" for _, state, _, _ in every)
    # A trial may have started while the signal was on its way; none may have gone on to finish.
    late = [(number, state) for number, state, begun, _ in every if begun > sent]
    assert all(state == "FAIL" for _, state in late), late
    parents, _ = runs_of(MlflowClient(f"sqlite:///{tmp_path}/mlflow.db"), "workers")
    assert [p.info.status for p in parents] == ["KILLED"]


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its new parent to reap it counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def worker_pids(database: Path) -> set[int]:
    rows = sqlite_rows(
        database,
        "SELECT value_json FROM study_system_attributes WHERE key LIKE 'softmaxreg.worker.%'",
    )
    return {json.loads(value)["pid"] for (value,) in rows}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_kill_9_of_the_workers_command_stops_its_workers(real_mnist_root, tmp_path):
    """The command dies without a word; the kernel tells each worker (SIGTERM), which stores
    its trial as FAIL and stops: no orphan goes on starting trials, no traceback."""
    process = start(tmp_path, sweep_args(
        real_mnist_root, "--workers", "2", "--n-trials", "10000", "--population", "1",
        "--heartbeat-seconds", "1",
    ))  # fmt: skip
    database = tmp_path / "optuna.db"
    wait_for(
        lambda: (
            (completed_trials(database) >= 4 and len(worker_pids(database)) == 2)
            or process.poll() is not None
        ),
        "both workers running trials",
        timeout=PROCESS_TIMEOUT,
    )
    pids = worker_pids(database)
    assert process.pid not in pids and all(alive(pid) for pid in pids)
    process.kill()
    _, err = process.communicate(timeout=PROCESS_TIMEOUT)  # EOF once the workers are gone too
    wait_for(lambda: not any(alive(pid) for pid in pids), "the workers to stop")
    assert_stopped_cleanly(err)
    assert err.count("stopped by SIGTERM") == 2, err
    assert all(state in ("COMPLETE", "FAIL") for _, state, _, _ in trials(database))
