"""Datasets: the time-to-accuracy table of `time_to_accuracy`, on Fashion-MNIST.

Same grid, seeds and epoch budgets as for MNIST; the targets are Fashion-MNIST's own (see
`benchmarks.time_to_accuracy.TARGETS`), because softmax regression tops out near 0.85 there.
"""

from __future__ import annotations

from benchmarks.common import Context, SectionResult
from benchmarks.time_to_accuracy import run_dataset


def run(context: Context) -> SectionResult:
    assert context.fashion is not None, "the runner loads Fashion-MNIST for this section"
    result = run_dataset(context, context.fashion, key="fashion_mnist")
    result.title = f"Datasets: time-to-accuracy per batch size ({context.fashion.name})"
    return result
