"""The machine's matmul rate at a population step's shapes: the compute limit of a sweep.

    from benchmarks.matmul_limit import rates
    for shape in rates(members=8, batch_sizes=(16, 256), seconds=1.0, cores=2):
        print(shape.batch_size, shape.one_process / 1e9, shape.all_processes / 1e9, shape.ratio)

A population step of K members at batch B is two matmuls (`softmaxreg.model.ClosedFormStep`, or
`FusedSGDStep` for plain SGD, which adds the second straight into the weights): the logits,
(10K x 784) @ (784 x B), and the weight gradient, (10K x B) @ (B x 784); evaluation
is (n x 784) @ (784 x 10K) in chunks of `EVAL_CHUNK` rows. Nothing a sweep does can be faster
than this arithmetic at these shapes, so the rate measured here, summed over one one-thread
process per core running at once, is the limit a sweep's wall time is judged against.

Each probe is its own process with torch on one thread (as a sweep's workers are), started once.
For each shape, the probes that run together are first prepared (tensors allocated, warmed up),
then told to run at once, and each counts how many calls it completes in `--seconds`: so the
processes overlap for the whole timed window and their rates can be added. `rates(...)` times 1
process and then `cores` processes at each shape; the ratio of the two is what the hardware lets
`--workers 2` gain.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

PIXELS, CLASSES = 28 * 28, 10
EVAL_SHAPE = 0
"""The batch-size key of the evaluation shape (an eval chunk against the stacked weights)."""
REPO_ROOT = Path(__file__).resolve().parent.parent


def step_flops(members: int, batch_size: int) -> float:
    """FLOPs of one population step: two matmuls of 2 x 784 x 10 per example and member."""
    return 2 * 2 * PIXELS * CLASSES * members * batch_size


def eval_flops(members: int, examples: int) -> float:
    """FLOPs of evaluating `members` stacked models on `examples` examples: one matmul."""
    return 2 * PIXELS * CLASSES * members * examples


def step_matmuls(weight: Tensor, x: Tensor, grad_logits: Tensor, grad_weight: Tensor) -> None:
    """A population step's two matmuls: logits, then the weight gradient."""
    torch.mm(weight, x.t())
    torch.mm(grad_logits, x, out=grad_weight)


def evaluation_matmul(x: Tensor, weight: Tensor) -> None:
    """One evaluation chunk's logits against the stacked weights."""
    torch.mm(x, weight.t())


def prepared(members: int, batch_size: int) -> tuple[Callable[[], None], float]:
    """The shape's work (one step's two matmuls, or one evaluation chunk) and its FLOPs."""

    from softmaxreg.model import EVAL_CHUNK

    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(members * CLASSES, PIXELS, generator=generator)
    if batch_size == EVAL_SHAPE:
        x = torch.randn(EVAL_CHUNK, PIXELS, generator=generator)
        work = functools.partial(evaluation_matmul, x, weight)
        flops = eval_flops(members, EVAL_CHUNK)
    else:
        x = torch.randn(batch_size, PIXELS, generator=generator)
        grad_logits = torch.randn(members * CLASSES, batch_size, generator=generator)
        work = functools.partial(step_matmuls, weight, x, grad_logits, torch.empty_like(weight))
        flops = step_flops(members, batch_size)
    for _ in range(20):  # warm-up: page in, let the allocator settle
        work()
    return work, flops


def timed_rate(work: Callable[[], None], flops: float, seconds: float) -> float:
    """FLOP/s of calling `work` for `seconds`."""
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(10):
            work()
        count += 10
    return count * flops / elapsed


def serve(members: int, seconds: float) -> None:
    """A probe process: `prep B` prepares shape B and answers `ready`; `run` times it and
    answers its FLOP/s. The parent sends `run` to every probe only once all are ready, so
    probes that run together overlap for the whole timed window."""

    torch.set_num_threads(1)
    work, flops = None, 0.0
    print("ready", flush=True)
    for line in sys.stdin:
        command, *args = line.split()
        if command == "prep":
            work, flops = prepared(members, int(args[0]))
            print("ready", flush=True)
        elif command == "run" and work is not None:
            print(timed_rate(work, flops, seconds), flush=True)


@dataclass(frozen=True)
class ShapeRate:
    """One shape's FLOP/s with one process, and summed over `processes` run at once."""

    batch_size: int
    """0 for the evaluation shape."""
    one_process: float
    all_processes: float
    processes: int

    @property
    def ratio(self) -> float:
        return self.all_processes / self.one_process


class Probes:
    """`count` probe processes, started once (each imports torch once), driven per shape."""

    def __init__(self, count: int, members: int, seconds: float) -> None:
        argv = [sys.executable, "-m", "benchmarks.matmul_limit", "--members", str(members),
                "--seconds", str(seconds)]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
        self.processes = [
            subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
            )
            for _ in range(count)
        ]
        self.answers(self.processes)

    def answers(self, processes: list[subprocess.Popen]) -> list[str]:
        replies = []
        for process in processes:
            reply = process.stdout.readline().strip()  # type: ignore[union-attr]
            if not reply:
                raise RuntimeError(f"matmul probe exited {process.wait()}")
            replies.append(reply)
        return replies

    def send(self, processes: list[subprocess.Popen], line: str) -> None:
        for process in processes:
            process.stdin.write(line + "\n")  # type: ignore[union-attr]
            process.stdin.flush()  # type: ignore[union-attr]

    def rate(self, batch_size: int, count: int) -> float:
        """Summed FLOP/s of the first `count` probes running shape `batch_size` at once."""
        running = self.processes[:count]
        self.send(running, f"prep {batch_size}")
        self.answers(running)
        self.send(running, "run")
        return sum(float(reply) for reply in self.answers(running))

    def close(self) -> None:
        for process in self.processes:
            process.stdin.close()  # type: ignore[union-attr]
            process.wait()


def rates(
    members: int, batch_sizes: tuple[int, ...], seconds: float, cores: int
) -> list[ShapeRate]:
    """Every shape's rate with 1 process and with `cores` processes (the evaluation shape too),
    the two measured back to back per shape so a slow spell hits both."""
    probes = Probes(cores, members, seconds)
    try:
        measured = []
        for batch_size in (*batch_sizes, EVAL_SHAPE):
            one = probes.rate(batch_size, 1)
            every = probes.rate(batch_size, cores) if cores > 1 else one
            measured.append(ShapeRate(batch_size, one, every, cores))
        return measured
    finally:
        probes.close()


def limit_seconds(
    epochs_by_batch: dict[int, int],
    members: int,
    train_examples: int,
    eval_examples: int,
    rate_by_batch: dict[int, float],
) -> tuple[float, float]:
    """(FLOPs, seconds) of a study's arithmetic at the given rates: each trial-epoch trains on
    `train_examples` (two matmuls per example) and evaluates `eval_examples` (one). A trial's
    share of a population step is 1/members of it, so its FLOPs are counted per trial."""
    flops = seconds = 0.0
    for batch_size, epochs in epochs_by_batch.items():
        steps = -(-train_examples // batch_size)
        train = epochs * steps * step_flops(members, batch_size) / members
        evaluate = epochs * eval_flops(members, eval_examples) / members
        flops += train + evaluate
        seconds += train / rate_by_batch[batch_size] + evaluate / rate_by_batch[EVAL_SHAPE]
    return flops, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=1.5)
    args = parser.parse_args(argv)
    serve(args.members, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
