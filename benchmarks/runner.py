"""The suite's driver: parse flags, check everything, load the data once, run, report, record.

Order of work, so that bad input fails before anything is spent: flags (exit 2), device (exit 2),
results folder and tracking store (exit 2), data (exit 1, the loader names what was wrong); only
then the benchmarks. A benchmark that fails is reported as such and the others still run (exit
status 1 at the end); every CSV and plot is written as soon as its benchmark finishes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.common import (
    Context,
    NotMeasured,
    Progress,
    SectionResult,
    torch_threads,
)
from benchmarks.config import BenchConfig
from benchmarks.estimate import estimate_seconds
from benchmarks.report import write_environment, write_report, write_rounds, write_tables
from benchmarks.suite_data import load_data
from experiments.third_party_warnings import hide_third_party_warnings
from experiments.workers import usable_cores
from softmaxreg.cli import add_dataclass_arguments, dataclass_from_args
from softmaxreg.config import ConfigError
from softmaxreg.data import DataError, DataSplits
from softmaxreg.device import DeviceUnavailableError, environment, resolve_device

SECTION_MODULES: dict[str, str] = {
    "tutorial_speed": "benchmarks.tutorial_speed",
    "scaling": "benchmarks.scaling",
    "time_to_accuracy": "benchmarks.time_to_accuracy",
    "tutorial_bug": "benchmarks.tutorial_bug",
    "tracking_overhead": "benchmarks.tracking_overhead",
    "sweep_throughput": "benchmarks.sweep_throughput",
    "sweep_workers": "benchmarks.sweep_workers",
    "fashion_mnist": "benchmarks.fashion_mnist",
    "accuracy_ceiling": "benchmarks.accuracy_ceiling",
    "contention": "benchmarks.contention",
    "population": "benchmarks.population",
    "population_sweep": "benchmarks.population_sweep",
    "startup": "benchmarks.startup",
    "bookkeeping": "benchmarks.bookkeeping",
}


def parse_config(argv: list[str] | None) -> tuple[argparse.ArgumentParser, BenchConfig]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run the softmaxreg benchmark suite; write CSVs, plots and report.md to "
        "--out and one MLflow run per benchmark to the `benchmarks` experiment.",
    )
    add_dataclass_arguments(parser, BenchConfig)
    args = parser.parse_args(argv)
    return parser, dataclass_from_args(parser, BenchConfig, args)


def prepare_store(
    parser: argparse.ArgumentParser, config: BenchConfig, out: Path
) -> tuple[str, str | None]:
    """The tracking URI and artifact location, checked before any work (exit 2 if unusable)."""
    from experiments.stores import StoreError, check_tracking_uri, validate_tracking_uri

    if config.tracking_uri:
        uri, artifacts = config.tracking_uri, None
    else:
        uri = f"sqlite:///{(out / 'mlflow.db').resolve()}"
        artifacts = (out / "mlartifacts").resolve().as_uri()
    try:
        validate_tracking_uri(uri, "tracking_uri")
        check_tracking_uri(uri, "--tracking-uri")
    except ConfigError as error:
        parser.error(str(error).replace("tracking_uri=", "--tracking-uri ", 1))
    except StoreError as error:
        parser.error(str(error))
    return uri, artifacts


def command_line(argv: list[str] | None) -> str:
    return "python -m benchmarks " + shlex.join(sys.argv[1:] if argv is None else argv)


def section_runner(name: str) -> Callable[[Context], SectionResult]:
    return importlib.import_module(SECTION_MODULES[name]).run


def main(argv: list[str] | None = None) -> int:
    hide_third_party_warnings()
    parser, config = parse_config(argv)
    try:
        device = resolve_device(config.device)
    except DeviceUnavailableError as error:
        parser.error(str(error))
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        parser.error(f"--out {out}: cannot create the folder ({error})")
    if not os.access(out, os.W_OK):
        parser.error(f"--out {out}: folder is not writable")
    tracking_uri, artifact_location = prepare_store(parser, config, out)
    with torch_threads(config.threads or torch.get_num_threads()):
        return run_suite(config, device, out, tracking_uri, artifact_location, argv)


def run_suite(
    config: BenchConfig,
    device: torch.device,
    out: Path,
    tracking_uri: str,
    artifact_location: str | None,
    argv: list[str] | None,
) -> int:
    """Everything after the checks: data, benchmarks, report, MLflow runs. Returns the status."""
    settings = config.settings
    progress = Progress()
    load_start = os.getloadavg()[0]
    started = dt.datetime.now(dt.timezone.utc)
    with tempfile.TemporaryDirectory(prefix="softmaxreg-bench-") as scratch_name:
        scratch = Path(scratch_name)
        progress.line("loading data" + (" (synthetic)" if config.synthetic else ""))
        try:
            mnist, mnist_root, fashion = load_data(
                config, settings, device, scratch, log=progress.line
            )
        except DataError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        n_train = mnist.train_x.shape[0]
        estimate = estimate_seconds(config.sections, settings, n_train)
        progress.line(
            f"running {len(config.sections)} benchmark(s) on {device}"
            f"{' (quick mode)' if config.is_quick else ''}: estimated ~{estimate / 60:.1f} min "
            "on a 2-core CPU; results in "
            f"{out.resolve()}"
        )
        if load_start > (os.cpu_count() or 1):
            progress.line(
                f"warning: load average {load_start:.1f} exceeds the {os.cpu_count()} CPUs: other "
                "processes compete for them, so this run will take longer and its timings are "
                "pessimistic (multi-threaded steps suffer most); the report records the load"
            )
        from benchmarks.recording import BenchmarkRecorder

        recorder = BenchmarkRecorder(tracking_uri, artifact_location)
        env = environment(device)
        suite_name = f"suite-{started:%Y%m%d-%H%M%S}-{config.profile_name}"
        data_tags = {"mnist_checksum": mnist.checksum, "mnist_name": mnist.name}
        if isinstance(fashion, DataSplits):
            data_tags |= {"fashion_checksum": fashion.checksum, "fashion_name": fashion.name}
        suite_run = recorder.open_suite(
            suite_name,
            tags={**env, **data_tags, "benchmark": "suite"},
            params={
                "quick": str(config.is_quick),
                "profile": config.profile_name,
                "synthetic": str(config.synthetic),
                "sections": " ".join(config.sections),
                "device": str(device),
            },
        )
        context = Context(
            config=config,
            settings=settings,
            out=out,
            device=device,
            mnist=mnist,
            mnist_root=mnist_root,
            fashion=fashion,
            progress=progress,
            tracking_uri=tracking_uri,
            store_dir=scratch,
        )
        results: list[SectionResult] = []
        record = {
            **env,
            "profile": config.profile_name,
            "command": command_line(argv),
            "started": started.isoformat(),
            "cpu_count": os.cpu_count(),
            # What this process may run on (taskset, cgroups): fewer than cpu_count slows it.
            "usable_cpus": usable_cores(),
            "load_average_start": load_start,
            "suite_run_id": suite_run,
            "tracking_uri": tracking_uri,
            "sections": {},
        }
        skipped: list[tuple[str, str]] = []
        failed = False
        for number, name in enumerate(config.sections, start=1):
            progress.line(f"[{number}/{len(config.sections)}] {name}")
            start = time.perf_counter()
            load_before = os.getloadavg()[0]
            try:
                # A benchmark that changes the thread count must not leak it into the next one.
                with torch_threads(int(env["torch_threads"])):
                    result = section_runner(name)(context)
            except NotMeasured as reason:
                skipped.append((name, str(reason)))
                progress.line(f"[{number}/{len(config.sections)}] {name}: not measured: {reason}")
                continue
            except Exception as error:  # one broken benchmark must not cost the others' results
                traceback.print_exc()
                skipped.append((name, f"FAILED: {type(error).__name__}: {error}"))
                failed = True
                continue
            result.seconds = time.perf_counter() - start
            result.load = (load_before, os.getloadavg()[0])
            result.metrics |= {
                "load_average_start": result.load[0],
                "load_average_end": result.load[1],
            }
            record["sections"][name] = {
                "seconds": result.seconds,
                "load_average_start": result.load[0],
                "load_average_end": result.load[1],
            }
            # Written after every section, so that an interrupted run can still be compared.
            write_rounds(out, [*results, result])
            write_environment(out, record)
            files = write_tables(out, result) + [out / name for name, _ in result.plots]
            result.run_id = recorder.record_section(result, files, tags={**env, **data_tags})
            results.append(result)
            progress.line(
                f"[{number}/{len(config.sections)}] {name}: done in {result.seconds:.1f} s"
            )
        wall = progress.elapsed
        load_end = os.getloadavg()[0]
        header = {
            "Date": f"{started:%Y-%m-%d %H:%M} UTC",
            "Command": command_line(argv),
            "Wall time": f"{wall:.0f} s ({wall / 60:.1f} min; estimated up front "
            f"~{estimate / 60:.1f} min)",
            "Machine load": f"1-minute load average {load_start:.2f} at the start, "
            f"{load_end:.2f} at the end, on {os.cpu_count()} logical CPUs; it counts this run's "
            "own threads too, and other processes sharing the CPUs slow multi-threaded figures "
            "most",
            "Data": ", ".join(
                f"`{d.name}` ({d.train_x.shape[0]:,} train / {d.val_x.shape[0]:,} validation / "
                f"{d.test_x.shape[0]:,} test, checksum `{d.checksum}`)"
                for d in (mnist, fashion)
                if isinstance(d, DataSplits)
            ),
            "MLflow": f"experiment `benchmarks` at `{tracking_uri}`, suite run `{suite_run}` "
            "(one child run per section)",
        }
        report = write_report(
            out, results, header=header, environment=env, skipped=skipped, quick=config.is_quick
        )
        write_rounds(out, results)
        write_environment(out, record | {"load_average_end": load_end, "wall_seconds": wall})
        metrics = {"wall_seconds": wall}
        for result in results:
            metrics |= {f"{result.key}.{k}": v for k, v in result.metrics.items()}
        recorder.close_suite(metrics, out, status="FAILED" if failed else "FINISHED")
    progress.line(f"report: {report.resolve()}")
    for result in results:
        for check in result.checks:
            value = "—" if check.value is None else f"{check.value:.3g}"
            print(f"{check.verdict:>12}  {check.figure}: {value} (target {check.target})")
        for figure, value in result.headlines:
            print(f"{'':>12}  {figure}: {value}")
    for name, reason in skipped:
        print(f"{'':>12}  {name}: not measured: {reason}")
    print(f"wall time {wall:.0f} s")
    return 1 if failed else 0
