"""Bookkeeping per trial: many short population trials, before and after, side by side.

Each run is `benchmarks/bookkeeping_probe.py` in a process of its own on fresh SQLite stores:
the sweep's own trial loop (`experiments.worker.run_trials`, TPE, no pruning, `--population`
K, one-epoch trials at batch sizes 1024 and 4096 on MNIST), timed part by part on the main
thread (see the probe: arithmetic, the rest of the library, Optuna's ask, Optuna's writes,
MLflow, other). "After" is this tree's code; "before" is the code of `BASELINE_COMMIT` (the
last commit before bookkeeping left the hot path) taken from git into a scratch folder, run by
the same probe. Runs alternate (before, after, after, before, ...) so a busy spell of this
shared machine hits both; the load average is recorded with every run.

Bookkeeping per trial = (wall time of the loop - arithmetic - library) / trials: everything the
sweep does around the training, measured where it is paid, on the main thread, with the MLflow
queue's drain included (the loop returns only once every run matches its trial).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pandas as pd

from benchmarks.common import Check, Context, NotMeasured, SectionResult, Table

BASELINE_COMMIT = "ae94bb1"
"""main before issue 14's bookkeeping work: Optuna writes per member and epoch, MLflow inline."""
TARGET_MS = 25.0
PARTS = ("arithmetic", "library", "optuna_ask", "optuna_writes", "mlflow", "other")
REPO = Path(__file__).resolve().parent.parent
PROBE = Path(__file__).resolve().parent / "bookkeeping_probe.py"


def baseline_tree(scratch: Path) -> Path:
    """`experiments/` and `softmaxreg/` as they were at `BASELINE_COMMIT`, in `scratch`."""
    archive = scratch / "baseline.tar"
    done = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", "-o", str(archive),
         BASELINE_COMMIT, "experiments", "softmaxreg"],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise NotMeasured(f"no 'before': git cannot give commit {BASELINE_COMMIT} here "
                          f"({done.stderr.strip()[:200]})")  # fmt: skip
    root = scratch / "baseline"
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    return root


def one_run(context: Context, code: Path, version: str, index: int) -> dict[str, object]:
    settings = context.settings
    folder = (context.store_dir / f"bookkeeping-{version}-{index}").resolve()
    out = folder / "probe.json"
    argv = [
        sys.executable, str(PROBE), "--folder", str(folder),
        "--data-root", str(context.mnist_root.resolve()),
        "--trials", str(settings.bookkeeping_trials),
        "--warmup-trials", str(settings.bookkeeping_population),
        "--population", str(settings.bookkeeping_population), "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(code)}
    load_before = os.getloadavg()[0]
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{version} probe exited {done.returncode}: {done.stderr[-2000:]}")
    probe = json.loads(out.read_text())
    trials = probe["trials"]
    row: dict[str, object] = {"version": version, "run": index, "trials": trials}
    for part in PARTS:
        row[f"{part}_ms"] = 1000 * probe["seconds"].get(part, 0.0) / trials
    row["wall_ms"] = 1000 * probe["wall_seconds"] / trials
    row["bookkeeping_ms"] = row["wall_ms"] - row["arithmetic_ms"] - row["library_ms"]
    cpu = probe.get("cpu_seconds", {})
    for part in (*PARTS, "other_threads"):
        row[f"{part}_cpu_ms"] = 1000 * cpu.get(part, 0.0) / trials
    # CPU that bookkeeping costs, wherever it runs (the MLflow queue's thread included).
    row["bookkeeping_cpu_ms"] = (
        sum(row[f"{part}_cpu_ms"] for part in ("optuna_ask", "optuna_writes", "mlflow", "other"))
        + row["other_threads_cpu_ms"]
    )
    for name, count in probe.get("counts", {}).items():
        kind, store = name.split(":")
        row[f"{store.removesuffix('.db')}_{kind}"] = count / trials
    row["load_before"], row["load_after"] = load_before, os.getloadavg()[0]
    row["complete"] = probe["states"].get("COMPLETE", 0)
    return row


def statement_counts(row: pd.Series) -> str:
    """ "Optuna / MLflow" statements per trial; MLflow's are not seen where a child process of
    the worker writes them (`experiments.mirror_process`)."""
    optuna_count, mlflow_count = (
        row.get(f"{s}_statements", math.nan) for s in ("optuna", "mlflow")
    )
    mlflow_text = (
        "made in the mirror's process" if math.isnan(mlflow_count) else f"{mlflow_count:.0f}"
    )
    return f"{optuna_count:.0f} / {mlflow_text}"


def run_order(rounds: int) -> list[str]:
    order: list[str] = []
    for round_index in range(rounds):
        pair = ["before", "after"] if round_index % 2 == 0 else ["after", "before"]
        order += pair
    return order


def run(context: Context) -> SectionResult:
    if context.config.synthetic:
        raise NotMeasured(
            "the probe loads MNIST through the command line, which verifies the real files; "
            "synthetic data cannot stand in"
        )
    settings = context.settings
    if settings.bookkeeping_rounds == 0:
        raise NotMeasured("a figure of the full profile (--profile full), or --quick")
    with tempfile.TemporaryDirectory(prefix="bookkeeping-baseline-") as scratch:
        codes = {"before": baseline_tree(Path(scratch)), "after": REPO}
        rows = []
        for index, version in enumerate(run_order(settings.bookkeeping_rounds)):
            context.progress.line(f"  bookkeeping: run {index + 1}, {version}")
            rows.append(one_run(context, codes[version], version, index))
    frame = pd.DataFrame(rows)
    columns = [f"{part}_ms" for part in PARTS] + ["bookkeeping_ms", "wall_ms"]
    columns += ["bookkeeping_cpu_ms", "other_threads_cpu_ms"]
    columns += [c for c in frame.columns if c.endswith(("_statements", "_commits"))]
    summary = frame.groupby("version", sort=False)[columns].median().reindex(["before", "after"])
    loads = frame.groupby("version")[["load_before", "load_after"]].agg(["min", "max"])
    summary = summary.round(1).reset_index()
    indexed = summary.set_index("version")
    before, after = (float(indexed.loc[v, "bookkeeping_ms"]) for v in ("before", "after"))
    cpu_before, cpu_after = (
        float(indexed.loc[v, "bookkeeping_cpu_ms"]) for v in ("before", "after")
    )
    load_text = ", ".join(
        f"{v}: {loads.loc[v].min():.1f}–{loads.loc[v].max():.1f}" for v in ("before", "after")
    )
    result = SectionResult(key="bookkeeping", title="Bookkeeping per trial (population mode)")
    result.text.append(
        f"{settings.bookkeeping_trials} one-epoch trials (TPE, no pruning, --population "
        f"{settings.bookkeeping_population}, batch sizes 1024/4096, MNIST) after a warm-up pass, "
        f"on fresh SQLite stores, the sweep's own trial loop; before = commit {BASELINE_COMMIT}, "
        f"after = this code, alternated ({' '.join(run_order(settings.bookkeeping_rounds))}), "
        f"medians, ms per trial on the main thread. **Bookkeeping {before:.0f} → {after:.0f} ms "
        f"per trial** ({before / after:.1f}× less; load average {load_text}). The CPU it "
        f"costs, on every thread and in the mirror's process (the MLflow queue's included): "
        f"{cpu_before:.0f} → {cpu_after:.0f} ms per trial. SQL statements per trial in the "
        "worker's process, Optuna / MLflow: "
        + " → ".join(statement_counts(indexed.loc[v]) for v in ("before", "after"))
        + "."
    )
    result.tables += [
        Table("bookkeeping", "Milliseconds per trial, by part", summary),
        Table("bookkeeping_runs", "Every run", frame, show=False),
    ]
    result.metrics = {"bookkeeping_ms_before": before, "bookkeeping_ms_after": after}
    for version in ("before", "after"):
        row = indexed.loc[version]
        result.metrics.update({f"{c}_{version}": float(row[c]) for c in columns})
    result.params = {
        "trials": str(settings.bookkeeping_trials),
        "population": str(settings.bookkeeping_population),
        "baseline": BASELINE_COMMIT,
    }
    result.checks.append(
        Check(
            "bookkeeping per trial, population mode (ms, amortised)",
            after,
            f"≤ {TARGET_MS:g} ms",
            bool(after <= TARGET_MS),
            note=f"before: {before:.0f} ms; CPU {cpu_before:.0f} → {cpu_after:.0f} ms",
        )
    )
    result.add_rounds_by(
        frame, ["version"], "bookkeeping_ms", "bookkeeping per trial, {version}", unit="ms"
    )
    result.headlines.append(
        ("bookkeeping per trial (population 16)", f"{before:.0f} → {after:.0f} ms")
    )
    return result
