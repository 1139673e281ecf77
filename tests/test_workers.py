"""Many workers on one study: started at once on PostgreSQL, on the default SQLite files, on a
grid, and the default count (one per usable core). Real processes (`python -m
experiments.sweep`), real stores (SQLite files, the local PostgreSQL, an `mlflow server`), real
MNIST (read from the verified copy; trials train on 1,000 examples so each lasts a fraction of a
second). A worker's faults (kill -9, signals, a tracking outage) are in test_worker_faults.py.

Every wait is on an event read from the stores (a trial stored an epoch, N trials are complete),
never on a guess of how fast the machine is.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from mlflow import MlflowClient
from optuna.trial import TrialState

from experiments.config import SweepConfig
from experiments.finish_handoff import FinishHandoff
from experiments.reconcile import reconcile_study
from experiments.workers import resolve_workers, run_workers, threads_per_worker, usable_cores
from softmaxreg.data import DATA_ENV_VAR
from tests.services import (
    MlflowServer,
    postgres_database,
)

# Real worker processes each import torch, MLflow and Optuna and load MNIST: on a busy 2-core
# machine a test can take minutes, well past the suite's default 300 s timeout.
pytestmark = [pytest.mark.real_data, pytest.mark.slow, pytest.mark.timeout(900)]

REPO_ROOT = Path(__file__).resolve().parent.parent
PROCESS_TIMEOUT = 300


LONG_TRIAL = ("--epochs", "50", "--batch-sizes", "1", "--lr-range", "0.001", "0.01")
"""Trials that take seconds, to stop mid-trial: 1,000 steps an epoch at batch size 1. A study
keeps --epochs, --batch-sizes and --lr-range for life, so its resumes give them too."""


def sweep_args(data_root: Path, *extra: str) -> list[str]:
    """Small, fast trials on real MNIST: 1,000 training examples, 2 epochs, no pruning, no
    refit (on 60,000 images it would outlast the trials; the two-workers test turns it on), in
    one process (the default, auto, forks one worker per core): `extra` may give --workers."""
    return [
        "--study-name", "workers", "--epochs", "2", "--batch-sizes", "32", "128",
        "--lr-range", "0.05", "1", "--pruner", "none", "--val-size", "59000",
        "--data-root", str(data_root), "--device", "cpu", "--quiet", "--no-refit",
        "--workers", "1", *extra,
    ]  # fmt: skip


def start(cwd: Path, argv: list[str], module: str = "experiments.sweep") -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != DATA_ENV_VAR}
    env["PYTHONPATH"] = str(REPO_ROOT)
    return subprocess.Popen(
        [sys.executable, "-m", module, *argv],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=PROCESS_TIMEOUT)
    return process.returncode, out, err


def runs_of(client: MlflowClient, study_name: str) -> tuple[list, dict[int, list]]:
    """(parent runs, trial runs by trial number) of a study's experiment."""
    experiment = client.get_experiment_by_name(study_name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("softmaxreg.role") == "study"]
    children: dict[int, list] = {}
    for run in runs:
        if run.data.tags.get("softmaxreg.role") == "trial":
            children.setdefault(int(run.data.tags["optuna.trial_number"]), []).append(run)
    return parents, children


def assert_study_mirrored(study: optuna.Study, client: MlflowClient, trials: int) -> None:
    """`trials` trials, one parent run, and each trial ↔ exactly one run that matches it."""
    assert len(study.trials) == trials
    parents, children = runs_of(client, study.study_name)
    assert len(parents) == 1, [p.info.run_id for p in parents]
    assert parents[0].info.status == "FINISHED"
    assert sorted(children) == [t.number for t in study.trials]
    status = {TrialState.COMPLETE: "FINISHED", TrialState.FAIL: "FAILED"}
    for trial in study.trials:
        (run,) = children[trial.number]
        assert run.info.status == status[trial.state]
        assert int(run.data.params["batch_size"]) == trial.params["batch_size"]
        assert float(run.data.params["lr"]) == trial.params["lr"]
        assert run.data.params["worker"] == str(trial.user_attrs["worker"])
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id


def test_four_workers_start_a_new_study_at_once_on_postgresql(real_mnist_root, tmp_path):
    """4 processes × 5 trials, started together on new PostgreSQL databases (Optuna's, and a
    separate one behind an MLflow server): all run, 20 distinct configurations, 1 parent."""
    with (
        postgres_database("mlflow") as mlflow_url,
        MlflowServer(
            mlflow_url.replace("postgresql://", "postgresql+psycopg://"), tmp_path
        ) as server,
    ):
        for attempt in range(2):  # the start-up race again, on another new database
            with postgres_database("optuna") as optuna_url:
                name = f"workers-{attempt}"
                stores = ["--storage", optuna_url, "--tracking-uri", server.url]
                common = sweep_args(
                    real_mnist_root, "--study-name", name, *stores, "--n-trials", "5"
                )
                processes = [start(tmp_path, [*common, "--worker-id", str(k)]) for k in range(4)]
                results = [finish(p) for p in processes]
                for code, _, err in results:
                    assert code == 0, err
                study = optuna.load_study(study_name=name, storage=optuna_url)
                assert all(t.state == TrialState.COMPLETE for t in study.trials)
                configurations = {(t.params["batch_size"], t.params["lr"]) for t in study.trials}
                assert len(configurations) == 20
                assert sorted(t.user_attrs["worker"] for t in study.trials) == sorted(
                    [0, 1, 2, 3] * 5
                )
                assert_study_mirrored(study, MlflowClient(server.url), trials=20)
                sweep = SweepConfig(study_name=name, storage=optuna_url, tracking_uri=server.url)
                assert reconcile_study(sweep, log=print)[2] == 0
                # Each worker reports its own trials and the study's separately.
                assert all("this run: 5 trials" in out for _, out, _ in results)
                totals = [int(re.search(rf"study {name}: (\d+) trials in total", out)[1])
                          for _, out, _ in results]  # fmt: skip
                assert all(5 <= total <= 20 for total in totals) and max(totals) == 20


def own_trials(out: str, workers: int) -> list[int]:
    """Trials each of a --workers command's workers reports it ran ("worker k (exit 0): this
    run: N trials"), in worker order; each one's line must be there."""
    return [
        int(re.search(rf"worker {k} \(exit 0\): this run: (\d+) trials", out)[1])
        for k in range(workers)
    ]


def test_two_workers_on_the_default_sqlite_stores(real_mnist_root, tmp_path):
    """`--workers 2` in a new folder: both workers run, the trials are shared out between them
    as they go (`experiments.trial_budget`: not necessarily evenly), one parent."""
    for attempt in range(2):
        folder = tmp_path / f"attempt-{attempt}"
        folder.mkdir()
        code, out, err = finish(start(folder, sweep_args(real_mnist_root, "--n-trials", "6",
                                                         "--workers", "2", "--refit")))  # fmt: skip
        assert code == 0, err
        ran = own_trials(out, 2)
        assert sum(ran) == 6
        study = optuna.load_study(study_name="workers", storage=f"sqlite:///{folder}/optuna.db")
        workers = [t.user_attrs["worker"] for t in study.trials]
        assert [workers.count(0), workers.count(1)] == ran
        assert len({(t.params["batch_size"], t.params["lr"]) for t in study.trials}) == 6
        assert_study_mirrored(study, MlflowClient(f"sqlite:///{folder}/mlflow.db"), trials=6)
        # Both workers end near-simultaneously; the last of them hands the study's end to the
        # command: the best model is refit and registered once, from the refit's run.
        uri = f"sqlite:///{folder}/mlflow.db"
        client = MlflowClient(uri, registry_uri=uri)
        (version,) = client.search_model_versions("name = 'workers-best'")
        run = client.get_run(version.run_id)
        assert run.data.tags["softmaxreg.role"] == "refit"
        assert run.data.params["train_examples"] == "60000"
        assert out.count("refit of trial") == 1  # the command's report, not the workers'
        # One refit of the best trial; a second only if the refit begun when the first worker
        # ended (experiments.study_end.EarlyEnd) was overtaken by a later best.
        refits = re.findall(r"refit: trial (\d+)'s", err)
        best = max((t for t in study.trials if t.user_attrs.get("best_val_accuracy") is not None),
                   key=lambda t: (t.user_attrs["best_val_accuracy"], -t.number))  # fmt: skip
        assert 1 <= len(refits) <= 2 and refits[-1] == str(best.number)
        assert run.data.tags["softmaxreg.refit_of_trial"] == str(best.number)
        # One worker, the last to end, closed the parent run: its summary was logged once.
        (parent,) = runs_of(client, "workers")[0]
        assert len(client.get_metric_history(parent.info.run_id, "study_trials_total")) == 1


def test_a_forked_worker_hands_the_end_of_the_study_to_its_command():
    """The flag a `--workers` command creates before forking is seen by it once a forked child
    sets it (memory shared across fork, not a copy), and not before."""
    handoff, untouched = FinishHandoff(), FinishHandoff()
    pid = os.fork()
    if pid == 0:  # the "last worker": hand over and leave at once, as forked workers do
        handoff.hand_over()
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert handoff.handed_over and not untouched.handed_over


def start_on_cores(cwd: Path, argv: list[str], cores: set[int]) -> subprocess.Popen:
    """`python -m experiments.sweep argv` allowed to run on `cores` only (as taskset would)."""
    env = {k: v for k, v in os.environ.items() if k != DATA_ENV_VAR}
    env["PYTHONPATH"] = str(REPO_ROOT)
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.sweep", *argv],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, cores),
    )  # fmt: skip


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 usable cores")
def test_the_default_forks_one_worker_per_usable_core(real_mnist_root, tmp_path):
    """No --workers: one worker per core the command may use, never more than the trials."""
    argv = sweep_args(real_mnist_root, "--n-trials", "4")
    at = argv.index("--workers")
    del argv[at : at + 2]  # sweep_args' "--workers 1": back to the default
    two = tmp_path / "two"
    two.mkdir()
    code, out, err = finish(start_on_cores(two, argv, set(sorted(os.sched_getaffinity(0))[:2])))
    assert code == 0, err
    assert sum(own_trials(out, 2)) == 4
    one = tmp_path / "one"
    one.mkdir()
    argv.remove("--quiet")  # and the first worker's trial lines show, as one worker's would
    code, out, err = finish(start_on_cores(one, argv, {min(os.sched_getaffinity(0))}))
    assert code == 0, err
    assert "worker 0" not in out  # one core: the command's own process ran the trials
    assert "this run: 4 trials" in out
    assert len(re.findall(r"Trial \d+ finished", err)) == 4

    loud = tmp_path / "loud"  # two workers, not --quiet: only the first one's trials are told
    loud.mkdir()
    code, out, err = finish(start_on_cores(loud, argv, set(sorted(os.sched_getaffinity(0))[:2])))
    assert code == 0, err
    study = optuna.load_study(study_name="workers", storage=f"sqlite:///{loud}/optuna.db")
    told = sorted(int(n) for n in re.findall(r"Trial (\d+) finished", err))
    assert told == sorted(t.number for t in study.trials if t.user_attrs["worker"] == 0)
    assert len(told) == own_trials(out, 2)[0] and len(study.trials) == 4


def test_auto_workers_are_one_per_core_at_most_the_trials_and_one_on_a_gpu():
    cores = usable_cores()
    assert cores == len(os.sched_getaffinity(0))
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_workers(SweepConfig(n_trials=100), cpu) == cores
    assert resolve_workers(SweepConfig(n_trials=1), cpu) == 1
    assert resolve_workers(SweepConfig(n_trials=100), cuda) == 1
    assert resolve_workers(SweepConfig(n_trials=100, workers=3), cuda) == 3  # as given
    assert threads_per_worker(cores) == 1


def test_grid_points_run_once_across_workers(real_mnist_root, tmp_path):
    """Three processes on a 2 × 3 grid, two trials each: every point exactly once."""
    args = sweep_args(real_mnist_root, "--sampler", "grid", "--grid-lr-points", "3",
                      "--n-trials", "2")  # fmt: skip
    processes = [start(tmp_path, [*args, "--worker-id", str(k)]) for k in range(3)]
    for code, _, err in map(finish, processes):
        assert code == 0, err
    study = optuna.load_study(study_name="workers", storage=f"sqlite:///{tmp_path}/optuna.db")
    points = sorted((t.params["batch_size"], t.params["lr"]) for t in study.trials)
    grid = SweepConfig(batch_sizes=(32, 128), lr_range=(0.05, 1.0), grid_lr_points=3)
    assert points == sorted((b, lr) for b in (32, 128) for lr in grid.grid_learning_rates())


RELEASE_FLAG: list[Path] = []
"""Set before the fork: the file whose existence lets worker 0 (the slowest) exit."""


def exit_in_turn(sweep: SweepConfig, _threads: int) -> int:
    """A forked worker's stand-in: workers 1 and 2 exit at once (2 with status 3); worker 0
    waits until its command has been told of both (or 60 s: then it exits with status 9)."""
    if sweep.worker_id == 0:
        deadline = time.monotonic() + 60
        while not RELEASE_FLAG[0].exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        code = 0 if RELEASE_FLAG[0].exists() else 9
    else:
        time.sleep(0.3 * sweep.worker_id)  # worker 1 first, then 2
        code = 3 if sweep.worker_id == 2 else 0
    os.write(1, f"this run: worker {sweep.worker_id}\n".encode())  # fd 1: the worker's pipe
    return code


def test_each_forked_worker_is_told_as_it_exits_whichever_ends_first(tmp_path):
    """run_workers reads every worker's pipe at once (not the first worker's to its end, then
    the next's): `on_exit` hears of each as it exits, with its status and how many still run,
    while the first is still running; that is when the command starts the study's end early
    (experiments.study_end.EarlyEnd). Worker 0 here cannot end before the others were told."""
    RELEASE_FLAG[:] = [tmp_path / "told-of-both"]
    heard: list[tuple[int, int]] = []

    def on_exit(code: int, still_running: int) -> None:
        heard.append((code, still_running))
        if still_running == 1:
            RELEASE_FLAG[0].touch()

    status, summaries = run_workers(SweepConfig(n_trials=3, workers=3), 1, exit_in_turn, on_exit)
    assert heard == [(0, 2), (3, 1), (0, 0)]
    assert status == 3  # a worker's failure is the command's
    assert summaries == [f"worker {i} (exit {c}): this run: worker {i}" for i, c in
                         ((0, 0), (1, 0), (2, 3))]  # fmt: skip
