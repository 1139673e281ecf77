"""The final fit: a configuration chosen on validation, trained again on train + validation.

    result = refit(config, splits)      # trains on the 60,000 images of MNIST's training set
    result.final_test_accuracy          # scored on the test split, which nothing chose on

Model selection holds the validation split out to compare configurations; once one is chosen,
those images carry no more information about the choice, so the final model learns from them
too (scikit-learn's `refit=True`, and how the tutorial trains on all 60,000). The test split is
never touched before the score. The refit's validation figures are meaningless (it trained on
those images), so only its test accuracy and its final weights are worth reporting.
"""

from __future__ import annotations

import dataclasses

import torch

from softmaxreg.config import TrainConfig
from softmaxreg.data import DataSplits
from softmaxreg.trainer import Callback, TrainResult, train


def train_and_validation(data: DataSplits) -> DataSplits:
    """`data` with the validation examples appended to the training split (the final fit)."""
    return dataclasses.replace(
        data,
        train_x=torch.cat([data.train_x, data.val_x]),
        train_y=torch.cat([data.train_y, data.val_y]),
        info={**data.info, "train_split": "train+validation"},
    )


def refit(config: TrainConfig, data: DataSplits, callback: Callback | None = None) -> TrainResult:
    """Train `config` on `data`'s training and validation splits together."""
    return train(config, train_and_validation(data), callback)
