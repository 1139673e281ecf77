"""Train softmax regression once and print a per-epoch table.

    python -m experiments.train                  # the tutorial: bs 100, lr 0.1, 10 epochs
    python -m experiments.train --batch-size 1000 --lr 0.5 --epochs 5 --device cpu
    python -m experiments.train --model tutorial_double_softmax  # the tutorial's double-softmax bug

Every flag comes from `TrainConfig` and `DataConfig` (see `--help`); invalid values exit with
status 2 before any data is touched. Nothing is logged anywhere: this is the plain trainer.
"""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from experiments.common import load_data_or_exit, parse_configs, say
from experiments.process_exit import exit_without_teardown
from experiments.third_party_warnings import hide_third_party_warnings
from softmaxreg.config import DataConfig, TrainConfig
from softmaxreg.device import DeviceUnavailableError, resolve_device
from softmaxreg.trainer import EpochMetrics, TrainingDiverged, train

TABLE_HEADER = f"{'epoch':>5}  {'train loss':>10}  {'val acc':>7}  {'test acc':>8}  {'epoch s':>8}"


def format_row(metrics: EpochMetrics) -> str:
    warmup = " (warm-up)" if metrics.warmup else ""
    return (
        f"{metrics.epoch:>5}  {metrics.train_loss:>10.4f}  {metrics.val_accuracy:>7.4f}  "
        f"{metrics.test_accuracy:>8.4f}  {metrics.epoch_seconds:>8.3f}{warmup}"
    )


def main(argv: list[str] | None = None) -> int:
    hide_third_party_warnings()
    parser = argparse.ArgumentParser(
        prog="python -m experiments.train",
        description="Train softmax regression once and print a per-epoch table.",
    )
    train_config, data_config = parse_configs(parser, argv, TrainConfig, DataConfig)
    try:
        device = resolve_device(train_config.device)
    except DeviceUnavailableError as error:
        parser.error(str(error))
    data = load_data_or_exit(data_config, device)

    progress = tqdm(total=train_config.epochs, desc="epochs", unit="epoch", file=sys.stderr)
    rows: list[str] = []

    def report(metrics: EpochMetrics) -> None:
        rows.append(format_row(metrics))
        progress.set_postfix(val_acc=f"{metrics.val_accuracy:.4f}")
        progress.update()

    try:
        result = train(train_config, data, callback=report)
    except TrainingDiverged as error:
        progress.close()
        say(f"error: {error}")
        return 1
    progress.close()

    print(f"device {result.device}, dataset {data.name}, checksum {data.checksum}")
    print(TABLE_HEADER)
    print("\n".join(rows))
    target = train_config.target_accuracy
    reached = (
        f"{result.time_to_target_seconds:.3f} s"
        if result.time_to_target_seconds is not None
        else "not reached"
    )
    print(
        f"final test accuracy {result.final_test_accuracy:.4f}; best val accuracy "
        f"{result.best_val_accuracy:.4f} (epoch {result.best_epoch.epoch}, test "
        f"{result.test_accuracy_at_best_val:.4f}); time to {target:.0%} val accuracy: {reached}; "
        f"steady epoch {result.steady_epoch_seconds:.3f} s "
        f"({result.steady_samples_per_second:,.0f} samples/s)"
    )
    return 0


if __name__ == "__main__":
    exit_without_teardown(main())
