"""The stores' code is loaded once in a command before it forks its workers, no connection of
the command reaches a worker, and the heap is frozen only where it should be
(`experiments.store_code`, `experiments.workers.run_workers`, `experiments.sweep.main`).

Real SQLite stores, a real Optuna study and MLflow parent run, fresh interpreters where what is
measured is what a process imports.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy

from experiments.config import SweepConfig
from experiments.sweep import main as sweep_main
from experiments.workers import run_workers

REPO_ROOT = Path(__file__).resolve().parent.parent

OPEN_AFTER_PRELOAD = """
import json, sys
from experiments.common import say
from experiments.config import SweepConfig
from experiments.store_code import preload_store_code
from experiments.store_files import create_stores
from experiments.store_urls import Stores
from experiments.worker import open_study_and_mirror
from softmaxreg.config import TrainConfig
from softmaxreg.synthetic import make_synthetic_splits

sweep = SweepConfig(n_trials=2)
stores = Stores.from_config(sweep)
create_stores(stores.optuna_url, stores.tracking_uri)
data = make_synthetic_splits(n_train=100, n_val=20, n_test=20, seed=0)
if sys.argv[1] == "preload":
    preload_store_code(stores)
before = set(sys.modules)
study, mirror, _ = open_study_and_mirror(sweep, stores, "s", TrainConfig(), data, 0, say)
assert mirror.parent_run_id and study.study_name == "s"
print(json.dumps(sorted(set(sys.modules) - before)))
"""

STORE_PACKAGES = ("sqlalchemy.orm", "alembic", "mako", "cryptography", "optuna.storages._rdb")
"""What a first open of the stores imports unless the command loaded it (the bulk of its time)."""


def modules_imported_by_open(tmp_path: Path, mode: str) -> list[str]:
    folder = tmp_path / mode
    folder.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", OPEN_AFTER_PRELOAD, mode],
        cwd=folder, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def of_store_packages(modules: list[str]) -> list[str]:
    ours = [m for m in modules if m.startswith(STORE_PACKAGES)]
    return ours + [m for m in modules if m.startswith("mlflow.store.tracking.sqlalchemy")]


def test_after_the_preload_opening_the_study_and_its_mirror_imports_no_store_code(tmp_path):
    """Preloaded, a (forked) worker's open of the study and its parent run imports none of the
    stores' code; without it, the same open imports all of it (so the check can see it)."""
    assert of_store_packages(modules_imported_by_open(tmp_path, "preload")) == []
    cold = of_store_packages(modules_imported_by_open(tmp_path, "cold"))
    assert "sqlalchemy.orm.session" in cold
    assert "mlflow.store.tracking.sqlalchemy_store" in cold


ENGINE: list[sqlalchemy.Engine] = []
"""The command's engine, with a pooled connection, made before the fork."""


def report_inherited_connections(_sweep: SweepConfig, _threads: int) -> int:
    """A forked worker's stand-in: exit 0 if the command's engine holds no connection here and
    what it inherited is frozen (its collector never walks or finalizes it)."""
    if ENGINE[0].pool.checkedin() != 0:
        return 5
    return 0 if gc.get_freeze_count() > 0 else 6


def test_no_connection_of_the_command_reaches_a_forked_worker(tmp_path):
    """An engine the command still holds, with a connection in its pool (a check before the
    fork), has it closed before the workers are forked: two processes on one SQLite
    connection corrupt its locks. The engine stays usable in the command."""
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'checked.db'}")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text("select 1"))
    assert engine.pool.checkedin() == 1
    ENGINE[:] = [engine]
    assert gc.get_freeze_count() == 0
    status, _ = run_workers(SweepConfig(n_trials=2, workers=2), 1, report_inherited_connections)
    assert status == 0
    with engine.connect() as connection:
        assert connection.execute(sqlalchemy.text("select 2")).scalar() == 2
    assert gc.get_freeze_count() == 0  # the caller's heap is collected as before


@pytest.mark.real_data
def test_the_sweep_called_in_process_leaves_the_callers_heap_unfrozen(real_mnist_root, tmp_path):
    """Only the command (`python -m experiments.sweep`) freezes its heap after start-up: called
    from a test or a notebook, `main` must not freeze the caller's garbage of the moment with
    it, never to be freed."""
    argv = [
        "--n-trials", "1", "--epochs", "1", "--batch-sizes", "128", "--val-size", "59000",
        "--pruner", "none", "--no-refit", "--workers", "1", "--quiet", "--device", "cpu",
        "--data-root", str(real_mnist_root),
        "--storage", f"sqlite:///{tmp_path / 'optuna.db'}",
        "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
    ]  # fmt: skip
    assert sweep_main(argv) == 0
    assert gc.get_freeze_count() == 0
