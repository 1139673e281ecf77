"""MNIST-family data: fetched, verified, decoded once into a shared cache, held whole on the device.

    from softmaxreg.data import load_splits
    splits = load_splits("mnist", root="./data", device=torch.device("cpu"))
    splits.train_x.shape  # (55000, 784) float32, normalised with the dataset's mean/std

The raw files are fetched and verified by `softmaxreg.data_sources` (the datasets are in
`softmaxreg.datasets`, the IDX format in `softmaxreg.idx_files`).

Training never touches a `DataLoader` or PIL: the whole split is one normalised float tensor on
the device, and batches are slices of it. The verified, normalised splits are kept in a
memory-mapped cache (`softmaxreg.data_cache`) checked against the raw files' size, mtime and
inode, so a later run neither re-hashes nor re-decodes them, and worker processes share its
pages. torchvision is imported only to download.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from softmaxreg.data_cache import SplitCache, file_stamp
from softmaxreg.data_sources import SOURCES, copy_raw_files, ensure_raw_files
from softmaxreg.datasets import (
    DATA_ENV_VAR,
    DATASETS,
    RAW_FILES,
    DataError,
    DatasetSpec,
    resolve_data_root,
)
from softmaxreg.idx_files import read_idx, spec_count

__all__ = [  # the data API, importable from here as before the split into modules
    "DATASETS",
    "DATA_ENV_VAR",
    "RAW_FILES",
    "DataError",
    "DataSplits",
    "DatasetSpec",
    "copy_raw_files",
    "ensure_raw_files",
    "load_splits",
    "normalise",
]


@dataclass
class DataSplits:
    """Train / validation / test tensors, normalised, flattened to 784 features, on one device."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    checksum: str = ""
    """MD5 over the raw files' MD5s: identifies exactly which bytes a result was trained on."""
    mean: float = 0.0
    std: float = 1.0
    info: dict[str, str] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    def to(self, device: torch.device) -> DataSplits:
        moved = {
            name: getattr(self, name).to(device)
            for name in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")
        }
        return DataSplits(
            name=self.name,
            checksum=self.checksum,
            mean=self.mean,
            std=self.std,
            info=dict(self.info),
            **moved,
        )


def normalise(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 784): the same arithmetic as ToTensor + Normalize."""
    return ((images.reshape(images.shape[0], -1).float() / 255.0) - mean) / std


def decode_verified(spec: DatasetSpec, raw_dir: Path, order: torch.Tensor) -> dict:
    """The cache's tensors from verified raw files: training rows permuted by `order`."""
    train_images, train_labels, test_images, test_labels = (
        read_idx(raw_dir / name, images="images" in name) for name in RAW_FILES
    )
    for labels, name in ((train_labels, RAW_FILES[1]), (test_labels, RAW_FILES[3])):
        if labels.numel() and int(labels.max()) > 9:
            raise DataError(
                f"{raw_dir / name}: label {int(labels.max())} found; expected classes 0-9"
            )
    return {
        "train_x": normalise(train_images, spec.mean, spec.std)[order],
        "train_y": train_labels[order],
        "test_x": normalise(test_images, spec.mean, spec.std),
        "test_y": test_labels,
    }


def matches_raw(tensors: dict, spec: DatasetSpec, raw_dir: Path, order: torch.Tensor) -> bool:
    """Do the cached tensors hold what the raw files decode to? Every label and a sample of 16
    images per split are compared, so a cache of other bytes is never used."""
    if not torch.equal(tensors["test_y"], read_idx(raw_dir / RAW_FILES[3], images=False)):
        return False
    if not torch.equal(tensors["train_y"], read_idx(raw_dir / RAW_FILES[1], images=False)[order]):
        return False
    sample = torch.Generator().manual_seed(len(order))
    for name, rows, index in (
        ("train", tensors["train_x"], order),
        ("test", tensors["test_x"], None),
    ):
        picks = torch.randint(len(rows), (16,), generator=sample)
        source = picks if index is None else index[picks]
        with (raw_dir / RAW_FILES[0 if name == "train" else 2]).open("rb") as handle:
            images = []
            for position in source.tolist():
                handle.seek(16 + position * 784)
                images.append(np.frombuffer(handle.read(784), dtype=np.uint8))
        fresh = normalise(torch.from_numpy(np.stack(images)), spec.mean, spec.std)
        if not torch.equal(rows[picks], fresh):
            return False
    return True


def cached_splits(
    spec: DatasetSpec, root: Path, split_seed: int, sources: tuple[str, ...], log
) -> tuple[dict, str, Path]:
    """(tensors, checksum, raw_dir): from the cache if it matches the raw files, else verified,
    decoded and cached afresh."""
    raw_dir = spec.raw_dir(resolve_data_root(root))
    key = {
        "dataset": spec.name, "raw_md5": spec.raw_md5, "mean": spec.mean, "std": spec.std,
        "counts": [spec.train_count, spec.test_count],
    }  # fmt: skip
    cache = SplitCache.for_raw_dir(raw_dir, key, split_seed)
    raw_files = {name: raw_dir / name for name in RAW_FILES}
    had_raw_files = all(p.is_file() for p in raw_files.values())
    found = cache.load(raw_files) if had_raw_files else None
    if found is not None:
        tensors, checksum = found
        order = split_order(len(tensors["train_y"]), split_seed)
        if matches_raw(tensors, spec, raw_dir, order):
            return tensors, checksum, raw_dir
        cache.reason = "its contents differ from the raw files"
    raw_dir, checksum = ensure_raw_files(spec, root, sources=sources, log=log)
    stamps = {name: file_stamp(path) for name, path in raw_files.items()}
    order = split_order(spec_count(raw_dir), split_seed)
    tensors = decode_verified(spec, raw_dir, order)
    if not had_raw_files:
        # Chosen before the fetch, the cache's place fell back to the user's cache folder when
        # the raw folder did not exist yet: choose again, beside the files now there. Nothing
        # was rebuilt (there was nothing to build from), so no note.
        cache = SplitCache.for_raw_dir(raw_dir, key, split_seed)
    elif log is not None and cache.reason != "none yet":
        log(f"note: data cache {cache.path} rebuilt: {cache.reason}")
    return cache.store(tensors, stamps, checksum, log), checksum, raw_dir


def split_order(n: int, seed: int) -> torch.Tensor:
    """The seeded permutation of the training file: its first val_size rows are validation."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def load_splits(
    spec: DatasetSpec | str = "mnist",
    root: str | os.PathLike[str] | None = None,
    *,
    device: torch.device | str = "cpu",
    val_size: int = 5000,
    split_seed: int = 0,
    sources: tuple[str, ...] = tuple(SOURCES),
    log: Callable[[str], None] | None = None,
) -> DataSplits:
    """Fetch and verify if needed (or take the cache that matches), split, move to `device`.

    On the CPU the tensors are views of the memory-mapped cache: no copy, shared pages."""
    spec = DATASETS[spec] if isinstance(spec, str) else spec
    tensors, checksum, raw_dir = cached_splits(spec, root, split_seed, sources, log)
    n = len(tensors["train_y"])
    if not 0 < val_size < n:
        raise DataError(f"val_size={val_size} must be between 1 and {n - 1} (the split has {n})")
    device = torch.device(device)
    return DataSplits(
        name=spec.name,
        train_x=tensors["train_x"][val_size:].to(device),
        train_y=tensors["train_y"][val_size:].to(device),
        val_x=tensors["train_x"][:val_size].to(device),
        val_y=tensors["train_y"][:val_size].to(device),
        test_x=tensors["test_x"].to(device),
        test_y=tensors["test_y"].to(device),
        checksum=checksum,
        mean=spec.mean,
        std=spec.std,
        info={"raw_dir": str(raw_dir)},
    )
