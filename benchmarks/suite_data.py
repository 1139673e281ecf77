"""The suite's data, loaded once for every section: real MNIST (and Fashion-MNIST where its
section runs), or small synthetic IDX files with --synthetic; cut to quick mode's sizes.

    mnist, data_root, fashion = load_data(config, settings, device, scratch, log=print)
"""

from __future__ import annotations

from pathlib import Path

import torch

from benchmarks.config import BenchConfig
from benchmarks.profiles import Settings
from softmaxreg.data import DataError, DataSplits, load_splits
from softmaxreg.synthetic import write_synthetic_idx


def load_data(
    config: BenchConfig, settings: Settings, device: torch.device, scratch: Path, log
) -> tuple[DataSplits, Path, DataSplits | str | None]:
    """(MNIST splits, the data folder they came from, Fashion-MNIST splits, or why they could not
    be loaded, or None when no section needs them)."""
    need_fashion = "fashion_mnist" in config.sections
    if config.synthetic:
        root = scratch / "data"
        splits = []
        for seed, base in ((0, "mnist"), (7, "fashion_mnist")):
            if base == "fashion_mnist" and not need_fashion:
                splits.append(None)
                continue
            _, spec = write_synthetic_idx(
                root,
                n_train=settings.synthetic_train,
                n_test=settings.synthetic_test,
                seed=seed,
                base=base,
            )
            splits.append(
                load_splits(
                    spec, root, device=device, val_size=settings.synthetic_val, sources=("local",)
                )
            )
        return splits[0], root, splits[1]
    root_arg = config.data_root or None
    mnist = load_splits("mnist", root_arg, device=device, log=log)
    fashion = load_fashion(root_arg, device, log) if need_fashion else None
    if isinstance(fashion, DataSplits):
        fashion = limit(fashion, settings)
    return limit(mnist, settings), Path(mnist.info["raw_dir"]).parent.parent, fashion


def load_fashion(root: str | None, device: torch.device, log) -> DataSplits | str:
    """Fashion-MNIST, or why it cannot be had here. Only its own section needs it, so a machine
    that cannot fetch it (offline, no local copy) skips that section instead of the whole run."""
    try:
        return load_splits("fashion_mnist", root, device=device, log=log)
    except DataError as error:
        log(f"Fashion-MNIST is not available, its section will be skipped: {error}")
        return f"skipped: Fashion-MNIST could not be loaded ({error})"


def limit(data: DataSplits, settings: Settings) -> DataSplits:
    """The first `max_*_examples` of each split (quick mode on real data), else `data` itself."""
    n_train, n_eval = settings.max_train_examples, settings.max_eval_examples
    if n_train is None and n_eval is None:
        return data
    return DataSplits(
        name=data.name,
        train_x=data.train_x[:n_train],
        train_y=data.train_y[:n_train],
        val_x=data.val_x[:n_eval],
        val_y=data.val_y[:n_eval],
        test_x=data.test_x[:n_eval],
        test_y=data.test_y[:n_eval],
        checksum=data.checksum,
        mean=data.mean,
        std=data.std,
        info={**data.info, "sliced": f"first {n_train} train / {n_eval} val / {n_eval} test"},
    )
