"""The --n-trials budget a `--workers N` command's workers claim from (`experiments.trial_budget`):
its claims and passes, claims racing from forked processes, a holder killed with the lock, and a
real sweep whose stopped worker leaves the whole budget to the other one.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from experiments.trial_budget import SharedProgress, TrialBudget
from tests.services import sqlite_rows, wait_for
from tests.test_workers import PROCESS_TIMEOUT, finish, start, sweep_args


def claims(budget: TrialBudget, wanted: int, population: int) -> list[int]:
    """Every pass one worker claiming alone gets until the budget is spent."""
    granted = []
    while size := budget.claim(wanted, population):
        granted.append(size)
    return granted


def test_single_trials_are_granted_until_the_budget_is_spent():
    budget = TrialBudget(3, workers=2)
    assert [budget.claim(1) for _ in range(5)] == [1, 1, 1, 0, 0]
    assert budget.remaining == 0
    assert budget.claim(0) == 0


def test_alone_a_worker_takes_whole_passes_and_the_rest_last():
    """One worker: passes of the population and what is left, as without a budget."""
    assert claims(TrialBudget(20), 8, population=8) == [8, 8, 4]


def test_passes_are_even_and_a_multiple_of_the_workers():
    """20 for 2 workers with population 16: 10 and 10, not 16 and 4; 40 at population 8: six
    passes of 7 or 6 (three each), not five of 8 (three for one worker, two for the other)."""
    assert claims(TrialBudget(20, workers=2), 16, population=16) == [10, 10]
    assert claims(TrialBudget(40, workers=2), 8, population=8) == [7, 7, 7, 7, 6, 6]
    assert claims(TrialBudget(19, workers=3), 8, population=8) == [7, 6, 6]
    assert claims(TrialBudget(3, workers=2), 1, population=1) == [1, 1, 1]  # one trial at a time
    assert TrialBudget(20, workers=2).pass_size(16) == 10


def test_a_worker_starting_leaves_the_plan_alone_unless_it_lowers_the_budget():
    budget = TrialBudget(40, workers=2)
    assert budget.claim(8, population=8) == 7  # the first of six passes
    budget.limit(40)  # the second worker starts: no grid, nothing lower
    assert claims(budget, 8, population=8) == [7, 7, 7, 6, 6]
    budget = TrialBudget(40, workers=2)
    budget.claim(8, population=8)
    budget.limit(12)  # a grid with 12 points left: two passes of 6
    assert claims(budget, 8, population=8) == [6, 6]


def test_a_pass_cut_short_leaves_the_rest_planned_again():
    budget = TrialBudget(16, workers=2)  # planned: 8 and 8
    assert budget.claim(2, population=8) == 2  # the queue held 2 of the pass's batch size
    assert budget.claim(8, population=8) == 8
    assert claims(budget, 8, population=8) == [3, 3]  # 6 left: two passes again


def test_a_claim_is_never_more_than_wanted_and_unused_trials_go_back():
    budget = TrialBudget(20)
    assert budget.claim(3, population=8) == 3  # the queue held 3 of the pass's batch size
    budget.release(2)
    assert budget.remaining == 19
    budget.limit(5)  # a grid with 5 points left
    budget.limit(9)  # never raised again
    assert claims(budget, 8, population=8) == [5]


def claim_in_child(budget: TrialBudget, population: int, gate: int, write_end: int) -> None:
    """In a forked child: once the gate opens, claim passes until the budget is spent; write
    how many it got."""
    os.read(gate, 1)  # EOF once every child is forked: they all race from the same moment
    total = sum(claims(budget, population, population))
    os.write(write_end, f"{total}\n".encode())
    os._exit(0)


@pytest.mark.parametrize("population", [1, 3])
def test_claims_from_forked_processes_add_up_to_the_budget(population):
    budget = TrialBudget(30_000, workers=4)
    read_end, write_end = os.pipe()
    gate, opener = os.pipe()
    pids = []
    for _ in range(4):
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            os.close(opener)
            claim_in_child(budget, population, gate, write_end)
        pids.append(pid)
    os.close(write_end)
    os.close(opener)
    with os.fdopen(read_end) as reports:
        totals = [int(line) for line in reports]
    for pid in pids:
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert len(totals) == 4
    assert sum(totals) == 30_000
    assert budget.remaining == 0


@pytest.mark.timeout(60)
def test_a_worker_killed_holding_the_lock_does_not_block_the_others():
    """The kernel releases a dead process's lockf lock; a multiprocessing.Lock would stay held."""
    budget = TrialBudget(5, workers=2)
    pid = os.fork()
    if pid == 0:
        with budget._locked():
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(1)  # never reached
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == -signal.SIGKILL
    assert budget.claim(1) == 1


def test_the_progress_bar_counts_every_workers_finished_trials():
    budget = TrialBudget(10, workers=2)
    pid = os.fork()
    if pid == 0:  # a quiet worker: its bar is disabled, its trials still count
        quiet = SharedProgress(budget, total=10, disable=True)
        for _ in range(3):
            quiet.update()
        os._exit(0)
    os.waitpid(pid, 0)
    shown = SharedProgress(budget, total=10, disable=False, file=open(os.devnull, "w"))  # noqa: SIM115
    shown.update()
    assert (shown.n, budget.finished) == (4, 4)
    shown.close()


def registry(database: Path) -> list[dict]:
    rows = sqlite_rows(
        database,
        "SELECT value_json FROM study_system_attributes WHERE key LIKE 'softmaxreg.worker.%'",
    )
    return [json.loads(value) for (value,) in rows]


def trials_of(database: Path, worker: int, state: str | None = None) -> int:
    query = (
        "SELECT COUNT(*) FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
        "AND a.key = 'worker' WHERE a.value_json = ?"
    )
    args: tuple = (str(worker),)
    if state is not None:
        query += " AND t.state = ?"
        args += (state,)
    rows = sqlite_rows(database, query, *args)
    return rows[0][0] if rows else 0


def training_with_an_epoch_stored(database: Path, worker: int) -> bool:
    """The worker's trial is RUNNING and has stored an epoch: it is training, between writes."""
    rows = sqlite_rows(
        database,
        "SELECT COUNT(*) FROM trials t "
        "JOIN trial_user_attributes w ON w.trial_id = t.trial_id AND w.key = 'worker' "
        "JOIN trial_user_attributes e ON e.trial_id = t.trial_id AND e.key = 'epochs' "
        "WHERE t.state = 'RUNNING' AND w.value_json = ?",
        str(worker),
    )
    return bool(rows and rows[0][0])


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_stopped_worker_leaves_the_rest_of_the_budget_to_the_other(real_mnist_root, tmp_path):
    """--workers 2, worker 1 stopped (SIGSTOP) in its trial: worker 0 runs every other trial
    of --n-trials and ends (with fixed shares it would end at half); continued, worker 1
    finishes its trial, and the study holds exactly --n-trials COMPLETE trials."""
    n_trials = 8
    process = start(tmp_path, sweep_args(
        real_mnist_root, "--workers", "2", "--n-trials", str(n_trials), "--population", "1",
        "--epochs", "3", "--batch-sizes", "1", "--lr-range", "0.001", "0.01",
    ))  # fmt: skip
    database = tmp_path / "optuna.db"
    wait_for(
        lambda: training_with_an_epoch_stored(database, 1) or process.poll() is not None,
        "worker 1 training a trial",
        timeout=PROCESS_TIMEOUT,
        every=0.01,
    )
    assert process.poll() is None, process.communicate()[1]
    (stopped,) = [entry["pid"] for entry in registry(database) if entry["worker_id"] == 1]
    os.kill(stopped, signal.SIGSTOP)
    try:
        wait_for(
            lambda: any(e["worker_id"] == 0 and e["ended"] for e in registry(database)),
            "worker 0 to end while worker 1 is stopped",
            timeout=PROCESS_TIMEOUT,
        )
        held = trials_of(database, 1)  # worker 1's trials: its running one and any before
        # It may also have claimed its next trial just before the stop, without asking for it.
        assert trials_of(database, 0, "COMPLETE") >= n_trials - held - 1
        assert trials_of(database, 0) + held <= n_trials
    finally:
        os.kill(stopped, signal.SIGCONT)
    code, out, err = finish(process)
    assert code == 0, err
    assert "worker 0 (exit 0)" in out and "worker 1 (exit 0)" in out, out
    rows = sqlite_rows(database, "SELECT state, COUNT(*) FROM trials GROUP BY state")
    assert dict(rows) == {"COMPLETE": n_trials}
