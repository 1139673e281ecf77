"""Training runs flush denormal floats to zero (`softmaxreg.device.flush_denormals`), and only
while they run: at small batches and learning rates near 1, denormal softmax probabilities put
every op of a step on the CPU's slow path (benchmarks measure that; here only the mode is)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from softmaxreg.config import TrainConfig
from softmaxreg.device import flush_denormals, flushing_denormals
from softmaxreg.population import train_population
from softmaxreg.trainer import EpochMetrics, train


@pytest.fixture(autouse=True)
def denormals_kept():
    torch.set_flush_denormal(False)
    yield
    torch.set_flush_denormal(False)


@dataclasses.dataclass
class RecordMode:
    """A callback that records, after each epoch (inside the run), whether denormals flush."""

    seen: list[bool]

    def __call__(self, metrics: EpochMetrics) -> bool:
        self.seen.append(flushing_denormals())
        return False


def config(lr: float) -> TrainConfig:
    return TrainConfig(batch_size=500, lr=lr, epochs=2, device="cpu")


def test_train_flushes_denormals_while_it_runs_only(synthetic_splits):
    seen: list[bool] = []
    train(config(0.1), synthetic_splits, callback=RecordMode(seen))
    assert seen == [True, True]
    assert not flushing_denormals()


def test_a_population_flushes_denormals_while_it_runs_only(synthetic_splits):
    seen: list[bool] = []
    train_population([config(0.1), config(0.3)], synthetic_splits, [RecordMode(seen), None])
    assert seen == [True, True]
    assert not flushing_denormals()


def test_flush_denormals_restores_the_mode_it_found():
    assert torch.tensor(1e-39).item() != 0  # a denormal float32 survives by default
    with flush_denormals():
        assert flushing_denormals()
    assert not flushing_denormals()
    torch.set_flush_denormal(True)
    with flush_denormals():
        pass
    assert flushing_denormals()
