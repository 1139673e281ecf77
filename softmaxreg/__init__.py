"""softmaxreg: softmax regression on MNIST, a fast reusable trainer and its benchmarks.

The library half: data (`load_splits`), model (`SoftmaxRegression`), trainer (`train`), K models
at once on shared batches (`train_population`), the final fit on train + validation
(`refit`), config (`TrainConfig`, `DataConfig`). It knows
nothing of Optuna or MLflow; `experiments/` wires those in.
"""

from softmaxreg.config import ConfigError, DataConfig, TrainConfig
from softmaxreg.data import DATASETS, DataError, DatasetSpec, DataSplits, load_splits
from softmaxreg.device import DeviceUnavailableError, environment, resolve_device, synchronize
from softmaxreg.model import SoftmaxRegression, TutorialDoubleSoftmax, build_model
from softmaxreg.population import MemberResult, train_population
from softmaxreg.refit import refit, train_and_validation
from softmaxreg.trainer import EpochMetrics, TrainingDiverged, TrainResult, evaluate, train

__all__ = [
    "DATASETS",
    "ConfigError",
    "DataConfig",
    "DataError",
    "DataSplits",
    "DatasetSpec",
    "DeviceUnavailableError",
    "EpochMetrics",
    "MemberResult",
    "SoftmaxRegression",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "TutorialDoubleSoftmax",
    "build_model",
    "environment",
    "evaluate",
    "load_splits",
    "refit",
    "resolve_device",
    "synchronize",
    "train",
    "train_and_validation",
    "train_population",
]
