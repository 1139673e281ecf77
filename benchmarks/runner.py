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
    all_threads,
    torch_threads,
)
from benchmarks.config import BenchConfig, Settings
from benchmarks.contention import PIPELINES as CONTENTION_PIPELINES
from benchmarks.report import write_environment, write_report, write_rounds, write_tables
from experiments.third_party_warnings import hide_third_party_warnings
from experiments.workers import usable_cores
from softmaxreg.cli import add_dataclass_arguments, dataclass_from_args
from softmaxreg.config import ConfigError
from softmaxreg.data import DataError, DataSplits, load_splits
from softmaxreg.device import DeviceUnavailableError, environment, resolve_device
from softmaxreg.synthetic import write_synthetic_idx

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

FULL_EPOCH_SAMPLES = 55000


def epoch_cost(batch_size: int, n_train: int) -> float:
    """Rough seconds of one training epoch plus evaluation on this project's 2-core CPU."""
    steps = -(-n_train // min(batch_size, n_train))
    return (0.045 * n_train / FULL_EPOCH_SAMPLES + steps * 75e-6) + 0.01 * n_train / 55000


def estimate_seconds(sections: tuple[str, ...], settings: Settings, n_train: int) -> float:
    """A rough cost model of the run, to say up front how long it will take on this project's
    2-core CPU (per-unit costs, times the factor measured per section)."""
    s = settings
    scale = n_train / FULL_EPOCH_SAMPLES
    all_bs = sum(epoch_cost(bs, n_train) for bs in s.batch_sizes)
    bs100 = epoch_cost(100, n_train)
    cost = {
        "tutorial_speed": s.tutorial_rounds * 2 * (95e-6 * 70000 * scale + bs100),
        "scaling": s.scaling_passes
        * (1 + s.scaling_epochs_per_pass)
        * all_bs
        * (1.0 + 1.6 * (all_threads() > 1)),
        "time_to_accuracy": all_bs
        * (len(s.sweep_lrs) * s.sweep_epochs + s.seeds * s.tta_max_epochs * 0.6),
        "tutorial_bug": s.seeds * s.ablation_epochs * bs100 * 2.8,
        "tracking_overhead": 2 * s.tracking_repeats * s.tracking_epochs * bs100 + 3,
        # A default sweep (40 trials, 10 epochs, some pruned) takes about two minutes here.
        "sweep_throughput": (s.sweep_trials or 40) * (s.sweep_epochs_per_trial or 10) * 0.3 + 5,
        # Four runs of the same sweep as processes (1, 2, 2, 1 workers, ~0.07 s per trial-epoch
        # on average, ~15 s of start-up, refit and report), and two passes of the matmul probes
        # (~4 s of start-up, then 5 shapes timed with 1 and with all processes).
        "sweep_workers": 4 * (s.limit_trials * s.limit_epochs * 0.07 + 15)
        + 2 * (4 + 5 * 2 * (s.limit_probe_seconds + 0.1)),
    }
    cost["fashion_mnist"] = cost["time_to_accuracy"]
    # A population of K costs about K / 3 separate epochs (benchmarks.population); lbfgs fits
    # take ~15 s each on the full data.
    members = 3 * len(s.ceiling_lrs) * len(s.ceiling_weight_decays)
    cost["accuracy_ceiling"] = (
        sum(epoch_cost(bs, n_train) for bs in s.ceiling_batch_sizes)
        * sum(s.ceiling_epochs)
        * members
        / 3
        + s.seeds
        * (max(s.ceiling_epochs) * epoch_cost(64, n_train) + 4 * s.ablation_epochs * bs100)
        + len(s.sklearn_cs) * 15 * scale
    )
    # Every measurement lasts at least contention_min_seconds (a slow pipeline's one trial can
    # last longer): rounds x 2 conditions x batch sizes x pipelines of them.
    examples = min(s.contention_examples, n_train)
    trial = s.contention_epochs * 95e-6 * examples  # the tutorial pipeline's, the slowest
    cost["contention"] = (
        s.contention_rounds
        * 2
        * len(s.contention_batch_sizes)
        * len(CONTENTION_PIPELINES)
        * max(s.contention_min_seconds, trial)
    )
    cost["population"] = {"quick": 8, "standard": 25, "full": 180}[s.population_sizes]
    # Each round runs both modes as processes: ~20 s of start-up each, then about 0.2 s per
    # epoch of a trial alone, a third of that in a population.
    epochs = s.population_sweep_epochs * s.population_sweep_trials
    modes = 1 + len(s.population_sweep_sizes)
    cost["population_sweep"] = s.population_sweep_rounds * (
        20 * modes + 0.2 * epochs * (1 + len(s.population_sweep_sizes) / 3)
    )
    # Per round a 1-trial sweep (~15 s) and the bare imports (~5 s), a cold sweep first; then
    # a sweep of 4 two-epoch trials per worker for each memory figure.
    cost["startup"] = (
        16 + 20 * s.startup_rounds + sum(12 + 3 * workers for workers in s.startup_workers)
    )
    # Per run ~12 s of start-up and warm-up, then ~0.5 s per trial before, ~0.15 s after.
    cost["bookkeeping"] = s.bookkeeping_rounds * (24 + 0.65 * s.bookkeeping_trials)
    return 15 + sum(cost[name] * MEASURED_FACTOR.get(name, 1.0) for name in sections)


MEASURED_FACTOR = {
    "tutorial_speed": 2.4,
    "scaling": 1.7,
    "time_to_accuracy": 1.8,
    "tutorial_bug": 1.9,
    "tracking_overhead": 1.8,
    "sweep_throughput": 0.33,
    "fashion_mnist": 2.0,
    "accuracy_ceiling": 1.45,
    "contention": 4.5,
    "population": 0.5,
    "population_sweep": 1.5,
}
"""Seconds measured / the model above, per section, in the full run of benchmarks/report (2 CPUs,
load average 1-2.6): the model counts the per-unit costs, this corrects what it leaves out
(start-up, evaluation, busy threads waiting). A new section without a factor counts as 1."""


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


def load_data(
    config: BenchConfig, settings: Settings, device: torch.device, scratch: Path, log
) -> tuple[DataSplits, Path, DataSplits | str | None]:
    """(MNIST splits, the data folder they came from, Fashion-MNIST splits, or why they could not
    be loaded, or None when no section needs them)."""
    need_fashion = "fashion_mnist" in config.sections
    if config.synthetic:
        root = scratch / "data"
        splits = []
        for seed, base in ((0, "mnist"), (7, "fashion_mnist")):
            if base == "fashion_mnist" and not need_fashion:
                splits.append(None)
                continue
            _, spec = write_synthetic_idx(
                root,
                n_train=settings.synthetic_train,
                n_test=settings.synthetic_test,
                seed=seed,
                base=base,
            )
            splits.append(
                load_splits(
                    spec, root, device=device, val_size=settings.synthetic_val, sources=("local",)
                )
            )
        return splits[0], root, splits[1]
    root_arg = config.data_root or None
    mnist = load_splits("mnist", root_arg, device=device, log=log)
    fashion = load_fashion(root_arg, device, log) if need_fashion else None
    if isinstance(fashion, DataSplits):
        fashion = limit(fashion, settings)
    return limit(mnist, settings), Path(mnist.info["raw_dir"]).parent.parent, fashion


def load_fashion(root: str | None, device: torch.device, log) -> DataSplits | str:
    """Fashion-MNIST, or why it cannot be had here. Only its own section needs it, so a machine
    that cannot fetch it (offline, no local copy) skips that section instead of the whole run."""
    try:
        return load_splits("fashion_mnist", root, device=device, log=log)
    except DataError as error:
        log(f"Fashion-MNIST is not available, its section will be skipped: {error}")
        return f"skipped: Fashion-MNIST could not be loaded ({error})"


def limit(data: DataSplits, settings: Settings) -> DataSplits:
    """The first `max_*_examples` of each split (quick mode on real data), else `data` itself."""
    n_train, n_eval = settings.max_train_examples, settings.max_eval_examples
    if n_train is None and n_eval is None:
        return data
    return DataSplits(
        name=data.name,
        train_x=data.train_x[:n_train],
        train_y=data.train_y[:n_train],
        val_x=data.val_x[:n_eval],
        val_y=data.val_y[:n_eval],
        test_x=data.test_x[:n_eval],
        test_y=data.test_y[:n_eval],
        checksum=data.checksum,
        mean=data.mean,
        std=data.std,
        info={**data.info, "sliced": f"first {n_train} train / {n_eval} val / {n_eval} test"},
    )


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
