"""Compare two suite runs figure by figure: did it get faster, slower, or is it noise?

    python -m benchmarks.compare BASE NEW                      # Markdown table on stdout
    python -m benchmarks.compare main-results branch-results --out cmp   # + cmp/comparison.md, .png
    python -m benchmarks.compare 0f3c...e1 7a9d...42 --tracking-uri sqlite:///bench/mlflow.db
    python -m benchmarks.compare BASE NEW --fail-on-regression 10     # exit 1 on a >10% slowdown

Each side is a results folder written by `python -m benchmarks --out FOLDER` (its rounds.csv and
environment.json) or the id of a suite run in the MLflow experiment `benchmarks` (the same two
files, logged as the run's artifacts). A run id is looked up at `--tracking-uri`, by default
the store `python -m benchmarks` writes: sqlite:///./benchmark-results/mlflow.db.

The verdict rule, per figure (its rounds: repeats of a timed figure, seeds of an accuracy one):
- Each side's value is the median of its rounds, and its noise band a distribution-free
  confidence interval of that median: the order statistics [x(k), x(n+1-k)] with the largest k
  whose coverage 1 - 2 P(Binomial(n, 1/2) < k) is at least 95 %; with n <= 5 rounds that is the
  whole range (coverage 1 - 2^(1-n): 75 % at 3 rounds, 94 % at 5). No normality is assumed
  (timings are skewed by the machine's other work) and a single outlier round cannot move it.
- A timed figure is *slower* (or *faster*) when the two bands do not overlap AND the medians
  differ by more than `--threshold` (default 10 %, asv's default factor of 1.1): disjoint bands
  say the change is larger than each run's own scatter, the threshold that it is larger than
  the drift between two runs of the same commit on a shared machine, which rounds within one
  run do not see. Otherwise *unchanged*. A figure with fewer than 2 rounds on a side has no band
  and is reported, never judged.
- An accuracy figure is *better* or *worse* when its seed bands do not overlap (no threshold:
  the seed spread is the noise, and the same seeds give the same accuracies on the same build).
Why not Mann-Whitney (pyperf's test): with 3 rounds a side its smallest two-sided p is 0.10, so
it could never call a change; the band rule works from 2 rounds and tightens as rounds grow.

`--fail-on-regression [PCT]` (default PCT = the threshold) exits 1 when a timed figure is slower
by that verdict and by more than PCT %; the table is still printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmarks.recording import EXPERIMENT_NAME
from benchmarks.report import ENVIRONMENT_NAME, ROUNDS_COLUMNS, ROUNDS_NAME
from experiments.third_party_warnings import hide_third_party_warnings

DEFAULT_TRACKING_URI = "sqlite:///benchmark-results/mlflow.db"
COVERAGE = 0.95


class CompareError(Exception):
    """A side cannot be read: names the argument and what is wrong with it."""


@dataclass(frozen=True)
class Side:
    """One run to compare: where it came from, every round of every figure, its environment."""

    label: str
    rounds: pd.DataFrame
    environment: dict


@dataclass(frozen=True)
class Band:
    """Median of a figure's rounds and the confidence interval of that median."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Band:
        ordered = sorted(v for v in values if not math.isnan(v))
        n = len(ordered)
        if n == 0:
            return cls(math.nan, math.nan, math.nan, 0)
        k = order_statistic(n)
        median = float(pd.Series(ordered).median())
        return cls(median, ordered[k - 1], ordered[n - k], n)

    @property
    def relative_half_width(self) -> float:
        return (self.high - self.low) / 2 / self.median if self.median else math.nan


def order_statistic(n: int) -> int:
    """The largest k (1-based) whose [x(k), x(n+1-k)] covers the median with >= COVERAGE; 1 when
    even the full range covers less (n <= 5)."""
    best = 1
    for k in range(1, n // 2 + 1):
        below = sum(math.comb(n, i) for i in range(k)) / 2**n  # P(Binomial(n, 1/2) < k)
        if 1 - 2 * below >= COVERAGE:
            best = k
    return best


def verdict(base: Band, new: Band, kind: str, better: str, threshold: float) -> str:
    """faster / slower / unchanged for a timed figure, better / worse / unchanged for accuracy."""
    if base.n < 2 or new.n < 2:
        return "no band"
    ratio = new.median / base.median if base.median else math.nan
    limit = 0.0 if kind == "accuracy" else threshold
    went_up = new.low > base.high and ratio > 1 + limit
    went_down = new.high < base.low and ratio < 1 / (1 + limit)
    if not (went_up or went_down):
        return "unchanged"
    improved = went_down if better == "lower" else went_up
    if kind == "accuracy":
        return "better" if improved else "worse"
    return "faster" if improved else "slower"


def slowdown(row: pd.Series) -> float:
    """How many times slower the new run is (> 1 slower), whichever way the figure improves."""
    ratio = row.new / row.base
    return ratio if row.better == "lower" else 1 / ratio


def compare(base: Side, new: Side, threshold: float) -> pd.DataFrame:
    """One row per figure in either run: both medians, bands, rounds, the ratio and the verdict."""
    keys = ["section", "figure"]
    columns = [*keys, "kind", "better", "unit"]
    figures = pd.concat([base.rounds[columns], new.rounds[columns]])
    rows = []
    for (section, figure), info in figures.groupby(keys, sort=False):
        first = info.iloc[0]
        bands = [band_of(side.rounds, section, figure) for side in (base, new)]
        row = {
            "section": section,
            "figure": figure,
            "kind": first.kind,
            "better": first.better,
            "unit": first.unit,
            "base": bands[0].median,
            "base_low": bands[0].low,
            "base_high": bands[0].high,
            "base_n": bands[0].n,
            "new": bands[1].median,
            "new_low": bands[1].low,
            "new_high": bands[1].high,
            "new_n": bands[1].n,
        }
        row["ratio"] = row["new"] / row["base"] if row["base"] else math.nan
        if bands[0].n == 0 or bands[1].n == 0:
            row["verdict"] = "only in " + ("new" if bands[0].n == 0 else "base")
        else:
            row["verdict"] = verdict(bands[0], bands[1], first.kind, first.better, threshold)
        rows.append(row)
    return pd.DataFrame(rows)


def band_of(rounds: pd.DataFrame, section: str, figure: str) -> Band:
    values = rounds[(rounds.section == section) & (rounds.figure == figure)].value
    return Band.of(values.astype(float).tolist())


def regressions(table: pd.DataFrame, percent: float) -> pd.DataFrame:
    """Timed figures judged slower and slower by more than `percent` %."""
    slower = table[(table.kind == "timed") & (table.verdict == "slower")]
    if slower.empty:
        return slower
    return slower[slower.apply(slowdown, axis=1) > 1 + percent / 100]


def read_folder(folder: Path, label: str) -> Side:
    missing = [name for name in (ROUNDS_NAME, ENVIRONMENT_NAME) if not (folder / name).is_file()]
    if missing:
        raise CompareError(
            f"{label} {folder}: no {' or '.join(missing)} (not a results folder of "
            "`python -m benchmarks --out`, or written before rounds were recorded)"
        )
    rounds = pd.read_csv(folder / ROUNDS_NAME)
    absent = [c for c in ROUNDS_COLUMNS if c not in rounds.columns]
    if absent:
        raise CompareError(f"{label} {folder / ROUNDS_NAME}: missing columns {absent}")
    environment = json.loads((folder / ENVIRONMENT_NAME).read_text(encoding="utf-8"))
    return Side(str(folder), rounds, environment)


def read_run(run_id: str, tracking_uri: str, label: str) -> Side:
    """The suite run's rounds.csv and environment.json artifacts, from the MLflow store."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as error:
        raise CompareError(f"{label} {run_id}: no such run at {tracking_uri} ({error})") from None
    experiment = client.get_experiment(run.info.experiment_id)
    if experiment.name != EXPERIMENT_NAME or run.data.tags.get("benchmark") != "suite":
        raise CompareError(
            f"{label} {run_id}: not a suite run of experiment `{EXPERIMENT_NAME}` "
            f"(experiment `{experiment.name}`, benchmark tag {run.data.tags.get('benchmark')!r})"
        )
    with tempfile.TemporaryDirectory(prefix="softmaxreg-compare-") as scratch:
        for name in (ROUNDS_NAME, ENVIRONMENT_NAME):
            with contextlib.suppress(MlflowException, OSError):  # read_folder names what's missing
                client.download_artifacts(run_id, name, scratch)
        side = read_folder(Path(scratch), f"{label} run {run_id}:")
    return Side(f"run {run_id}", side.rounds, side.environment)


def read_side(spec: str, tracking_uri: str, label: str) -> Side:
    path = Path(spec)
    if path.is_dir():
        return read_folder(path, label)
    if len(spec) == 32 and all(c in "0123456789abcdef" for c in spec):
        return read_run(spec, tracking_uri, label)
    raise CompareError(
        f"{label} {spec!r}: neither a results folder nor an MLflow run id (32 hex digits)"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare",
        description="Compare two benchmark suite runs: one row per figure, with noise bands.",
    )
    parser.add_argument("base", help="results folder or suite run id of the baseline")
    parser.add_argument("new", help="results folder or suite run id of the change")
    parser.add_argument(
        "--tracking-uri",
        default=DEFAULT_TRACKING_URI,
        help="MLflow store holding run ids given as BASE or NEW (default: %(default)s)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=10.0,
        help="percent a timed figure's median must move, beyond its noise bands, to be called "
        "faster or slower (default: %(default)s)",
    )
    parser.add_argument(
        "--fail-on-regression",
        type=float,
        nargs="?",
        const=-1.0,
        default=None,
        metavar="PCT",
        help="exit 1 if a timed figure is slower beyond its noise and by more than PCT %% "
        "(default PCT: the threshold)",
    )
    parser.add_argument("--out", default="", help="folder for comparison.md and comparison.png")
    args = parser.parse_args(argv)
    if not (args.threshold >= 0 and math.isfinite(args.threshold)):
        parser.error(f"--threshold {args.threshold}: expected a percentage >= 0")
    if args.fail_on_regression == -1.0:  # the flag without a value
        args.fail_on_regression = args.threshold
    failing = args.fail_on_regression
    if failing is not None and not (failing >= 0 and math.isfinite(failing)):
        parser.error(f"--fail-on-regression {failing}: expected PCT >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    hide_third_party_warnings()
    from benchmarks.compare_report import environment_warnings, markdown, plot_ratios

    args = parse_args(argv)
    try:
        base = read_side(args.base, args.tracking_uri, "BASE")
        new = read_side(args.new, args.tracking_uri, "NEW")
    except CompareError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    table = compare(base, new, args.threshold / 100)
    warnings = environment_warnings(base.environment, new.environment)
    text = markdown(base, new, table, warnings, args.threshold)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "comparison.md").write_text(text, encoding="utf-8")
        plot_ratios(table, out / "comparison.png")
    if args.fail_on_regression is not None:
        failed = regressions(table, args.fail_on_regression)
        if not failed.empty:
            print(
                f"{len(failed)} timed figure(s) slower beyond noise and "
                f"{args.fail_on_regression:g}%: " + "; ".join(failed.figure),
                file=sys.stderr,
            )
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
