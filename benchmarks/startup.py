"""Start-up: the fixed cost of a 1-trial sweep against the bare imports, and workers' memory.

    python -m benchmarks.startup --data-root ./data            # 3 rounds, then 1/2/4 workers
    python -m benchmarks.startup --data-root ./data --rounds 1 --no-memory

Fixed cost = wall time of `python -m experiments.sweep --n-trials 1 --epochs 1 --batch-sizes
1024` in a fresh folder (new SQLite stores) minus its trial's own duration (as Optuna stored
it): everything a run pays besides training. It is compared with `python -c "import torch,
mlflow, optuna"` timed in the same round (interpreter start included in both), rounds
alternating the two so a slow spell of a shared machine hits both; the target is <= 2x. The
sweep leaves without the interpreter's teardown (`experiments.process_exit`) and that bare
command pays it (about 1 s with torch), so the imports are also timed leaving by `os._exit`,
and the fixed cost is given against that stricter floor too. The
data cache is warmed first (one run, reported as the cold start), as a second run on a machine
finds it.

Memory: `--workers N` for N = 1, 2, 4 with 1-epoch trials, sampling every process of the
command (the command and its forked workers) every 0.1 s: the peak of the summed PSS (shared
pages counted once, split between the processes that map them: the machine's real cost) and of
the summed RSS (shared pages counted in every process: what `ps` adds up to).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmarks.common import Check, Context, NotMeasured, SectionResult, Table
from experiments.third_party_warnings import hide_third_party_warnings

REPO_ROOT = Path(__file__).resolve().parent.parent
SWEEP = ["--n-trials", "1", "--epochs", "1", "--batch-sizes", "1024", "--quiet"]
TARGET_RATIO = 2.0


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


BARE_IMPORTS = "import torch, mlflow, optuna"
BARE_IMPORTS_NO_TEARDOWN = f"{BARE_IMPORTS}, os; os._exit(0)"
"""The same imports leaving as the sweep does, without the interpreter's teardown."""


def bare_import_seconds(code: str = BARE_IMPORTS) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def trial_seconds(folder: Path) -> float:
    import optuna

    storage = f"sqlite:///{folder}/optuna.db"
    [summary] = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    return sum(t.duration.total_seconds() for t in study.trials if t.duration)


def sweep_seconds(data_root: Path, scratch: Path, tag: str) -> tuple[float, float]:
    """(wall seconds, trial seconds) of a 1-trial sweep in a new folder."""
    folder = scratch / tag
    folder.mkdir(parents=True)
    argv = [sys.executable, "-m", "experiments.sweep", *SWEEP, "--data-root", str(data_root)]
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=folder, env=environment(), capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"sweep exited {done.returncode}: {done.stderr[-2000:]}")
    return wall, trial_seconds(folder)


def fixed_cost_rounds(data_root: Path, scratch: Path, rounds: int) -> tuple[pd.DataFrame, float]:
    """Rows of (bare imports, sweep wall, trial, fixed cost) per round, and the cold run's fixed
    cost (the first sweep builds the data cache, if it was missing)."""
    cold_wall, cold_trial = sweep_seconds(data_root, scratch, "cold")
    rows = []
    for index in range(rounds):
        bare = bare_import_seconds()
        wall, trial = sweep_seconds(data_root, scratch, f"round-{index}")
        floor = bare_import_seconds(BARE_IMPORTS_NO_TEARDOWN)
        rows.append(
            {
                "round": index,
                "bare_imports_s": bare,
                "bare_imports_no_teardown_s": floor,
                "sweep_wall_s": wall,
                "trial_s": trial,
                "fixed_s": wall - trial,
                "ratio": (wall - trial) / bare,
                "ratio_no_teardown": (wall - trial) / floor,
                "load": os.getloadavg()[0],
            }
        )
    return pd.DataFrame(rows), cold_wall - cold_trial


@dataclass
class Memory:
    pss_mb: float
    rss_mb: float
    processes: int
    """The most processes of the command's tree seen at once: the command, its workers and,
    where plots are drawn apart, its plot server (`experiments.plot_server`), forked at the
    start and drawing at the end. Python processes only: a helper a library runs for a few
    milliseconds (`ldconfig -p` from ctypes' find_library, git) is neither counted nor summed."""


def tree(pid: int) -> list[int]:
    """`pid` and its descendants, from /proc's children lists."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        queue += [int(child) for child in children]
    return found


def python_processes(pids: list[int]) -> list[int]:
    """Those of `pids` running this Python (the command and what it forked)."""
    this_python = os.path.realpath(sys.executable)
    found = []
    for pid in pids:
        try:
            if os.readlink(f"/proc/{pid}/exe") == this_python:
                found.append(pid)
        except OSError:
            continue  # gone since it was listed
    return found


def rollup_kb(pid: int) -> tuple[int, int]:
    """(PSS, RSS) in kB of one process, from /proc/<pid>/smaps_rollup; (0, 0) once it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0, 0
    values = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("Pss:", "Rss:"):
            values[parts[0]] = int(parts[1])
    return values.get("Pss:", 0), values.get("Rss:", 0)


def workers_memory(data_root: Path, scratch: Path, workers: int) -> Memory:
    folder = scratch / f"memory-{workers}"
    folder.mkdir(parents=True)
    argv = [
        sys.executable, "-m", "experiments.sweep", "--workers", str(workers),
        "--n-trials", str(4 * workers), "--epochs", "2", "--batch-sizes", "1024",
        "--population", "1", "--quiet", "--data-root", str(data_root),
    ]  # fmt: skip
    process = subprocess.Popen(
        argv, cwd=folder, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    peak = Memory(0.0, 0.0, 0)
    while process.poll() is None:
        pids = python_processes(tree(process.pid))
        sizes = [rollup_kb(pid) for pid in pids]
        pss, rss = sum(s[0] for s in sizes) / 1024, sum(s[1] for s in sizes) / 1024
        peak = Memory(max(pss, peak.pss_mb), max(rss, peak.rss_mb), max(len(pids), peak.processes))
        time.sleep(0.1)
    if process.returncode != 0:
        raise RuntimeError(f"--workers {workers} exited {process.returncode}")
    return peak


def measure(data_root: Path, rounds: int, worker_counts: tuple[int, ...]) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="softmaxreg-startup-") as scratch:
        frame, cold = fixed_cost_rounds(data_root, Path(scratch), rounds)
        usage = {n: workers_memory(data_root, Path(scratch), n) for n in worker_counts}
    return {"rounds": frame, "cold_fixed_s": cold, "memory": usage}


def summary_lines(figures: dict[str, object]) -> list[str]:
    frame = figures["rounds"]
    ratio = statistics.median(frame.ratio)
    lines = [
        f"1-trial sweep: fixed cost {statistics.median(frame.fixed_s):.2f} s vs bare `import "
        f"torch, mlflow, optuna` {statistics.median(frame.bare_imports_s):.2f} s: "
        f"**{ratio:.2f}x** (median of {len(frame)} alternated rounds; target <= "
        f"{TARGET_RATIO:g}x); against the same imports leaving without the interpreter's "
        f"teardown, as the sweep does ({statistics.median(frame.bare_imports_no_teardown_s):.2f}"
        f" s): {statistics.median(frame.ratio_no_teardown):.2f}x; "
        f"cold start (data cache built) {figures['cold_fixed_s']:.2f} s; "
        f"load average {statistics.median(frame.load):.2f} on {os.cpu_count()} CPUs"
    ]
    for workers, usage in figures["memory"].items():
        lines.append(
            f"--workers {workers}: peak {usage.pss_mb:,.0f} MB PSS summed over "
            f"up to {usage.processes} processes ({usage.rss_mb:,.0f} MB RSS summed)"
        )
    return lines


def run(context: Context) -> SectionResult:
    if context.config.synthetic:
        raise NotMeasured(
            "the sweep command loads MNIST itself and verifies the real files; synthetic data "
            "cannot stand in"
        )
    settings = context.settings
    figures = measure(
        context.mnist_root.resolve(), settings.startup_rounds, settings.startup_workers
    )
    result = SectionResult(key="startup", title="Start-up: fixed cost and workers' memory")
    result.text += summary_lines(figures)
    result.tables.append(Table("startup", "Fixed cost per round", figures["rounds"]))
    memory = pd.DataFrame([{"workers": n, **vars(usage)} for n, usage in figures["memory"].items()])
    result.tables.append(Table("startup_memory", "Peak memory of --workers N", memory))
    ratio = statistics.median(figures["rounds"].ratio)
    result.checks.append(
        Check("1-trial sweep fixed cost / bare imports", ratio, f"<= {TARGET_RATIO:g}x",
              ratio <= TARGET_RATIO)
    )  # fmt: skip
    frame = figures["rounds"]
    result.add_rounds("1-trial sweep fixed cost", frame.fixed_s)
    result.add_rounds("bare imports of torch, mlflow, optuna", frame.bare_imports_s)
    result.add_rounds("1-trial sweep fixed cost / bare imports", frame.ratio, unit="x")
    result.add_rounds(
        "1-trial sweep fixed cost / bare imports without teardown", frame.ratio_no_teardown,
        unit="x",
    )  # fmt: skip
    result.metrics = {"fixed_cost_ratio": ratio, "cold_fixed_seconds": figures["cold_fixed_s"]}
    result.headlines.append(("1-trial sweep fixed cost / bare imports", f"{ratio:.2f}x"))
    return result


def main(argv: list[str] | None = None) -> int:
    hide_third_party_warnings()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__)
    parser.add_argument("--data-root", type=Path, required=True, help="folder holding MNIST/raw")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds (default 3)")
    parser.add_argument("--no-memory", action="store_true", help="skip the 1/2/4-worker runs")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    counts = () if args.no_memory else (1, 2, 4)
    figures = measure(args.data_root.resolve(), args.rounds, counts)
    print(figures["rounds"].round(2).to_string(index=False))
    print("\n".join(summary_lines(figures)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
