"""Shared fixtures: synthetic data for fast tests, the verified real MNIST copy when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from softmaxreg.data import DataSplits, copy_raw_files, load_splits
from softmaxreg.synthetic import make_synthetic_splits
from tests.services import copy_mlflow_db

REPO_ROOT = Path(__file__).resolve().parent.parent
# The workplace keeps a verified copy of the original MNIST files beside the checkout. Tests may
# read it; the product never needs it.
SHARED_DATA = Path(os.environ.get("SOFTMAXREG_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _keep_threads_stable():
    """Tests that change torch's thread count must not leak it into other tests."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def synthetic_splits() -> DataSplits:
    return make_synthetic_splits(n_train=2000, n_val=500, n_test=500, seed=0)


def shared_raw_dir(folder: str) -> Path:
    return SHARED_DATA / folder / "raw"


@pytest.fixture(scope="session")
def real_mnist_root(tmp_path_factory) -> Path:
    """A data folder holding a copy of the verified MNIST .gz files (skip if not available)."""
    source = shared_raw_dir("MNIST")
    if not source.is_dir():
        pytest.skip(f"verified MNIST copy not found at {source}")
    root = tmp_path_factory.mktemp("mnist-data")
    copy_raw_files(source, "mnist", root)
    return root


@pytest.fixture(scope="session")
def real_mnist_splits(real_mnist_root) -> DataSplits:
    return load_splits("mnist", real_mnist_root, sources=("local",))


@pytest.fixture
def stores(tmp_path, tmp_path_factory, monkeypatch) -> dict[str, str]:
    """Fresh Optuna and MLflow SQLite stores in tmp_path, which is also the working folder
    (MLflow puts artifacts in ./mlruns beside a SQLite tracking database)."""
    copy_mlflow_db(tmp_path_factory, tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    return {
        "storage": f"sqlite:///{tmp_path / 'optuna.db'}",
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
