"""A full disk mid-sweep, on a real one: a small tmpfs mounted by the test (we are root; the
tests skip, saying so, where mount is refused) and filled to the last byte while the sweep runs.

Optuna's store, MLflow's store or MLflow's artifacts on the full disk: the sweep stops with exit
1 and one line naming the disk full and the path, with no "unreachable" retry loop; once space
is freed, the same command goes on and a reconcile leaves nothing RUNNING. The data cache on a
full disk is only skipped, with a line saying so. Real processes and real MNIST (1,000 training
examples a trial), except the data-cache test, which needs only the loader (synthetic IDX
files). Waits are on events read from the stores.
"""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from experiments.config import SweepConfig
from experiments.reconcile import reconcile_study
from softmaxreg.data import load_splits
from softmaxreg.data_cache import CACHE_FOLDER
from softmaxreg.synthetic import write_synthetic_idx
from tests.services import sqlite_rows, wait_for
from tests.test_workers import finish, runs_of, start, sweep_args


def real_sweep(test):
    """Marks of the tests that run real sweep processes on real MNIST (the data-cache test
    needs neither)."""
    for mark in (pytest.mark.real_data, pytest.mark.slow, pytest.mark.timeout(900)):
        test = mark(test)
    return test


def mount_tmpfs(folder: Path, size: str) -> Path:
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    return folder


@pytest.fixture
def small_disk(tmp_path):
    disk = mount_tmpfs(tmp_path / "disk", "40m")
    yield disk
    # Lazy: a store engine of this test process may still hold a file open in the mount.
    subprocess.run(["umount", "--lazy", str(disk)], check=True)


def fill(disk: Path) -> None:
    """Write zeros until the disk refuses another byte (ENOSPC)."""
    with (disk / "filler").open("wb", buffering=0) as filler:
        block = bytes(1 << 16)
        while True:
            try:
                filler.write(block)
            except OSError as error:
                assert error.errno == errno.ENOSPC
                break
        while True:  # the last partial block
            try:
                filler.write(b"\0" * 512)
            except OSError:
                return


def free(disk: Path) -> None:
    (disk / "filler").unlink()


def complete_trials(database: Path) -> int:
    rows = sqlite_rows(database, "SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'")
    return rows[0][0] if rows else 0


def assert_one_disk_full_line(err: str, path: str) -> None:
    """One line naming the disk full and `path` (the start of it: a file under a folder)."""
    lines = err.splitlines()
    assert not any(sign in err for sign in ("Traceback", "ERROR", "unreachable")), err
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, err
    assert errors[0].startswith(f"error: disk full: {path}"), errors[0]
    assert "free space there, then run the same command again" in errors[0]
    assert len(lines) <= 3, err  # the opening line, at most one note, the error


def assert_nothing_running(stores: dict[str, str]) -> None:
    """After a reconcile: no trial RUNNING, every run closed and matching its trial; a second
    reconcile repairs nothing."""
    sweep = SweepConfig(study_name="workers", heartbeat_seconds=1, **stores)
    reconcile_study(sweep, log=print)
    study = optuna.load_study(study_name="workers", storage=stores["storage"])
    assert TrialState.RUNNING not in [t.state for t in study.trials]
    parents, children = runs_of(MlflowClient(stores["tracking_uri"]), "workers")
    assert [p.info.status for p in parents] == ["FINISHED"]
    status = {TrialState.COMPLETE: "FINISHED", TrialState.FAIL: "FAILED"}
    for trial in study.trials:
        if trial.state == TrialState.WAITING:
            # A retry of a trial the full disk cut off, enqueued when that trial was failed
            # as stale: by the resume's start, or (when the resume started within the stale
            # grace) by its end or this reconcile. It runs, and gets its run, next time.
            assert "failed_trial" in trial.system_attrs, trial.number
            assert trial.number not in children, trial.number
            continue
        (run,) = children[trial.number]
        assert run.info.status == status[trial.state], trial.number
    assert reconcile_study(sweep, log=print)[2] == 0


@real_sweep
@pytest.mark.parametrize(("store", "population"), [("optuna", "1"), ("mlflow", "4")])
def test_a_full_disk_under_a_store_stops_the_sweep_in_one_line_and_it_resumes(
    real_mnist_root, tmp_path, small_disk, store, population
):
    on_disk = {"optuna": small_disk / "optuna.db", "mlflow": small_disk / "mlflow.db"}
    elsewhere = {"optuna": tmp_path / "optuna.db", "mlflow": tmp_path / "mlflow.db"}
    paths = {name: on_disk[name] if name == store else elsewhere[name] for name in on_disk}
    stores = {"storage": f"sqlite:///{paths['optuna']}",
              "tracking_uri": f"sqlite:///{paths['mlflow']}"}  # fmt: skip
    flags = ["--storage", stores["storage"], "--tracking-uri", stores["tracking_uri"],
             "--population", population, "--heartbeat-seconds", "1"]  # fmt: skip
    process = start(tmp_path, sweep_args(real_mnist_root, *flags, "--n-trials", "500"))
    wait_for(lambda: complete_trials(paths["optuna"]) >= 2 or process.poll() is not None,
             "two complete trials")  # fmt: skip
    fill(small_disk)
    code, _, err = finish(process)

    assert code == 1, err
    assert_one_disk_full_line(err, f"{paths[store]} (")
    complete = complete_trials(paths["optuna"])
    assert complete >= 2  # what finished before the disk filled is kept

    free(small_disk)
    code, _, err = finish(start(tmp_path, sweep_args(real_mnist_root, *flags, "--n-trials", "2")))
    assert code == 0, err
    assert complete_trials(paths["optuna"]) >= complete + 2
    assert_nothing_running(stores)


@real_sweep
def test_a_full_disk_under_the_artifacts_stops_at_the_model_and_plots_and_resumes(
    real_mnist_root, tmp_path, small_disk
):
    """The stores elsewhere, the working folder (MLflow's ./mlruns artifacts) on a disk full
    from the start: every trial runs and is stored; logging the study's plots and best model
    at its end finds no space."""
    stores = {"storage": f"sqlite:///{tmp_path}/optuna.db",
              "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}  # fmt: skip
    flags = ["--storage", stores["storage"], "--tracking-uri", stores["tracking_uri"],
             "--population", "1", "--n-trials", "2"]  # fmt: skip
    fill(small_disk)
    code, _, err = finish(start(small_disk, sweep_args(real_mnist_root, *flags)))

    assert code == 1, err
    assert_one_disk_full_line(err, f"{small_disk}/mlruns/")  # the file MLflow was writing
    assert complete_trials(tmp_path / "optuna.db") == 2

    free(small_disk)
    code, out, err = finish(start(small_disk, sweep_args(real_mnist_root, *flags)))
    assert code == 0, err
    assert "registered model workers-best" in out
    assert_nothing_running(stores)
    client = MlflowClient(stores["tracking_uri"])
    (parent,), _ = runs_of(client, "workers")
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert any(name.endswith(".png") for name in names), names


def test_a_full_disk_under_the_data_cache_runs_without_it_saying_so(tmp_path):
    """The raw files fit, the cache does not: the data loads from the raw files, one line says
    the disk is full and where, and no partial cache file is left behind."""
    disk = mount_tmpfs(tmp_path / "disk", "3m")
    try:
        raw_dir, spec = write_synthetic_idx(disk / "data", n_train=300, n_test=60)
        fill(disk)
        notes: list[str] = []
        splits = load_splits(spec, disk / "data", val_size=50, sources=("local",),
                             log=notes.append)  # fmt: skip
        assert len(splits.train_y) == 250 and len(splits.test_y) == 60
        cache_folder = raw_dir.parent / CACHE_FOLDER
        assert [n for n in notes if "disk full" in n] == notes and len(notes) == 1, notes
        assert notes[0].startswith(f"note: disk full: data cache {cache_folder}/")
        assert notes[0].endswith("running without it (free space there and the next run "
                                 "writes it)")  # fmt: skip
        assert list(cache_folder.iterdir()) == []  # no temporary file left
        free(disk)
        again: list[str] = []
        load_splits(spec, disk / "data", val_size=50, sources=("local",), log=again.append)
        assert again == [] and len(list(cache_folder.glob("*.pt"))) == 1  # written now
    finally:
        subprocess.run(["umount", "--lazy", str(disk)], check=True)
