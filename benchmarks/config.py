"""The benchmark suite's command line: `BenchConfig`, and the sections it can run.

`BenchConfig` is the single source of the CLI: every field becomes a flag through
`softmaxreg.cli`, with its docstring as help; invalid values exit with status 2 before any work.
Its `settings` are the sizes of every benchmark, one preset per `--profile`
(`benchmarks.profiles`: `STANDARD`, `FULL`, `QUICK`), which a few of its fields override.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, get_args

from benchmarks.profiles import FULL, PROFILES, QUICK, STANDARD, ProfileName, Settings
from softmaxreg.config import DEVICE_CHOICES, DeviceName, require, require_choice, require_int

SectionName = Literal[
    "tutorial_speed",
    "scaling",
    "time_to_accuracy",
    "tutorial_bug",
    "tracking_overhead",
    "sweep_throughput",
    "sweep_workers",
    "fashion_mnist",
    "accuracy_ceiling",
    "contention",
    "population",
    "population_sweep",
    "startup",
    "bookkeeping",
]
SECTIONS: tuple[str, ...] = get_args(SectionName)  # one list: the Literal is the source


@dataclass(frozen=True)
class BenchConfig:
    """Run the softmaxreg benchmark suite and write its report."""

    out: str = "./benchmark-results"
    """Results folder for report.md, one CSV per table and the PNG plots (created if missing;
    files of an earlier run are overwritten)."""

    data_root: str = ""
    """Data folder with MNIST and Fashion-MNIST (fetched and verified like experiments.train when
    missing). Empty means $SOFTMAXREG_DATA if set, else ./data."""

    tracking_uri: str = ""
    """MLflow tracking URI of the `benchmarks` experiment. Empty means sqlite:///<out>/mlflow.db
    with artifacts in <out>/mlartifacts."""

    profile: ProfileName = "standard"
    """Sizes of every benchmark: standard (~10 min here, every headline figure with enough
    rounds to compare runs), full (the committed report, 35-45 min) or quick (as --quick)."""

    quick: bool = False
    """Smoke check in under a minute (the same as --profile quick): tiny sizes, one repeat; its
    figures mean nothing."""

    synthetic: bool = False
    """Use small synthetic IDX data written to a temporary folder instead of (Fashion-)MNIST, so
    no download is needed (tests use it with --quick)."""

    sections: tuple[SectionName, ...] = SECTIONS  # type: ignore[assignment]
    """Benchmarks to run, in the report's order."""

    device: DeviceName = "auto"
    """Device of every benchmark except scaling, which runs on each available device."""

    threads: int = 0
    """torch intra-op threads for every benchmark except scaling (which measures 1 and all); 0
    keeps torch's default. 1 avoids multi-threaded slowdowns when other processes load the
    CPUs."""

    seeds: int | None = None
    """Seeds per configuration in time-to-accuracy and the tutorial ablation (unset: 5, quick 2)."""

    repeats: int | None = None
    """Interleaved passes of the scaling benchmark, each timing 2 epochs per configuration after
    a warm-up epoch (unset: 3, quick 1)."""

    rounds: int | None = None
    """Alternating rounds of tutorial vs trainer, at each thread count (unset: 3, quick 1)."""

    def __post_init__(self) -> None:
        require(bool(self.out), "out", self.out, "a folder path")
        require(
            len(self.sections) > 0 and len(set(self.sections)) == len(self.sections),
            "sections",
            self.sections,
            "one or more distinct section names",
        )
        for section in self.sections:
            require_choice(section, "sections", SECTIONS)
        require_choice(self.device, "device", DEVICE_CHOICES)
        require_choice(self.profile, "profile", PROFILES)
        require(
            not self.quick or self.profile in ("quick", "standard"),
            "quick",
            self.quick,
            f"--quick alone: it is --profile quick, and contradicts --profile {self.profile}",
        )
        require_int(self.threads, "threads", 0)
        for name in ("seeds", "repeats", "rounds"):
            value = getattr(self, name)
            if value is not None:
                require_int(value, name, 1)

    @property
    def profile_name(self) -> ProfileName:
        """The profile this run uses: --quick is --profile quick."""
        return "quick" if self.quick else self.profile

    @property
    def is_quick(self) -> bool:
        return self.profile_name == "quick"

    @property
    def settings(self) -> Settings:
        """The sizes this run uses: the preset, with any overrides from the flags applied."""
        preset = {"quick": QUICK, "standard": STANDARD, "full": FULL}[self.profile_name]
        overrides = {
            "seeds": self.seeds,
            "scaling_passes": self.repeats,
            "tutorial_rounds": self.rounds,
        }
        return dataclasses.replace(preset, **{k: v for k, v in overrides.items() if v is not None})
