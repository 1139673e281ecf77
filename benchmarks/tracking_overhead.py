"""Tracking overhead: one trial with and without the sweep's record keeping, as a fraction.

The tracked trial runs exactly as a sweep's trial does: `experiments.objective.Objective` under
`study.optimize`, storing its settings and then every epoch's figures on the Optuna trial (a
scratch SQLite storage), with `experiments.mirror.Mirror` creating its MLflow run when it starts
and completing it from the trial's record when it ends. Both stores are fresh SQLite files,
created (schema, study, experiment, parent run) before any timing: that one-off cost belongs to
the sweep, not to each trial, and is reported separately.

Two figures: the wall-time difference of alternating tracked and untracked trials (medians),
which includes the Optuna writes, and the seconds spent inside MLflow calls as `Mirror.seconds`
counts them (less noisy).
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import pandas as pd
from tqdm import tqdm

from benchmarks.common import Context, SectionResult, Table
from softmaxreg.config import DataConfig, TrainConfig
from softmaxreg.trainer import TrainResult, train

BATCH_SIZE, LR = 100, 0.1


def untracked_trial(config: TrainConfig, context: Context) -> TrainResult:
    return train(config, context.mnist)


@dataclasses.dataclass
class TrackedStudy:
    """A one-configuration study whose trials are run and mirrored as the sweep does it."""

    study: object
    objective: object
    tracker: object
    mirror: object

    def trial(self) -> None:
        self.study.enqueue_trial({"batch_size": BATCH_SIZE, "lr": LR})
        self.study.optimize(self.objective, n_trials=1, callbacks=[self.tracker])


def open_tracked_study(config: TrainConfig, context: Context) -> TrackedStudy:
    from experiments.config import SweepConfig
    from experiments.objective import Objective
    from experiments.store_urls import Stores
    from experiments.trial_tracker import TrialTracker
    from experiments.worker import environment_tags, fixed_settings, open_study_and_mirror

    folder = context.store_dir.resolve()
    sweep = SweepConfig(
        study_name="tracking-overhead",
        batch_sizes=(BATCH_SIZE,),
        lr_range=(LR / 2, LR * 2),
        pruner="none",
        quiet=True,
        storage=f"sqlite:///{folder / 'tracking-overhead-optuna.db'}",
        tracking_uri=f"sqlite:///{folder / 'tracking-overhead.db'}",
    )
    stores = Stores.from_config(sweep)
    data = context.mnist
    study, mirror, _ = open_study_and_mirror(
        sweep, stores, sweep.study_name, config, data, 0, context.progress.line
    )
    tracker = TrialTracker(study, mirror, tqdm(disable=True), context.progress.line)
    settings = fixed_settings(sweep, DataConfig())
    objective = Objective(
        sweep, config, data, environment_tags(data), 0, settings, tracker.on_start
    )
    return TrackedStudy(study, objective, tracker, mirror)


def run(context: Context) -> SectionResult:
    settings = context.settings
    config = TrainConfig(
        batch_size=100, lr=0.1, epochs=settings.tracking_epochs, device=context.device.type
    )
    start = time.perf_counter()
    tracked = open_tracked_study(config, context)
    setup_seconds = time.perf_counter() - start
    # Untimed warm-up of both paths: first-call costs (imports, caches) are not per-trial costs.
    tracked.trial()
    untracked_trial(dataclasses.replace(config, epochs=1), context)

    rows = []
    for repeat in range(1, settings.tracking_repeats + 1):
        context.progress.line(f"  tracking_overhead: repeat {repeat}/{settings.tracking_repeats}")
        order = ("untracked", "tracked") if repeat % 2 else ("tracked", "untracked")
        for mode in order:
            before = tracked.mirror.seconds
            start = time.perf_counter()
            if mode == "tracked":
                tracked.trial()
            else:
                untracked_trial(config, context)
            rows.append(
                {
                    "repeat": repeat,
                    "mode": mode,
                    "trial_seconds": time.perf_counter() - start,
                    "mlflow_seconds": tracked.mirror.seconds - before,
                }
            )
    tracked.mirror.finish_parent_run("FINISHED", {}, None)
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
        f"the way the sweep runs it (settings and every epoch stored on the Optuna trial; the "
        f"MLflow run created at the start and completed from the trial's record at the end: "
        f"one `log_batch`, terminate) on fresh SQLite stores; "
        f"{settings.tracking_repeats} alternating repeat(s), medians. **Overhead "
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
    result.add_rounds_by(frame, ["mode"], "trial_seconds", "{mode} trial")
    result.add_rounds(
        "seconds inside MLflow calls per trial", frame[frame["mode"] == "tracked"].mlflow_seconds
    )
    return result
