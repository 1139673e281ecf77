"""Population sweep: the same trials trained one at a time and K at a time, end to end.

Every run is the real command, `python -m experiments.sweep --sampler random --pruner none
--workers 1`, in
a fresh folder (new SQLite stores) on the suite's MNIST folder, so process start-up, data
loading, per-epoch Optuna writes, the MLflow mirror, the best model and the report are all
counted. "The same trials": the configurations are drawn once from Optuna's `RandomSampler`
(seed 0) over the sweep's default batch sizes and learning-rate range, and enqueued in every
study, sorted by batch size so that the population's passes share one. Runs alternate (single,
population, population, single, ...) so a slow spell of this shared machine hits both; medians
are compared. Then each configuration's figures with and without the population: the same
seed gives the same batches and initial weights, so they agree to float rounding.
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

from benchmarks.common import Check, Context, NotMeasured, SectionResult, Table

STUDY = "population-sweep"
TARGET_SPEEDUP = 3.0
SAMPLER_SEED = 0


def configurations(count: int) -> list[dict[str, object]]:
    """`count` (batch size, lr) points from a seeded RandomSampler over the default space,
    sorted by batch size (stable: the draw's order within one)."""
    from experiments.config import SweepConfig

    space = SweepConfig()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=SAMPLER_SEED))
    points = []
    for _ in range(count):
        trial = study.ask()
        points.append(
            {
                "batch_size": trial.suggest_categorical("batch_size", list(space.batch_sizes)),
                "lr": trial.suggest_float("lr", *space.lr_range, log=True),
            }
        )
    return sorted(points, key=lambda point: point["batch_size"])


def one_run(context: Context, population: int, repeat: int, points: list[dict]) -> pd.DataFrame:
    """One sweep of `points` as the real command; its trials with the run's wall time."""
    folder = (context.store_dir / f"population-sweep-{population}-{repeat}").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{folder}/optuna.db"
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")
    for point in points:
        study.enqueue_trial(point)
    settings = context.settings
    argv = [
        sys.executable, "-m", "experiments.sweep", "--quiet", "--study-name", STUDY,
        "--sampler", "random", "--pruner", "none", "--n-trials", str(len(points)),
        "--epochs", str(settings.population_sweep_epochs), "--population", str(population),
        "--data-root", str(context.mnist_root.resolve()), "--device", context.device.type,
        "--workers", "1",  # one process: the population's gain, not the workers' (sweep_workers)
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"--population {population} exited {done.returncode}: "
                           f"{done.stderr[-2000:]}")  # fmt: skip
    trials = optuna.load_study(study_name=STUDY, storage=storage).get_trials(deepcopy=False)
    return pd.DataFrame(
        [
            {
                "population": population,
                "repeat": repeat,
                "wall_seconds": wall,
                "trial_number": t.number,
                "state": t.state.name,
                "batch_size": t.params.get("batch_size"),
                "lr": t.params.get("lr"),
                "best_val_accuracy": t.user_attrs.get("best_val_accuracy"),
                "final_test_accuracy": t.user_attrs.get("final_test_accuracy"),
                "trained_with": t.user_attrs.get("settings", {}).get("population"),
            }
            for t in trials
        ]
    )


def first_run(frame: pd.DataFrame, population: int) -> pd.DataFrame:
    runs = frame[frame.population == population]
    return runs[runs.repeat == runs.repeat.min()]


def agreement(frame: pd.DataFrame, size: int) -> dict[str, float]:
    """Per configuration, the population's figures against single mode's (first runs)."""
    joined = first_run(frame, 1).merge(
        first_run(frame, size), on=["batch_size", "lr"], suffixes=("_single", "_population")
    )
    differences = {
        name: (joined[f"{name}_single"] - joined[f"{name}_population"]).abs()
        for name in ("best_val_accuracy", "final_test_accuracy")
    }
    return {
        "configurations_compared": float(len(joined)),
        "max_abs_difference_best_val_accuracy": float(differences["best_val_accuracy"].max()),
        "max_abs_difference_final_test_accuracy": float(differences["final_test_accuracy"].max()),
        "identical_best_val_accuracy": float((differences["best_val_accuracy"] == 0).sum()),
    }


def run_order(sizes: tuple[int, ...], rounds: int) -> list[int]:
    """1, K1, K2, ... then reversed in the next round, so a drift in load hits every mode."""
    forward = [1, *sizes]
    return [k for r in range(rounds) for k in (forward if r % 2 == 0 else forward[::-1])]


def summary_rows(walls: pd.DataFrame, trials: int) -> pd.DataFrame:
    rows = []
    for population, group in walls.groupby("population"):
        median = statistics.median(group.wall_seconds)
        rows.append(
            {
                "population": int(population),
                "trials": trials,
                "median_wall_seconds": round(median, 2),
                "trials_per_minute": round(trials / median * 60, 2),
                "runs": len(group),
            }
        )
    table = pd.DataFrame(rows)
    single = float(table[table.population == 1].median_wall_seconds.iloc[0])
    table["speedup"] = (single / table.median_wall_seconds).round(2)
    return table


def run(context: Context) -> SectionResult:
    if context.config.synthetic:
        raise NotMeasured(
            "the sweep's processes load MNIST through the command line, which verifies the "
            "real files; synthetic data cannot stand in"
        )
    settings = context.settings
    sizes = settings.population_sweep_sizes
    points = configurations(settings.population_sweep_trials)
    order = run_order(sizes, settings.population_sweep_rounds)
    runs = []
    for index, population in enumerate(order):
        context.progress.line(
            f"  population_sweep: run {index + 1}/{len(order)}, --population {population}"
        )
        runs.append(one_run(context, population, index, points))
    frame = pd.concat(runs, ignore_index=True)
    walls = frame.groupby(["population", "repeat"]).wall_seconds.first().reset_index()
    trials = len(points)
    summary = summary_rows(walls, trials)
    speedups = dict(zip(summary.population, summary.speedup, strict=True))
    seconds = dict(zip(summary.population, summary.median_wall_seconds, strict=True))
    agree = {k: agreement(frame, k) for k in sizes}
    result = SectionResult(key="population_sweep", title="Sweep with and without --population")
    result.text.append(
        f"The same {trials} trials (random sampler seed {SAMPLER_SEED} over batch sizes "
        f"16/64/256/1024 × lr 0.003–1, no pruning, {settings.population_sweep_epochs} epochs), "
        f"each run the real command in a fresh folder, in the order {order} (medians where a "
        f"mode ran more than once): "
        + ", ".join(
            f"**--population {k}: {speedups[k]:.2f}× faster end to end** ({seconds[1]:.0f} s → "
            f"{seconds[k]:.0f} s)"
            for k in sizes
        )
        + " than one trial at a time; start-up, data loading, Optuna writes, the MLflow mirror, "
        "the best model and the report included in every run (about 20 s each). Agreement, "
        "configuration by configuration, with single mode: "
        + "; ".join(
            f"K={k}: best validation accuracy differs by at most "
            f"{a['max_abs_difference_best_val_accuracy']:.5f} "
            f"({a['identical_best_val_accuracy']:.0f} of {a['configurations_compared']:.0f} "
            f"identical), final test accuracy by {a['max_abs_difference_final_test_accuracy']:.5f}"
            for k, a in agree.items()
        )
        + "."
    )
    result.tables += [
        Table("population_sweep", "Sweep with and without --population", summary),
        Table("population_sweep_trials", "Every trial of every run", frame, show=False),
    ]
    for k in sizes:
        result.metrics[f"speedup_population_{k}"] = float(speedups[k])
        result.metrics.update({f"{name}_population_{k}": v for name, v in agree[k].items()})
    result.metrics.update({f"median_wall_seconds_{k}": float(v) for k, v in seconds.items()})
    result.params = {
        "trials": str(trials),
        "populations": " ".join(map(str, sizes)),
        "epochs": str(settings.population_sweep_epochs),
        "order": str(order),
    }
    best = max(sizes, key=lambda k: speedups[k])
    result.checks.append(
        Check(
            f"sweep of {trials} trials, --population {best} vs 1, end to end",
            float(speedups[best]),
            f"≥ {TARGET_SPEEDUP:g}×",
            bool(speedups[best] >= TARGET_SPEEDUP),
            note=", ".join(f"--population {k}: {speedups[k]:.2f}×" for k in sizes),
        )
    )
    record_rounds(result, walls, trials)
    return result


def record_rounds(result: SectionResult, walls: pd.DataFrame, trials: int) -> None:
    """Every run's wall seconds per mode, and per round (runs in order) single / population."""
    result.add_rounds_by(
        walls,
        ["population"],
        "wall_seconds",
        f"sweep of {trials} trials, --population {{population}}",
    )
    single = walls[walls.population == 1].sort_values("repeat").wall_seconds.tolist()
    for population, group in walls[walls.population != 1].groupby("population"):
        together = group.sort_values("repeat").wall_seconds.tolist()
        result.add_rounds(
            f"sweep of {trials} trials, --population {population} vs 1, speed-up",
            [a / b for a, b in zip(single, together, strict=False)],
            better="higher",
            unit="×",
        )
