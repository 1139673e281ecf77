"""Tracking overhead: one trial with and without MLflow logging, as a fraction of the trial.

The tracked trial logs exactly as the sweep does, through `experiments.tracking.SweepTracker`:
create the trial's child run, train, then one batch with params, per-epoch metrics, summary and
tags, and terminate the run. The store is a fresh SQLite file in a scratch folder, created (with
its schema migrations and the parent run) before any timing, because that one-off cost belongs
to the sweep, not to each trial; it is reported separately.

Two figures: the wall-time difference of alternating tracked and untracked trials (medians), and
the seconds spent inside MLflow calls as `SweepTracker.seconds` counts them (less noisy).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
import uuid

import pandas as pd

from benchmarks.common import Context, SectionResult, Table
from softmaxreg.config import TrainConfig
from softmaxreg.device import environment
from softmaxreg.trainer import EpochMetrics, TrainResult, train


def untracked_trial(config: TrainConfig, context: Context) -> TrainResult:
    return train(config, context.mnist)


def tracked_trial(
    config: TrainConfig, context: Context, tracker, number: int, tags: dict[str, str]
) -> None:
    """Train once and log it the way `experiments.sweep` logs a one-seed trial."""
    from optuna.trial import TrialState

    from experiments.sweep import EPOCH_FIGURES, summarise
    from experiments.tracking import now_ms

    run_id = tracker.start_trial_run(number, tags=tags)
    epochs: list[tuple[int, int, dict[str, float]]] = []

    def collect(metrics: EpochMetrics) -> None:
        values = {name: float(getattr(metrics, name)) for name in EPOCH_FIGURES}
        epochs.append((metrics.epoch, now_ms(), values))

    result = train(config, context.mnist, callback=collect)
    tracker.finish_trial_run(
        run_id,
        TrialState.COMPLETE,
        params={**dataclasses.asdict(config), "trial_number": number, "seeds": str(config.seed)},
        epoch_metrics=epochs,
        summary=summarise([result]),
        tags=tags,
    )


def run(context: Context) -> SectionResult:
    from experiments.tracking import SweepTracker

    settings = context.settings
    config = TrainConfig(
        batch_size=100, lr=0.1, epochs=settings.tracking_epochs, device=context.device.type
    )
    uri = f"sqlite:///{(context.store_dir / 'tracking-overhead.db').resolve()}"
    start = time.perf_counter()
    tracker = SweepTracker(uri, "tracking-overhead")
    tags = environment(context.device)
    tracker.open_parent_run(uuid.uuid4().hex, tags=tags)
    setup_seconds = time.perf_counter() - start
    # Untimed warm-up of both paths: first-call costs (imports, caches) are not per-trial costs.
    warmup = dataclasses.replace(config, epochs=1)
    tracked_trial(warmup, context, tracker, 0, tags)
    untracked_trial(warmup, context)

    rows = []
    for repeat in range(1, settings.tracking_repeats + 1):
        context.progress.line(f"  tracking_overhead: repeat {repeat}/{settings.tracking_repeats}")
        order = ("untracked", "tracked") if repeat % 2 else ("tracked", "untracked")
        for mode in order:
            before = tracker.seconds
            start = time.perf_counter()
            if mode == "tracked":
                tracked_trial(config, context, tracker, repeat, tags)
            else:
                untracked_trial(config, context)
            rows.append(
                {
                    "repeat": repeat,
                    "mode": mode,
                    "trial_seconds": time.perf_counter() - start,
                    "mlflow_seconds": tracker.seconds - before,
                }
            )
    tracker.finish_parent_run("FINISHED", {}, step=0)
    frame = pd.DataFrame(rows)
    tracked = frame[frame["mode"] == "tracked"]
    untracked = frame[frame["mode"] == "untracked"]
    tracked_median = statistics.median(tracked.trial_seconds)
    untracked_median = statistics.median(untracked.trial_seconds)
    mlflow_median = statistics.median(tracked.mlflow_seconds)
    wall_fraction = (tracked_median - untracked_median) / untracked_median
    call_fraction = mlflow_median / untracked_median

    summary = pd.DataFrame(
        [
            {"figure": "untracked trial, median seconds", "value": untracked_median},
            {"figure": "tracked trial, median seconds", "value": tracked_median},
            {"figure": "seconds inside MLflow calls per trial, median", "value": mlflow_median},
            {
                "figure": "overhead from wall times: (tracked - untracked) / untracked",
                "value": wall_fraction,
            },
            {"figure": "overhead from MLflow call time / untracked trial", "value": call_fraction},
            {
                "figure": "one-off store set-up (schema, experiment, parent run), seconds",
                "value": setup_seconds,
            },
        ]
    )
    result = SectionResult(key="tracking_overhead", title="Tracking overhead")
    result.text.append(
        f"One trial (bs 100, lr 0.1, {settings.tracking_epochs} epochs) untracked and tracked "
        f"with `experiments.tracking.SweepTracker` (one child run per trial: create, one "
        f"`log_batch` with params + per-epoch metrics + summary + tags, terminate) on a fresh "
        f"SQLite store; {settings.tracking_repeats} alternating repeat(s), medians. **Overhead "
        f"{call_fraction:.1%} of a trial by time inside MLflow calls ({mlflow_median * 1000:.0f} "
        f"ms), {wall_fraction:+.1%} by wall-time difference** (noisier: it includes the "
        f"machine's jitter). One-off store set-up: {setup_seconds:.2f} s."
    )
    result.tables += [
        Table("tracking_overhead", "Tracking overhead", summary),
        Table("tracking_overhead_runs", "Every trial", frame, show=False),
    ]
    result.metrics = {
        "untracked_trial_seconds": untracked_median,
        "tracked_trial_seconds": tracked_median,
        "mlflow_seconds_per_trial": mlflow_median,
        "overhead_fraction_wall": wall_fraction,
        "overhead_fraction_calls": call_fraction,
        "store_setup_seconds": setup_seconds,
    }
    result.params = {
        "epochs": str(settings.tracking_epochs),
        "repeats": str(settings.tracking_repeats),
        "store": "sqlite (scratch)",
    }
    result.headlines.append(
        (
            "tracking overhead per trial",
            f"{call_fraction:.1%} by MLflow call time ({mlflow_median * 1000:.0f} ms of "
            f"{untracked_median:.2f} s), {wall_fraction:+.1%} by wall-time difference",
        )
    )
    return result
