"""What every benchmark shares: robust statistics, thread control, results and their tables.

A benchmark is a function `run(context) -> SectionResult`. The result carries its tables (each
becomes a CSV and a Markdown table), its plots, its headline figures (MLflow metrics) and its
checks (a ratio, its target, met or not); `benchmarks.report` ties them into report.md and
`benchmarks.recording` logs each one as an MLflow run.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd
import torch

from benchmarks.config import BenchConfig
from benchmarks.profiles import Settings
from softmaxreg.data import DataSplits
from softmaxreg.device import DeviceUnavailableError, resolve_device
from softmaxreg.device import torch_threads as torch_threads  # re-exported: one implementation


@dataclass(frozen=True)
class Spread:
    """Median and spread of repeated timings (min, max and the interquartile range)."""

    median: float
    minimum: float
    maximum: float
    q1: float
    q3: float
    n: int
    values: tuple[float, ...] = ()
    """The measurements themselves, in the order taken."""

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        taken = tuple(values)
        ordered = sorted(taken)
        if not ordered:
            nan = math.nan
            return cls(nan, nan, nan, nan, nan, 0)
        if len(ordered) == 1:
            q1 = q3 = ordered[0]
        else:
            q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
        median = statistics.median(ordered)
        return cls(median, ordered[0], ordered[-1], q1, q3, len(ordered), taken)


def all_threads() -> int:
    """Every logical CPU of the machine: the 'all threads' column of the scaling benchmark."""
    return os.cpu_count() or 1


def available_devices() -> list[torch.device]:
    """cpu, plus cuda and mps when present: the devices the scaling benchmark covers."""
    devices = [torch.device("cpu")]
    for name in ("cuda", "mps"):
        with contextlib.suppress(DeviceUnavailableError):  # not on this machine
            devices.append(resolve_device(name))
    return devices


class NotMeasured(Exception):
    """A benchmark cannot run here (what it measures does not exist); reported, not a failure."""


@dataclass
class Check:
    """One figure against its target: what the report's summary table lists."""

    figure: str
    value: float | None
    target: str
    met: bool | None
    """None when the figure could not be measured."""
    note: str = ""

    @property
    def verdict(self) -> str:
        return {True: "met", False: "MISSED", None: "not measured"}[self.met]


@dataclass
class Table:
    """A table of results: written as `<name>.csv` and shown in the report."""

    name: str
    title: str
    frame: pd.DataFrame
    show: bool = True
    """False for long raw tables that the report only links."""


FigureKind = Literal["timed", "accuracy"]
Better = Literal["lower", "higher"]


@dataclass(frozen=True)
class Rounds:
    """Every round of one figure, as measured: what `benchmarks.compare` judges noise by.

    A timed figure's rounds are its repeats (alternating rounds, passes, runs); an accuracy
    figure's are its seeds. Figures are matched across runs by `figure`, so it names what was
    measured and nothing run-specific."""

    figure: str
    values: tuple[float, ...]
    kind: FigureKind = "timed"
    better: Better = "lower"
    """Which way is an improvement: lower for seconds and slowdowns, higher for speed-ups,
    throughput and accuracy."""
    unit: str = "s"


@dataclass
class SectionResult:
    """Everything one benchmark produced."""

    key: str
    title: str
    text: list[str] = field(default_factory=list)
    """Markdown paragraphs: what was measured and how to read it."""
    tables: list[Table] = field(default_factory=list)
    plots: list[tuple[str, str]] = field(default_factory=list)
    """(file name in the results folder, caption)."""
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    headlines: list[tuple[str, str]] = field(default_factory=list)
    """(figure, value as text): key figures without a target, listed in the report's summary."""
    seconds: float = 0.0
    load: tuple[float, float] = (math.nan, math.nan)
    """1-minute load average of the machine when the benchmark started and ended."""
    run_id: str = ""
    rounds: list[Rounds] = field(default_factory=list)
    """Every round of every timed figure and every seed of every accuracy figure."""

    def add_rounds(
        self,
        figure: str,
        values: Sequence[float],
        *,
        kind: FigureKind = "timed",
        better: Better = "lower",
        unit: str = "s",
    ) -> None:
        self.rounds.append(Rounds(figure, tuple(float(v) for v in values), kind, better, unit))

    def add_rounds_by(
        self,
        frame: pd.DataFrame,
        by: Sequence[str],
        value: str,
        label: str,
        *,
        kind: FigureKind = "timed",
        better: Better = "lower",
        unit: str = "s",
    ) -> None:
        """One figure per group of `frame` by the `by` columns, named `label.format(**group)`,
        its rounds the group's `value` column in the order measured."""
        for keys, group in frame.groupby(list(by), sort=False):
            names = dict(zip(by, keys if isinstance(keys, tuple) else (keys,), strict=True))
            self.add_rounds(
                label.format(**names), group[value].tolist(), kind=kind, better=better, unit=unit
            )


class Progress:
    """Per-section progress lines on stderr, with the elapsed wall time of the whole run."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def line(self, message: str) -> None:
        print(f"[{self.elapsed:6.1f} s] {message}", file=sys.stderr, flush=True)


@dataclass
class Context:
    """What a benchmark runs with: the configuration, the data, where to write."""

    config: BenchConfig
    settings: Settings
    out: Path
    device: torch.device
    mnist: DataSplits
    mnist_root: Path
    """Data folder holding the MNIST raw files `mnist` was loaded from (torchvision layout)."""
    fashion: DataSplits | str | None
    """Fashion-MNIST; a string says why it could not be loaded; None when no section needs it."""
    progress: Progress
    tracking_uri: str
    store_dir: Path
    """A scratch folder for throw-away stores (tracking overhead, sweep throughput)."""
