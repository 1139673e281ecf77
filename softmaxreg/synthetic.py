"""Small, learnable stand-ins for MNIST, for tests and smoke runs (never for reported results).

    splits = make_synthetic_splits(n_train=2000, n_val=500, n_test=500, seed=0)
    raw_dir, spec = write_synthetic_idx(tmp_path, n_train=600, n_test=100)  # real IDX files

Images are ten noisy class prototypes, so softmax regression learns them well above chance in
a couple of epochs; `write_synthetic_idx` writes them as genuine IDX files in torchvision's
layout, with a `DatasetSpec` whose MD5s match, so the real loading path can run on them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from softmaxreg.data import DATASETS, DatasetSpec, DataSplits, normalise
from softmaxreg.idx_files import md5_of, write_idx


def synthetic_images(
    n: int, seed: int, prototype_seed: int = 1234
) -> tuple[np.ndarray, np.ndarray]:
    """`n` uint8 28x28 images of ten noisy prototypes, with labels 0-9 (balanced, shuffled)."""
    prototypes = np.random.default_rng(prototype_seed).integers(0, 256, size=(10, 28, 28))
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
    noise = rng.normal(0.0, 300.0, size=(n, 28, 28))
    images = np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8)
    return images, labels


def make_synthetic_splits(
    n_train: int = 2000,
    n_val: int = 500,
    n_test: int = 500,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> DataSplits:
    """In-memory `DataSplits` of synthetic images, normalised like MNIST."""
    images, labels = synthetic_images(n_train + n_val + n_test, seed)
    spec = DATASETS["mnist"]
    x = normalise(torch.from_numpy(images), spec.mean, spec.std).to(device)
    y = torch.from_numpy(labels).long().to(device)
    a, b = n_train, n_train + n_val
    return DataSplits(
        name="synthetic",
        train_x=x[:a],
        train_y=y[:a],
        val_x=x[a:b],
        val_y=y[a:b],
        test_x=x[b:],
        test_y=y[b:],
        checksum=f"synthetic-{n_train}-{n_val}-{n_test}-{seed}",
        mean=spec.mean,
        std=spec.std,
    )


def write_synthetic_idx(
    root: Path, n_train: int = 600, n_test: int = 100, seed: int = 0, base: str = "mnist"
) -> tuple[Path, DatasetSpec]:
    """Write synthetic train/test IDX files under `root` in torchvision's layout for `base`.

    Returns the raw folder and a `DatasetSpec` (same torchvision class as `base`) whose expected
    MD5s and counts match the files written.
    """
    spec = DATASETS[base]
    raw_dir = spec.raw_dir(Path(root))
    for prefix, n, split_seed in (("train", n_train, seed), ("t10k", n_test, seed + 1)):
        images, labels = synthetic_images(n, split_seed)
        write_idx(raw_dir / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw_dir / f"{prefix}-labels-idx1-ubyte", labels)
    md5s = {path.name: md5_of(path) for path in raw_dir.iterdir() if "idx" in path.name}
    synthetic_spec = dataclasses.replace(
        spec,
        name=f"synthetic_{base}",
        raw_md5=md5s,
        train_count=n_train,
        test_count=n_test,
        pypi_mirror=False,
    )
    return raw_dir, synthetic_spec
