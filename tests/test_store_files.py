"""Damaged and half-built SQLite stores are refused before any work, and a store is created
whole or not at all (on a real full disk: a small tmpfs mounted here)."""

from __future__ import annotations

import os
import subprocess

import mlflow
import pytest
import sqlalchemy
from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase

from experiments.export import main as export_main
from experiments.reconcile import main as reconcile_main
from experiments.store_files import check_mlflow_schema, create_stores_or_exit
from experiments.sweep import main as sweep_main
from experiments.worker import run_sweep
from softmaxreg.config import DataConfig, TrainConfig
from tests.test_sweep import sweep_config


def _store_flags(stores: dict[str, str]) -> list[str]:
    return ["--study-name", "test-study", "--storage", stores["storage"],
            "--tracking-uri", stores["tracking_uri"]]  # fmt: skip


def _exit_code(entry, argv: list[str]) -> int:
    try:
        return entry(argv)
    except SystemExit as exit_info:
        return int(exit_info.code or 0)


def test_a_truncated_store_is_named_and_left_untouched_by_every_command(
    stores, synthetic_splits, tmp_path, capsys
):
    run_sweep(sweep_config(stores, n_trials=1), TrainConfig(epochs=1, device="cpu"),
              DataConfig(), synthetic_splits, log=lambda _: None)  # fmt: skip
    data_root = tmp_path / "data"
    commands = {
        "sweep": (sweep_main, [*_store_flags(stores), "--data-root", str(data_root)]),
        "export": (export_main, [*_store_flags(stores), "--out", str(tmp_path / "t.csv")]),
        "reconcile": (reconcile_main, _store_flags(stores)),
    }
    for name in ("optuna.db", "mlflow.db"):
        path = tmp_path / name
        whole = path.read_bytes()
        path.write_bytes(whole[: len(whole) // 2])  # cut short, as by a full disk
        cut = path.read_bytes()
        for command, (entry, argv) in commands.items():
            code = _exit_code(entry, argv)
            err = capsys.readouterr().err
            assert code == 2, (name, command, err)
            assert f"{path}" in err and "is damaged" in err, (name, command, err)
            assert "Traceback" not in err
            assert path.read_bytes() == cut  # never written to, never replaced
        path.write_bytes(whole)
    assert not data_root.exists()  # refused before the data load
    assert not (tmp_path / "t.csv").exists()


def test_a_half_built_mlflow_store_is_refused_with_how_to_recover(tmp_path, capsys):
    """MLflow's first step (its initial tables) done, its migrations never run: the state a
    creation cut off by a full disk leaves, on which MLflow fails with `table ... exists`."""
    path = tmp_path / "mlflow.db"
    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    InitialBase.metadata.create_all(engine)
    engine.dispose()
    argv = ["--tracking-uri", f"sqlite:///{path}", "--storage", f"sqlite:///{tmp_path}/o.db",
            "--data-root", str(tmp_path / "data")]  # fmt: skip
    assert _exit_code(sweep_main, argv) == 2
    err = capsys.readouterr().err
    assert f"{path} holds an incomplete MLflow schema" in err and "move it away" in err
    assert not (tmp_path / "o.db").exists() and not (tmp_path / "data").exists()


def test_mlflow_head_revision_is_read_once_per_machine_and_kept_whole(tmp_path, monkeypatch):
    """The head revision comes from the machine's cache folder once found there (Alembic's
    search imports every migration script); a cache folder that cannot be written still gets
    the real revision, and nothing half-written is left."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    import experiments.store_files as store_files

    head = _get_latest_schema_revision()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    store_files._mlflow_head_revision.cache_clear()
    assert store_files._mlflow_head_revision() == head
    (kept,) = (tmp_path / "cache" / "softmaxreg").glob("mlflow-head-revision-*.txt")
    assert kept.read_text() == head and mlflow.__version__ in kept.name
    # What is kept is what a later process uses (a revision only the cache can have said).
    kept.write_text("0000cafe0000")
    store_files._mlflow_head_revision.cache_clear()
    assert store_files._mlflow_head_revision() == "0000cafe0000"
    # A cache "folder" that is a file (no folder can be made there, even by root).
    kept.unlink()
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-a-folder"))
    store_files._mlflow_head_revision.cache_clear()
    try:
        assert store_files._mlflow_head_revision() == head
    finally:
        store_files._mlflow_head_revision.cache_clear()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["cache", "not-a-folder", "softmaxreg"]


@pytest.fixture
def small_disk(tmp_path):
    """A 700 KB tmpfs: room for Optuna's store, not for MLflow's (about 950 KB)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=700k", "tmpfs", str(mount)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_store_cut_off_by_a_full_disk_leaves_nothing_and_the_retry_builds_it(small_disk, capsys):
    optuna_url = f"sqlite:///{small_disk}/optuna.db"
    tracking_uri = f"sqlite:///{small_disk}/mlflow.db"
    with pytest.raises(SystemExit) as exit_info:
        create_stores_or_exit(optuna_url, tracking_uri)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert f"cannot create {small_disk / 'mlflow.db'}" in lines[0]
    assert "full" in lines[0] or "No space left" in lines[0], lines[0]
    assert sorted(p.name for p in small_disk.iterdir()) == ["optuna.db"]  # no half of mlflow.db

    subprocess.run(["mount", "-o", "remount,size=20m", str(small_disk)], check=True)
    create_stores_or_exit(optuna_url, tracking_uri)  # space freed: the same call goes on
    check_mlflow_schema(small_disk / "mlflow.db", "--tracking-uri")  # complete, at MLflow's head
    assert sorted(p.name for p in small_disk.iterdir()) == ["mlflow.db", "optuna.db"]


def test_export_reads_stores_in_a_read_only_folder(stores, synthetic_splits, tmp_path, capsys):
    run_sweep(sweep_config(stores, n_trials=1), TrainConfig(epochs=1, device="cpu"),
              DataConfig(), synthetic_splits, log=lambda _: None)  # fmt: skip
    read_only, out = tmp_path.parent / f"{tmp_path.name}-ro", tmp_path.parent / "out.csv"
    read_only.mkdir()
    done = subprocess.run(["mount", "--bind", "-o", "ro", str(tmp_path), str(read_only)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount a read-only folder here: {done.stderr.strip()}")
    try:
        os.chdir(read_only)  # the working folder is read-only too
        # SQLite's -shm is a shared-memory index, rewritten by this test process's own pooled
        # writable connections from the sweep above (WAL mode), not content: left out. The
        # read-only mount itself guarantees that nothing is written through it.
        before = {p.name: p.read_bytes() for p in read_only.iterdir()
                  if p.is_file() and not p.name.endswith("-shm")}  # fmt: skip
        argv = ["--study-name", "test-study", "--storage", f"sqlite:///{read_only}/optuna.db",
                "--tracking-uri", f"sqlite:///{read_only}/mlflow.db",
                "--out", str(out)]  # fmt: skip
        assert _exit_code(export_main, argv) == 0, capsys.readouterr().err
        assert len(out.read_text().splitlines()) == 2  # the header and the one trial
        after = {p.name: p.read_bytes() for p in read_only.iterdir()
                 if p.is_file() and not p.name.endswith("-shm")}  # fmt: skip
        assert after == before
        # The sweep, which writes, still refuses the read-only folder up front.
        argv[-2:] = ["--data-root", str(tmp_path.parent / "data")]
        assert _exit_code(sweep_main, argv) == 2
        assert "is not writable" in capsys.readouterr().err
    finally:
        os.chdir(tmp_path)
        # Lazy: MLflow keeps its store's engine (open files in the mount) for the process.
        subprocess.run(["umount", "--lazy", str(read_only)], check=True)
