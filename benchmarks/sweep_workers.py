"""Sweep workers: the default study with 1 and with 2 worker processes, side by side.

Each run is the real command, `python -m experiments.sweep --workers N`, on the same data folder
with fresh SQLite stores, so process start-up, data loading, the study lock, per-epoch writes to
Optuna, the MLflow mirror and the final report are all counted. The runs alternate (1, 2, 2, 1
with two repeats) so a slow spell of this shared machine hits both. Pruning depends on which
trials ran first, so epochs trained per minute is reported beside trials per minute.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd

from benchmarks.common import Context, NotMeasured, SectionResult, Table

WORKER_COUNTS = (1, 2)


def one_run(context: Context, workers: int, repeat: int) -> dict[str, object]:
    folder = (context.store_dir / f"sweep-workers-{workers}-{repeat}").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    settings = context.settings
    argv = [
        sys.executable, "-m", "experiments.sweep", "--workers", str(workers), "--quiet",
        "--data-root", str(context.mnist_root.resolve()), "--device", context.device.type,
        "--study-name", "sweep-workers",
    ]  # fmt: skip
    if settings.sweep_trials:
        argv += ["--n-trials", str(settings.sweep_trials)]
    if settings.sweep_epochs_per_trial:
        argv += ["--epochs", str(settings.sweep_epochs_per_trial)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"--workers {workers} exited {done.returncode}: {done.stderr[-2000:]}")
    study = optuna.load_study(study_name="sweep-workers", storage=f"sqlite:///{folder}/optuna.db")
    trials = study.get_trials(deepcopy=False)
    epochs = sum(len(t.user_attrs.get("epochs", {}).get("step", [])) for t in trials)
    return {
        "workers": workers,
        "repeat": repeat,
        "trials": len(trials),
        "pruned": sum(t.state.name == "PRUNED" for t in trials),
        "epochs_trained": epochs,
        "wall_seconds": wall,
        "trials_per_minute": len(trials) / wall * 60,
        "epochs_per_minute": epochs / wall * 60,
    }


def run(context: Context) -> SectionResult:
    if context.config.synthetic:
        raise NotMeasured(
            "worker processes load MNIST through the command line, which verifies the real "
            "files; synthetic data cannot stand in"
        )
    order = [1, 2, 2, 1]
    rows = []
    for index, workers in enumerate(order):
        context.progress.line(f"  sweep_workers: run {index + 1}/{len(order)}, {workers} worker(s)")
        rows.append(one_run(context, workers, index))
    frame = pd.DataFrame(rows)
    medians = {
        workers: {
            figure: statistics.median(frame[frame.workers == workers][figure])
            for figure in ("trials_per_minute", "epochs_per_minute", "wall_seconds")
        }
        for workers in WORKER_COUNTS
    }
    trial_ratio = medians[2]["trials_per_minute"] / medians[1]["trials_per_minute"]
    epoch_ratio = medians[2]["epochs_per_minute"] / medians[1]["epochs_per_minute"]
    summary = pd.DataFrame(
        [{"workers": w, **{k: round(v, 2) for k, v in medians[w].items()}} for w in WORKER_COUNTS]
    )
    result = SectionResult(key="sweep_workers", title="Sweep with 1 and 2 workers")
    trials = int(frame.trials.iloc[0])
    result.text.append(
        f"`python -m experiments.sweep --workers N`, the default study ({trials} trials) on "
        f"{os.cpu_count()} cores, fresh SQLite stores per run, runs alternated 1-2-2-1, "
        f"medians. **2 workers: {trial_ratio:.2f}× the trials per minute of 1 worker "
        f"({epoch_ratio:.2f}× the epochs per minute)**, everything included (start-up, data "
        "loading, Optuna writes, MLflow mirror, report)."
    )
    result.tables += [
        Table("sweep_workers", "Sweep with 1 and 2 workers (medians)", summary),
        Table("sweep_workers_runs", "Every run", frame, show=False),
    ]
    result.metrics = {
        "trials_per_minute_1_worker": medians[1]["trials_per_minute"],
        "trials_per_minute_2_workers": medians[2]["trials_per_minute"],
        "ratio_trials_per_minute": trial_ratio,
        "ratio_epochs_per_minute": epoch_ratio,
    }
    result.params = {"order": "1-2-2-1", "trials": str(trials)}
    result.headlines.append(
        (
            "sweep, 2 workers vs 1",
            f"{trial_ratio:.2f}× trials/min ({medians[1]['trials_per_minute']:.1f} → "
            f"{medians[2]['trials_per_minute']:.1f}), {epoch_ratio:.2f}× epochs/min",
        )
    )
    record_rounds(result, frame)
    return result


def record_rounds(result: SectionResult, frame: pd.DataFrame) -> None:
    """Every run's trials per minute per worker count, and 2 / 1 workers pairing the runs in
    order (1-2-2-1 pairs the first two and the last two)."""
    result.add_rounds_by(
        frame,
        ["workers"],
        "trials_per_minute",
        "sweep, {workers} worker(s), trials/min",
        better="higher",
        unit="/min",
    )
    one = frame[frame.workers == 1].trials_per_minute.tolist()
    two = frame[frame.workers == 2].trials_per_minute.tolist()
    result.add_rounds(
        "sweep, 2 workers / 1 worker, trials/min",
        [b / a for a, b in zip(one, two, strict=False)],
        better="higher",
        unit="×",
    )
