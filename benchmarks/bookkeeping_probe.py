"""One timed population sweep of many short trials, split into where each millisecond went.

    PYTHONPATH=<code root> python benchmarks/bookkeeping_probe.py --folder F --data-root D \
        --trials 192 --population 16 --out probe.json

Run as a script, not a module: `benchmarks.bookkeeping` runs it once against this tree and once
against an older commit's `experiments/` and `softmaxreg/` (the "before"), so it imports only
what both have: `experiments.worker`'s `open_study_and_mirror` and `run_trials`, the objective,
the tracker. The trial loop is the sweep's own (`run_trials`: ask, train, tell, mirror); only
the process start-up, the start and end reconcile and the end-of-study report are left out,
which are paid once per sweep, not per trial.

Where the time goes is measured on the main thread by wrapping a few functions of Optuna, the
mirror and the library (exclusive time, so a write inside a tell is not counted twice): the
parts are `arithmetic` (the population's training passes and evaluations), `library` (the rest
of `train_population`), `optuna_ask`, `optuna_writes` (set_user_attr, report, tell, and the
batched writer where the code has one), `mlflow` (every MLflow call made on the main thread,
and the wait for the mirror's queue to drain) and `other` (the wall time of the loop less all
of those: reads, logging, progress, GIL waits on helper threads). Bookkeeping = wall - arithmetic
- library. CPU is counted wherever bookkeeping runs: the main thread, helper threads and, in
code that mirrors to MLflow from a child process, that child's (reaped when the queue closes).
SQL statements are counted in this process only: the child's MLflow statements are not seen.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import resource
import threading
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine

BOOKKEEPING = ("optuna_ask", "optuna_writes", "mlflow")
TARGETS = [
    ("optuna.study", "Study.ask", "optuna_ask"),
    ("optuna.study", "Study.tell", "optuna_writes"),
    ("optuna.trial", "Trial.set_user_attr", "optuna_writes"),
    ("optuna.trial", "Trial.report", "optuna_writes"),
    ("optuna.trial", "Trial.should_prune", "optuna_writes"),
    ("experiments.mirror", "Mirror.call", "mlflow"),
    ("softmaxreg.population", "Population.train_pass", "arithmetic"),
    ("softmaxreg.population", "Stack.evaluate", "arithmetic"),
    ("softmaxreg.population", "train_population", "library"),
    # Present only in code that batches (absent names are skipped): the pass-epoch writer and
    # the wait for the MLflow queue.
    ("experiments.trial_records", "write_user_attrs", "optuna_writes"),
    ("experiments.mirror_queue", "MirrorQueue.drain", "mlflow"),
]


class Clock:
    """Exclusive main-thread seconds per part. A bookkeeping call inside another bookkeeping
    call counts for the outer one (a tell's reads are the tell's); training inside anything
    is training."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self.cpu: Counter[str] = Counter()
        """The main thread's CPU seconds per part: what the part cost, less the waits for a
        core that a loaded machine adds to its wall time."""
        self.calls: Counter[str] = Counter()
        self.stack: list[list] = []  # [part, children's seconds, children's CPU seconds]
        self.main = threading.get_ident()

    def wrap(self, function, part: str):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            if threading.get_ident() != self.main:
                return function(*args, **kwargs)
            if part in BOOKKEEPING and self.stack and self.stack[-1][0] in BOOKKEEPING:
                return function(*args, **kwargs)
            self.stack.append([part, 0.0, 0.0])
            start, cpu_start = time.perf_counter(), time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                cpu = time.thread_time() - cpu_start
                _, children, children_cpu = self.stack.pop()
                self.seconds[part] += elapsed - children
                self.cpu[part] += cpu - children_cpu
                self.calls[part] += 1
                if self.stack:
                    self.stack[-1][1] += elapsed
                    self.stack[-1][2] += cpu

        return timed


def install(clock: Clock) -> list[str]:
    """Wrap every target that this code has; return the names wrapped."""
    wrapped = []
    for module_name, qualname, part in TARGETS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        owner_name, _, attribute = qualname.rpartition(".")
        owner = getattr(module, owner_name, None) if owner_name else module
        if owner is None or not hasattr(owner, attribute):
            continue
        setattr(owner, attribute, clock.wrap(getattr(owner, attribute), part))
        if not owner_name:  # a module-level function: rebind where it was imported too
            for user in ("experiments.population_trials", "experiments.objective"):
                user_module = importlib.import_module(user)
                if hasattr(user_module, attribute):
                    setattr(user_module, attribute, getattr(module, attribute))
        wrapped.append(f"{module_name}.{qualname}")
    return wrapped


class Statements:
    """SQL statements and commits per store file (optuna.db, mlflow.db), every thread: counts
    that no load on the machine changes."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        event.listen(Engine, "before_cursor_execute", self.on_execute)
        event.listen(Engine, "commit", self.on_commit)

    @staticmethod
    def store(connection) -> str:
        return Path(str(connection.engine.url.database or "")).name or "other"

    def on_execute(self, connection, _cursor, statement, _parameters, _context, many) -> None:
        self.counts[f"statements:{self.store(connection)}"] += 1

    def on_commit(self, connection) -> None:
        self.counts[f"commits:{self.store(connection)}"] += 1


def open_sweep(args: argparse.Namespace, data):
    from experiments.config import SweepConfig
    from softmaxreg.config import TrainConfig

    folder = Path(args.folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    sweep = SweepConfig(
        study_name="bookkeeping",
        batch_sizes=tuple(args.batch_sizes),
        pruner="none",
        population=args.population,
        n_trials=args.trials,
        quiet=True,
        storage=f"sqlite:///{folder / 'optuna.db'}",
        tracking_uri=f"sqlite:///{folder / 'mlflow.db'}",
    )
    return open_loop(sweep, TrainConfig(epochs=args.epochs, device="cpu"), data, print)


def open_loop(sweep, train_config, data, log):
    """(study, objective, tracker): the sweep's trial loop without its start and end reconcile,
    which would repair what the queue left undone (tests/test_bookkeeping.py uses it too)."""
    from tqdm import tqdm

    from experiments.objective import Objective
    from experiments.store_urls import Stores
    from experiments.trial_tracker import TrialTracker
    from experiments.worker import environment_tags, fixed_settings, open_study_and_mirror
    from softmaxreg.config import DataConfig

    stores = Stores.from_config(sweep)
    study, mirror, _ = open_study_and_mirror(
        sweep, stores, sweep.study_name, train_config, data, 0, log, DataConfig()
    )
    tracker = TrialTracker(study, mirror, tqdm(disable=True), log)
    objective = Objective(
        sweep, train_config, data, environment_tags(data), 0,
        fixed_settings(sweep, DataConfig()), tracker.on_start,
    )  # fmt: skip
    return study, objective, tracker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", required=True)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--trials", type=int, default=192)
    parser.add_argument("--warmup-trials", type=int, default=16)
    parser.add_argument("--population", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import optuna

    try:  # the sweep's trial loop: in experiments.trial_loop (with a timeout) since the
        # storage-outage work, in experiments.worker in the baseline commit
        from experiments.trial_loop import run_trials as loop

        run_trials = functools.partial(loop, timeout=None)
    except ImportError:
        from experiments.worker import run_trials
    from softmaxreg.data import load_splits

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = load_splits("mnist", args.data_root, sources=("local",))
    study, objective, tracker = open_sweep(args, data)
    # Untimed warm-up pass: first-call costs (SQL compilation, MLflow's caches) are start-up.
    run_trials(study, objective, tracker, args.warmup_trials)
    study.sampler.reseed_rng()  # the timed trials draw afresh, not the warm-up's draws again
    clock = Clock()
    wrapped = install(clock)
    statements = Statements()
    start, main_cpu, process_cpu = time.perf_counter(), time.thread_time(), time.process_time()
    children_cpu = reaped_children_cpu()
    run_trials(study, objective, tracker, args.trials)
    wall = time.perf_counter() - start
    main_cpu, process_cpu = time.thread_time() - main_cpu, time.process_time() - process_cpu
    children_cpu = reaped_children_cpu() - children_cpu  # the mirror's process, reaped by now
    states = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    parts = dict(clock.seconds)
    parts["other"] = wall - sum(parts.values())
    cpu = dict(clock.cpu)
    cpu["other"] = main_cpu - sum(cpu.values())
    # Helper threads (the MLflow queue, heartbeats), torch's own threads if any, and the
    # mirror's child process where the code has one: bookkeeping's CPU wherever it runs.
    cpu["other_threads"] = process_cpu - main_cpu + children_cpu
    Path(args.out).write_text(
        json.dumps(
            {
                "trials": args.trials,
                "wall_seconds": wall,
                "seconds": parts,
                "cpu_seconds": cpu,
                "counts": dict(statements.counts),
                "calls": dict(clock.calls),
                "wrapped": wrapped,
                "states": dict(states),
            },
            indent=1,
        )
    )


def reaped_children_cpu() -> float:
    """User and system CPU seconds of this process's children that have ended and been
    waited for (the mirror's process is reaped when its queue closes)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
