"""Datasets: the time-to-accuracy table of `time_to_accuracy`, on Fashion-MNIST.

Same grid, seeds and epoch budgets as for MNIST; the targets are Fashion-MNIST's own (see
`benchmarks.time_to_accuracy.TARGETS`), because softmax regression tops out near 0.85 there.
Where Fashion-MNIST cannot be loaded (offline, no local copy), the section is skipped with the
reason in the report and the rest of the suite runs.
"""

from __future__ import annotations

from benchmarks.common import Context, NotMeasured, SectionResult
from benchmarks.time_to_accuracy import run_dataset


def run(context: Context) -> SectionResult:
    if isinstance(context.fashion, str):  # the runner could not load it: say why, run the rest
        raise NotMeasured(context.fashion)
    assert context.fashion is not None, "the runner loads Fashion-MNIST for this section"
    result = run_dataset(context, context.fashion, key="fashion_mnist")
    result.title = f"Datasets: time-to-accuracy per batch size ({context.fashion.name})"
    return result
