"""Device choice, device synchronisation and the environment recorded with every result.

All device decisions live here: `resolve_device("auto")` picks CUDA, then MPS, then CPU; a named
device that is not available raises `DeviceUnavailableError` instead of silently falling back.
Timings elsewhere call `synchronize(device)` before reading `time.perf_counter()`, because CUDA
and MPS kernels run asynchronously and an unsynchronised clock measures only the launch.

CPU threads are chosen here too: `choose_threads(batch_size, requested, device)` gives the torch
thread count a training run uses, and `torch_threads(count)` holds it for a block:

    with torch_threads(choose_threads(config.batch_size, config.threads, device)):
        ...  # train

Training runs also hold `flush_denormals()`: the CPU treats denormal floats as zero for the run.
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from importlib.metadata import version as installed_version
from pathlib import Path

import torch


class DeviceUnavailableError(RuntimeError):
    """The requested device does not exist on this machine."""


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str) -> torch.device:
    """Turn `auto|cpu|cuda|mps` (or `cuda:N`) into a usable `torch.device`."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(
                f"device {name!r} was requested but CUDA is not available "
                f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
                "use --device cpu or --device auto"
            )
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceUnavailableError(
                f"device {name!r} was requested but only {torch.cuda.device_count()} "
                "CUDA device(s) exist"
            )
        return device
    if name == "mps":
        if not _mps_available():
            raise DeviceUnavailableError(
                "device 'mps' was requested but the MPS backend is not available "
                "(it needs Apple silicon and macOS 12.3+); use --device cpu or --device auto"
            )
        return torch.device("mps")
    raise DeviceUnavailableError(f"unknown device {name!r}: expected auto, cpu, cuda or mps")


def synchronize(device: torch.device) -> None:
    """Wait for all queued kernels on `device`, so a following clock read is honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


SINGLE_THREAD_MAX_ROWS = 512
"""Largest step of one model (examples) that `choose_threads` runs on one thread. Measured on this
project's 2-core AMD EPYC VM (torch 2.14, MNIST-shaped 55,000 x 784 data, one epoch of the
trainer's steps, best of 5 interleaved runs, 1 vs 2 threads): 2 threads were 6% slower at batch
16, 3% slower at 64 and 5% slower at 128, even (1.17x faster at best, 0.99x at the median) at
256 and 512, then clearly faster from 768 (1.3x), 1024 (1.4x) and 2048 (1.5x). When another
process holds a core, a second thread waits on it and small steps get far slower, so steps up to
512 rows stay on one thread."""


def choose_threads(batch_size: int, requested: int, device: torch.device, models: int = 1) -> int:
    """torch intra-op threads for training `models` models on batches of `batch_size`.

    `requested` > 0 is used as given. 0 (auto) on the CPU picks 1 thread for a population
    (`models` > 1) and for one model whose steps have at most `SINGLE_THREAD_MAX_ROWS` rows, else
    keeps the current count, so auto never uses more threads than the caller allowed. A
    population is the throughput mode: it gains K models per pass on one core (cores are for
    more workers), and with a second thread it was 3-15x slower whenever other processes used
    the CPUs (benchmarks.contention, population rows) against at most 1.5x faster on an idle
    machine. On CUDA and MPS the threads only feed the host side, and auto keeps the count.
    """
    if requested > 0:
        return requested
    if device.type == "cpu" and (models > 1 or batch_size <= SINGLE_THREAD_MAX_ROWS):
        return 1
    return torch.get_num_threads()


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with `count` intra-op threads, restoring the previous count afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def flushing_denormals() -> bool:
    """Does this thread's CPU flush denormal floats to zero now? (torch sets it, but has no
    getter: a denormal times one is zero only when flushing.)"""
    return bool(torch.tensor(1e-39).mul(1.0) == 0)


@contextmanager
def flush_denormals() -> Iterator[None]:
    """Run the block with denormal floats flushed to zero on the CPU, restoring the previous mode.

    With learning rates near 1 at small batches (the sweep searches up to 1.0 and down to batch
    16) the softmax of sharp logits underflows into denormals, and every op that reads them takes
    the CPU's slow path: a K=8 population's batch-16 epoch took 0.47-0.51 s instead of 0.24 s
    (one thread; no change at batch 1024, 4% at 128). Flushing changes only values below 1.2e-38,
    far under float32's rounding of the weights. The mode is the calling thread's, so it covers
    a one-thread run (the sweep's) whole, and only this thread's share of a multi-threaded one.
    No effect on CUDA or MPS kernels.
    """
    previous = flushing_denormals()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(previous)


def device_name(device: torch.device) -> str:
    """Human-readable name of the hardware behind `device`."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return cpu_model()


@cache
def cpu_model() -> str:
    """The CPU's marketing name, read from /proc/cpuinfo where Linux provides it."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


@cache
def git_commit(path: str | None = None) -> str:
    """The commit of the checkout the code runs from, with '-dirty' if it has local changes."""
    cwd = path or str(Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
        )
        suffix = "-dirty" if dirty.stdout.strip() else ""
        return commit.stdout.strip() + suffix
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment(device: torch.device) -> dict[str, str]:
    """Facts a reader needs to trust or reproduce a timing: recorded with every result."""
    return {
        "device": str(device),
        "device_name": device_name(device),
        "cpu_model": cpu_model(),
        "cpu_count": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "torch_version": torch.__version__,
        "torchvision_version": installed_version("torchvision"),
        "cuda_version": str(torch.version.cuda),
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
    }
