"""Batch-size scaling: steady epoch time and throughput per batch size, next to a matmul floor.

For each available device (cpu; cuda and mps when present) and, on the CPU, for 1 thread and
all threads: `train()` runs 1 + `repeats` epochs per batch size; the first (warm-up) epoch is
excluded and the median, min, max and interquartile range of the others are reported.

The floor is the arithmetic no epoch can avoid: one forward and one weight gradient over the whole
training split as two plain matmuls (z = X @ W.T, g = dZ.T @ X with X the 55k x 784 training
tensor), timed after synchronising the device, median of repeats, at the same thread count. An
epoch within a small factor of the floor spends its time on arithmetic, not on overhead.
"""

from __future__ import annotations

import statistics
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import torch

from benchmarks.common import (
    Check,
    Context,
    SectionResult,
    Spread,
    Table,
    all_threads,
    available_devices,
    torch_threads,
)
from softmaxreg.config import TrainConfig
from softmaxreg.device import synchronize
from softmaxreg.trainer import TrainingDiverged, train

TARGET_FLOOR_RATIO = 2.5
LARGE_BATCH = 1000
LR = 0.1  # timing does not depend on the learning rate; the tutorial's is stable at every size


def matmul_floor(x: torch.Tensor, repeats: int) -> Spread:
    """Seconds of z = X @ W.T plus g = dZ.T @ X over all of `x` (after two warm-up repeats)."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(10, x.shape[1], generator=generator).to(x.device)
    dz = torch.randn(x.shape[0], 10, generator=generator).to(x.device)
    times = []
    for repeat in range(repeats + 2):
        synchronize(x.device)
        start = time.perf_counter()
        z = x @ weight.T
        g = dz.T @ x
        synchronize(x.device)
        if repeat >= 2:
            times.append(time.perf_counter() - start)
        del z, g
    return Spread.of(times)


def thread_counts(device: torch.device) -> list[int]:
    """1 and all threads on the CPU; the current count elsewhere (threads only feed the host)."""
    if device.type == "cpu":
        return sorted({1, all_threads()})
    return [torch.get_num_threads()]


def run(context: Context) -> SectionResult:
    settings = context.settings
    passes, per_pass = settings.scaling_passes, settings.scaling_epochs_per_pass
    steady: dict[tuple[str, int, int], list[float]] = {}
    warmups: dict[tuple[str, int, int], list[float]] = {}
    floor_times: dict[tuple[str, int], list[float]] = {}
    devices = available_devices()
    # Passes interleave every (device, threads, batch size): a burst of load from another
    # process then spreads over all configurations instead of inflating one of them.
    for number in range(1, passes + 1):
        for device in devices:
            data = context.mnist.to(device)
            for threads in thread_counts(device):
                with torch_threads(threads):
                    context.progress.line(
                        f"  scaling: pass {number}/{passes}, {device}, {threads} thread(s)"
                    )
                    floor = matmul_floor(data.train_x, settings.floor_repeats)
                    floor_times.setdefault((str(device), threads), []).extend(floor.values)
                    for batch_size in settings.batch_sizes:
                        # Threads given explicitly: this table measures each count at every
                        # batch size, which TrainConfig's auto choice would override.
                        config = TrainConfig(
                            batch_size=batch_size,
                            lr=LR,
                            epochs=1 + per_pass,
                            device=device.type,
                            threads=threads,
                        )
                        try:
                            history = train(config, data).epochs
                        except TrainingDiverged as error:
                            context.progress.line(f"  scaling: skipped, {error}")
                            continue
                        key = (str(device), threads, batch_size)
                        steady.setdefault(key, []).extend(
                            m.epoch_seconds for m in history if not m.warmup
                        )
                        warmups.setdefault(key, []).append(history[0].epoch_seconds)

    n_train = context.mnist.train_x.shape[0]
    floors = []
    for (device, threads), times in floor_times.items():
        floor = Spread.of(times)
        floors.append(
            {
                "device": device,
                "threads": threads,
                "floor_seconds_median": floor.median,
                "floor_seconds_min": floor.minimum,
                "floor_seconds_max": floor.maximum,
                "repeats": floor.n,
            }
        )
    floor_median = {(f["device"], f["threads"]): f["floor_seconds_median"] for f in floors}
    rows = []
    for (device, threads, batch_size), times in steady.items():
        epoch = Spread.of(times)
        throughput = Spread.of([n_train / t for t in times])
        floor_seconds = floor_median[(device, threads)]
        rows.append(
            {
                "device": device,
                "threads": threads,
                "batch_size": batch_size,
                "steps_per_epoch": -(-n_train // min(batch_size, n_train)),
                "epoch_seconds_median": epoch.median,
                "epoch_seconds_min": epoch.minimum,
                "epoch_seconds_max": epoch.maximum,
                "epoch_seconds_q1": epoch.q1,
                "epoch_seconds_q3": epoch.q3,
                "samples_per_second_median": throughput.median,
                "samples_per_second_min": throughput.minimum,
                "samples_per_second_max": throughput.maximum,
                "warmup_epoch_seconds": statistics.median(warmups[(device, threads, batch_size)]),
                "repeats": epoch.n,
                "floor_seconds": floor_seconds,
                "epoch_over_floor": epoch.median / floor_seconds,
            }
        )
    frame = pd.DataFrame(rows)
    floor_frame = pd.DataFrame(floors)

    result = SectionResult(key="scaling", title="Batch-size scaling against the matmul floor")
    result.text.append(
        f"Steady epoch time of `train()` (lr {LR}) on the {n_train:,}-example training split, per "
        f"device and torch thread count (`torch.set_num_threads`, restored afterwards): "
        f"{passes} interleaved pass(es) over every configuration, each training 1 warm-up epoch "
        f"(excluded) and {per_pass} timed epoch(s); the median and spread (min-max, "
        f"interquartile range) of the {passes * per_pass} timed epochs are reported. The floor "
        f"is one forward and one weight gradient over the whole split as plain matmuls "
        f"(`z = X @ W.T; g = dZ.T @ X`), {settings.floor_repeats} repeats per pass after "
        f"synchronising, at the same thread count, median. Target: epoch / floor ≤ "
        f"{TARGET_FLOOR_RATIO} at batch size ≥ {LARGE_BATCH}."
    )
    for (device, threads), group in frame.groupby(["device", "threads"], sort=False):
        large = group[group.batch_size >= LARGE_BATCH]
        key = f"{device}_threads{threads}"
        for _, row in group.iterrows():
            suffix = f"{key}_bs{int(row.batch_size)}"
            result.metrics[f"epoch_seconds_{suffix}"] = float(row.epoch_seconds_median)
            result.metrics[f"samples_per_second_{suffix}"] = float(row.samples_per_second_median)
            result.metrics[f"epoch_over_floor_{suffix}"] = float(row.epoch_over_floor)
        result.metrics[f"floor_seconds_{key}"] = float(group.floor_seconds.iloc[0])
        if large.empty:
            continue
        worst = large.loc[large.epoch_over_floor.idxmax()]
        ratios = ", ".join(
            f"bs {int(r.batch_size)}: {r.epoch_over_floor:.2f}" for _, r in large.iterrows()
        )
        result.checks.append(
            Check(
                figure=f"steady epoch / matmul floor, worst at bs >= {LARGE_BATCH} "
                f"({device}, {threads} thread(s))",
                value=float(worst.epoch_over_floor),
                target=f"<= {TARGET_FLOOR_RATIO}",
                met=bool(worst.epoch_over_floor <= TARGET_FLOOR_RATIO),
                note=ratios,
            )
        )
    shown = frame[
        [
            "device",
            "threads",
            "batch_size",
            "epoch_seconds_median",
            "epoch_seconds_min",
            "epoch_seconds_max",
            "samples_per_second_median",
            "floor_seconds",
            "epoch_over_floor",
        ]
    ]
    result.tables += [
        Table("scaling", "Steady epoch time, throughput and ratio to the floor", shown),
        Table("scaling_full", "All columns (quartiles, warm-up epoch)", frame, show=False),
        Table("scaling_floor", "Matmul floor", floor_frame),
    ]
    record_rounds(result, steady, floor_median)
    result.plots += plot(frame, floor_frame, context)
    result.params = {
        "batch_sizes": " ".join(map(str, settings.batch_sizes)),
        "passes": str(passes),
        "epochs_per_pass": str(per_pass),
        "floor_repeats": str(settings.floor_repeats),
        "lr": str(LR),
    }
    return result


def record_rounds(
    result: SectionResult,
    steady: dict[tuple[str, int, int], list[float]],
    floor_median: dict[tuple[str, int], float],
) -> None:
    """Every timed epoch per configuration, and per timed epoch (in order) the worst epoch /
    floor over batch sizes >= LARGE_BATCH: the check's figure, round by round."""
    worst: dict[tuple[str, int], list[list[float]]] = {}
    for (device, threads, batch_size), times in steady.items():
        result.add_rounds(f"steady epoch, {device}, {threads} thread(s), bs {batch_size}", times)
        if batch_size >= LARGE_BATCH:
            ratios = [t / floor_median[(device, threads)] for t in times]
            worst.setdefault((device, threads), []).append(ratios)
    for (device, threads), per_batch in worst.items():
        result.add_rounds(
            f"steady epoch / matmul floor, worst at bs >= {LARGE_BATCH}, {device}, "
            f"{threads} thread(s)",
            [max(values) for values in zip(*per_batch, strict=False)],
            unit="×",
        )


def plot(frame: pd.DataFrame, floors: pd.DataFrame, context: Context) -> list[tuple[str, str]]:
    """Epoch seconds and samples/s against batch size (log-log), one line per device/threads."""
    outputs = []
    for column, name, label, caption in (
        (
            "epoch_seconds",
            "scaling_epoch_seconds.png",
            "steady epoch seconds",
            "Steady epoch time vs batch size (bars: min-max; dashed: matmul floor)",
        ),
        (
            "samples_per_second",
            "scaling_throughput.png",
            "training samples / second",
            "Training throughput vs batch size (bars: min-max)",
        ),
    ):
        figure, axes = plt.subplots(figsize=(7, 4.5))
        for index, ((device, threads), group) in enumerate(
            frame.groupby(["device", "threads"], sort=False)
        ):
            color = f"C{index}"
            median = group[f"{column}_median"]
            axes.errorbar(
                group.batch_size,
                median,
                yerr=[median - group[f"{column}_min"], group[f"{column}_max"] - median],
                marker="o",
                capsize=3,
                color=color,
                label=f"{device}, {threads} thread(s)",
            )
            floor = floors[(floors.device == device) & (floors.threads == threads)]
            if column == "epoch_seconds" and not floor.empty:
                axes.axhline(
                    float(floor.floor_seconds_median.iloc[0]),
                    color=color,
                    linestyle="--",
                    linewidth=1,
                    label=f"floor, {device}, {threads} thread(s)",
                )
        axes.set_xscale("log", base=2)
        axes.set_yscale("log")
        axes.set_xlabel("batch size")
        axes.set_ylabel(label)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=8)
        axes.set_title(f"{context.mnist.name}: {caption.split(' (')[0]}")
        figure.tight_layout()
        figure.savefig(context.out / name, dpi=110)
        plt.close(figure)
        outputs.append((name, caption))
    return outputs
