"""Tutorial vs trainer: one epoch of the classic tutorial's pipeline against one of the trainer.

The tutorial: torchvision's MNIST dataset with `Compose([ToTensor(), Normalize((0.1307,),
(0.3081,))])`, `DataLoader(batch_size=100, shuffle=True)` over the 60k training images,
`nn.Linear(784, 10)` whose forward applies softmax, `nn.CrossEntropyLoss`,
`torch.optim.SGD(lr=0.1)`, then the test pass over the 10k test images through a
`DataLoader(batch_size=100)`.
The trainer: `softmaxreg.trainer.train` at bs 100, lr 0.1, one epoch (its first, warm-up
included), training on the 55k training split and evaluating on validation (5k) + test (10k).

Both read the same raw files in one process, on the same device and thread count, in alternating
rounds; medians are compared. Because the sample counts differ, two ratios are reported: raw
(tutorial epoch / trainer epoch as measured) and per-sample (the trainer's training time scaled to
60k examples and its evaluation time to 10k); the target is checked on the smaller of the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch.utils.data import DataLoader, Subset

from benchmarks.common import Check, Context, SectionResult, Spread, Table, torch_threads
from benchmarks.tutorial_pipeline import BATCH_SIZE, LR, loaders_over, tutorial_epoch
from softmaxreg.config import TrainConfig
from softmaxreg.trainer import train

TARGET_SPEEDUP = 50.0


def trainer_epoch(context: Context, seed: int) -> dict[str, float]:
    """One epoch of the trainer (its first, so warm-up included), as it reports it."""
    data = context.mnist
    # Threads given explicitly: the comparison is at the tutorial's thread count, not the
    # count TrainConfig's auto would choose for batch 100.
    config = TrainConfig(
        batch_size=BATCH_SIZE,
        lr=LR,
        lr_schedule="constant",  # the tutorial's, whatever TrainConfig's default
        epochs=1,
        seed=seed,
        device=context.device.type,
        threads=torch.get_num_threads(),
    )
    metrics = train(config, data).epochs[0]
    return {
        "train_seconds": metrics.epoch_seconds,
        "eval_seconds": metrics.eval_seconds,
        "train_samples": data.train_x.shape[0],
        "eval_samples": data.val_x.shape[0] + data.test_x.shape[0],
        "test_accuracy": metrics.test_accuracy,
    }


def thread_counts() -> list[int]:
    """The current thread count (what a user gets), then 1 if that differs."""
    current = torch.get_num_threads()
    return [current] if current == 1 else [current, 1]


def warm_up(context: Context, train_loader: DataLoader, test_loader: DataLoader) -> None:
    """Untimed warm-up of both code paths in this process (first-call costs of the DataLoader,
    PIL transforms, autograd and the trainer's kernels), as the tutorial's dataset loading is."""
    context.progress.line("  tutorial_speed: warm-up (untimed)")
    warm_train, warm_test = (
        DataLoader(Subset(loader.dataset, range(min(1000, len(loader.dataset)))), BATCH_SIZE)
        for loader in (train_loader, test_loader)
    )
    for threads in thread_counts():
        with torch_threads(threads):
            tutorial_epoch(warm_train, warm_test, context.device, seed=0)
            trainer_epoch(context, seed=0)


def measure(
    context: Context, train_loader: DataLoader, test_loader: DataLoader, rounds: int
) -> pd.DataFrame:
    """One epoch of each pipeline per round and thread count, who goes first alternating."""
    rows: list[dict[str, object]] = []
    for round_number in range(1, rounds + 1):
        for threads in thread_counts():
            # Alternate who goes first, so a drift in machine load does not favour one side.
            order = ("tutorial", "trainer") if round_number % 2 else ("trainer", "tutorial")
            for pipeline in order:
                context.progress.line(
                    f"  tutorial_speed: round {round_number}/{rounds}, {threads} thread(s): "
                    f"{pipeline}"
                )
                with torch_threads(threads):
                    if pipeline == "tutorial":
                        figures = tutorial_epoch(
                            train_loader, test_loader, context.device, round_number
                        )
                    else:
                        figures = trainer_epoch(context, round_number)
                total = figures["train_seconds"] + figures["eval_seconds"]
                rows.append(
                    {
                        "round": round_number,
                        "threads": threads,
                        "pipeline": pipeline,
                        **figures,
                        "total_seconds": total,
                    }
                )
    return pd.DataFrame(rows)


@dataclass
class Scales:
    """The trainer's sample counts scaled to the tutorial's (it trains on the training split
    less validation, and evaluates validation + test): first rounds' counts."""

    first: dict[str, pd.Series]
    train: float
    eval: float

    @classmethod
    def of(cls, frame: pd.DataFrame) -> Scales:
        first = {p: frame[frame.pipeline == p].iloc[0] for p in ("tutorial", "trainer")}
        return cls(
            first=first,
            train=first["tutorial"].train_samples / first["trainer"].train_samples,
            eval=first["tutorial"].eval_samples / first["trainer"].eval_samples,
        )


COLUMNS = ("train_seconds", "eval_seconds", "total_seconds")


@dataclass
class Comparison:
    """Both pipelines' median epochs at one thread count, and the ratios between them."""

    threads: int
    tutorial: dict[str, float]
    trainer: dict[str, float]
    trainer_per_sample: float
    raw_ratio: float
    per_sample_ratio: float
    train_only_ratio: float

    @classmethod
    def at(cls, frame: pd.DataFrame, threads: int, scales: Scales) -> Comparison:
        at = frame[frame.threads == threads]
        tut, ours = (
            {c: Spread.of(at.loc[at.pipeline == p, c].tolist()).median for c in COLUMNS}
            for p in ("tutorial", "trainer")
        )
        per_sample = ours["train_seconds"] * scales.train + ours["eval_seconds"] * scales.eval
        return cls(
            threads=threads,
            tutorial=tut,
            trainer=ours,
            trainer_per_sample=per_sample,
            raw_ratio=tut["total_seconds"] / ours["total_seconds"],
            per_sample_ratio=tut["total_seconds"] / per_sample,
            train_only_ratio=tut["train_seconds"] / (ours["train_seconds"] * scales.train),
        )

    @property
    def headline(self) -> float:
        return min(self.raw_ratio, self.per_sample_ratio)


def summary_rows(frame: pd.DataFrame, comparison: Comparison, scales: Scales) -> list[dict]:
    at = frame[frame.threads == comparison.threads]
    rows = []
    for pipeline, figures, normalised in (
        ("tutorial (DataLoader + ToTensor + Normalize)", comparison.tutorial,
         comparison.tutorial["total_seconds"]),
        ("softmaxreg.trainer", comparison.trainer, comparison.trainer_per_sample),
    ):  # fmt: skip
        key = "tutorial" if pipeline.startswith("tutorial") else "trainer"
        spread = Spread.of(at.loc[at.pipeline == key, "total_seconds"].tolist())
        rows.append(
            {
                "threads": comparison.threads,
                "pipeline": pipeline,
                "train_samples": int(scales.first[key].train_samples),
                "eval_samples": int(scales.first[key].eval_samples),
                "median_train_seconds": figures["train_seconds"],
                "median_eval_seconds": figures["eval_seconds"],
                "median_total_seconds": figures["total_seconds"],
                "min_total_seconds": spread.minimum,
                "max_total_seconds": spread.maximum,
                "total_seconds_per_sample_normalised": normalised,
            }
        )
    return rows


def ratio_rows(comparison: Comparison) -> list[dict]:
    threads = comparison.threads
    return [
        {"threads": threads, "ratio": "raw: tutorial total / trainer total",
         "value": comparison.raw_ratio},
        {"threads": threads,
         "ratio": "per-sample: tutorial total / trainer total scaled to the tutorial's "
         "sample counts",
         "value": comparison.per_sample_ratio},
        {"threads": threads, "ratio": "training pass only, per-sample",
         "value": comparison.train_only_ratio},
    ]  # fmt: skip


def report(result: SectionResult, comparison: Comparison) -> None:
    """One thread count's metrics, sentence and check."""
    tut, ours = comparison.tutorial, comparison.trainer
    raw, per_sample = comparison.raw_ratio, comparison.per_sample_ratio
    suffix = f"_threads{comparison.threads}"
    result.metrics |= {
        f"tutorial_total_seconds{suffix}": tut["total_seconds"],
        f"trainer_total_seconds{suffix}": ours["total_seconds"],
        f"trainer_train_seconds{suffix}": ours["train_seconds"],
        f"speedup_raw{suffix}": raw,
        f"speedup_per_sample{suffix}": per_sample,
        f"speedup_train_only_per_sample{suffix}": comparison.train_only_ratio,
    }
    result.text.append(
        f"**{comparison.threads} thread(s): {raw:.0f}× raw, {per_sample:.0f}× per-sample** "
        f"(tutorial {tut['total_seconds']:.2f} s, trainer {ours['total_seconds']:.3f} s per "
        f"epoch, medians)."
    )
    result.checks.append(
        Check(
            figure=f"tutorial epoch / trainer epoch at bs 100, {comparison.threads} thread(s) "
            "(min of raw and per-sample)",
            value=comparison.headline,
            target=f">= {TARGET_SPEEDUP:.0f}x",
            met=comparison.headline >= TARGET_SPEEDUP,
            note=f"raw {raw:.1f}x, per-sample {per_sample:.1f}x",
        )
    )


def method(context: Context, scales: Scales, rounds: int) -> str:
    tutorial, trainer = scales.first["tutorial"], scales.first["trainer"]
    return (
        f"One epoch of the classic tutorial's pipeline (torchvision `MNIST` + "
        f"`Compose([ToTensor(), Normalize((0.1307,), (0.3081,))])`, `DataLoader(batch_size=100, "
        f"shuffle=True)` over the {int(tutorial.train_samples):,} training images, "
        f"`nn.Linear(784, 10)` with softmax in forward, `CrossEntropyLoss`, `SGD(lr=0.1)`, then "
        f"the test pass over {int(tutorial.eval_samples):,} images) against one epoch "
        f"of `softmaxreg.trainer.train` at bs 100, lr 0.1 (its first epoch, warm-up included: "
        f"`epoch_seconds` + `eval_seconds`, training on {int(trainer.train_samples):,} "
        f"and evaluating validation + test, {int(trainer.eval_samples):,} images). "
        f"Same raw files, same process, same device ({context.device}); both pipelines at the "
        f"same thread count, first the default ({thread_counts()[0]}) and then 1; {rounds} "
        f"alternating round(s), after an untimed warm-up of both; medians compared. Two ratios: "
        f"raw (as measured) and per-sample (the trainer's training time scaled by "
        f"{scales.train:.3f} to the tutorial's training-set size and its evaluation time by "
        f"{scales.eval:.3f} to the tutorial's test-set size); the target (≥ "
        f"{TARGET_SPEEDUP:.0f}×) is checked on the smaller of the two."
    )


def run(context: Context) -> SectionResult:
    rounds = context.settings.tutorial_rounds
    train_loader, test_loader = loaders_over(str(context.mnist_root), context.mnist)
    warm_up(context, train_loader, test_loader)
    frame = measure(context, train_loader, test_loader, rounds)
    scales = Scales.of(frame)
    result = SectionResult(key="tutorial_speed", title="Tutorial pipeline vs trainer, bs 100")
    result.text.append(method(context, scales, rounds))
    summaries, ratios = [], []
    for threads in thread_counts():
        comparison = Comparison.at(frame, threads, scales)
        summaries += summary_rows(frame, comparison, scales)
        ratios += ratio_rows(comparison)
        report(result, comparison)
    result.text.append(
        "The tutorial spends its epoch in single-threaded per-image PIL transforms, so its time "
        "hardly depends on the thread count; the trainer's multi-threaded steps are the more "
        "sensitive to anything else on the same CPUs. The rounds table has every measurement."
    )
    result.tables += [
        Table("tutorial_vs_trainer", "Median epoch times (seconds)", pd.DataFrame(summaries)),
        Table("tutorial_vs_trainer_ratios", "Speed-up ratios", pd.DataFrame(ratios)),
        Table("tutorial_vs_trainer_rounds", "Every round", frame, show=False),
    ]
    result.params = {
        "rounds": str(rounds),
        "batch_size": str(BATCH_SIZE),
        "lr": str(LR),
        "threads": " ".join(map(str, thread_counts())),
    }
    record_rounds(result, frame)
    return result


def record_rounds(result: SectionResult, frame: pd.DataFrame) -> None:
    """Every round: each pipeline's epoch seconds, and tutorial / trainer of that round."""
    result.add_rounds_by(
        frame,
        ["threads", "pipeline"],
        "total_seconds",
        "{pipeline} epoch, bs 100, {threads} thread(s)",
    )
    for threads, at in frame.groupby("threads", sort=False):
        by_round = at.pivot(index="round", columns="pipeline", values="total_seconds")
        result.add_rounds(
            f"tutorial epoch / trainer epoch, bs 100, {threads} thread(s) (raw)",
            (by_round["tutorial"] / by_round["trainer"]).tolist(),
            better="higher",
            unit="×",
        )
