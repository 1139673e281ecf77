"""The `--workers N` command: fork N workers on one study, then report on the whole study.

    status = run_coordinator(run_worker, sweep, train_config, data, stores, study_name)

`experiments.sweep.main` calls it once the flags, the data and the stores are ready (and the
heap frozen); the workers themselves are `experiments.workers`'. While the last worker trains,
the study's end begins on the core a first worker freed (`experiments.study_end.EarlyEnd`); if
the study's last worker was one of ours, the rest of the end is this command's
(`experiments.finish_handoff`).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import math
import time
from collections import Counter
from dataclasses import replace

from experiments.common import say
from experiments.config import SweepConfig
from experiments.finish_handoff import FinishHandoff
from experiments.reconcile import reconcile_study
from experiments.report import format_report
from experiments.store_faults import is_store_failure, store_failure_line
from experiments.store_urls import Stores
from experiments.study import find_study
from experiments.study_end import EarlyEnd, StudyEnd, report_mirror
from experiments.trial_budget import TrialBudget
from experiments.worker import study_outcome
from experiments.workers import RunWorker, forked_count, run_workers, threads_per_worker
from softmaxreg.config import TrainConfig
from softmaxreg.data import DataSplits


def run_coordinator(
    run_worker: RunWorker,
    sweep: SweepConfig,
    train_config: TrainConfig,
    data: DataSplits,
    stores: Stores,
    name: str,
) -> int:
    """--workers N: fork N workers, then report on the whole study, reconciled first if a
    worker failed (`reconcile_study`) or if the study's last worker was one of ours, which then
    leaves the rest of the study's end to this command too (`experiments.finish_handoff`)."""
    started = time.perf_counter()
    began = datetime.datetime.now()
    handoff = FinishHandoff()
    budget = TrialBudget(sweep.n_trials, workers=forked_count(sweep))  # shared, claimed as they go
    run_worker = functools.partial(run_worker, handoff=handoff, budget=budget)
    # --threads as given, else the cores shared out so N workers do not oversubscribe them.
    threads = train_config.threads or threads_per_worker(sweep.workers)
    early = EarlyEnd(replace(sweep, study_name=name), train_config, data, stores)
    status, summaries = run_workers(sweep, threads, run_worker, early)
    print("\n".join(summaries))
    try:
        study = early.study or find_study(stores.optuna_url, name)
    except Exception as error:
        if not is_store_failure(error):
            raise
        return status or 1  # each worker said why in its own line
    if study is None:  # every worker failed before starting
        return status or 1
    with contextlib.ExitStack() as end:
        end.callback(early.cancel)  # a refit child the study's end did not take
        try:
            # If the study's end is ours, its refit and plots run beside the reconcile and the
            # report's reads (experiments.study_end).
            study_end = None
            if handoff.handed_over:
                begin = StudyEnd.begin(
                    study, sweep, train_config, data, stores.optuna_url, say, early.refit
                )
                study_end = end.enter_context(begin)
            mirror = (
                (early.mirror or report_mirror(sweep, stores, study))
                if status == 0
                else reconcile_study(
                    replace(sweep, study_name=name, retries=0),
                    log=say,
                )[0]
            )
            if study_end is not None and status == 0:
                mirror.reconcile(study)  # the last worker left the study's one end reconcile to us
        except Exception as error:  # a store out of reach or full: the workers said it already
            if not is_store_failure(error):
                raise
            say(f"error: {store_failure_line(error)}")
            return status or 1
        ours = range(sweep.worker_id, sweep.worker_id + sweep.workers)
        mine = [
            t
            for t in study.get_trials(deepcopy=False)
            if t.user_attrs.get("worker") in ours and t.datetime_start and t.datetime_start >= began
        ]
        outcome = study_outcome(
            study,
            mirror,
            Counter(t.state.name for t in mine),
            sum(t.duration.total_seconds() for t in mine if t.duration),
            started,
            [],
        )
        outcome.tracking_seconds = math.nan  # the workers spent it; each reports its own share
        if study_end is not None:
            try:
                study_end.finish(mirror, outcome)
            except Exception as error:  # a store out of reach or full: reconcile finishes it later
                if not is_store_failure(error):
                    raise
                say(f"error: {store_failure_line(error)}")
                return status or 1
        print(format_report(outcome, sweep, stores))
        return status
