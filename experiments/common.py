"""Plumbing shared by the entry points: flags from config dataclasses, data with clear errors."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from softmaxreg.cli import add_dataclass_arguments, dataclass_from_args
from softmaxreg.config import DataConfig, TrainConfig
from softmaxreg.data import DataError, DataSplits, load_splits

# --help's group titles, the same in every entry point (the sweep adds what is shared by trials).
GROUP_TITLES: dict[type, str] = {TrainConfig: "training", DataConfig: "data"}


def parse_configs(
    parser: argparse.ArgumentParser, argv: list[str] | None, *classes: type
) -> tuple[Any, ...]:
    """Add every field of `classes` as flags, parse `argv`, build and validate each config.

    Unknown flags and invalid values end the process with status 2 and a message naming the flag.
    """
    for cls in classes:
        add_dataclass_arguments(parser, cls, title=GROUP_TITLES.get(cls))
    args = parser.parse_args(argv)
    return tuple(dataclass_from_args(parser, cls, args) for cls in classes)


def say(line: str) -> None:
    """Write `line` and its newline to stderr in one call, so it reaches the pipe as one write.

    `--workers N` forks workers that share their command's stderr, and with PYTHONUNBUFFERED
    (or `python -u`) `print` writes a text and its newline in two calls: two workers' lines
    then splice ("... waiting up to 120 sOptuna's storage ... waiting up to 120 s", then two
    bare newlines). A write of under PIPE_BUF (4 KiB) bytes to a pipe is atomic.
    """
    sys.stderr.write(f"{line}\n")
    sys.stderr.flush()


def load_data_or_exit(config: DataConfig, device: torch.device) -> DataSplits:
    """Load (fetching and verifying if needed) the configured dataset, or exit 1 with the reason."""
    try:
        return load_splits(
            config.dataset,
            config.data_root or None,
            device=device,
            val_size=config.val_size,
            split_seed=config.split_seed,
            log=say,
        )
    except DataError as error:
        say(f"error: {error}")
        raise SystemExit(1) from error
