"""The study's end, by its last worker or by that worker's command: refit, plots, model, parent run.

    with StudyEnd.begin(study, sweep, train_config, data, optuna_url, log) as end:
        ...reconcile, read the study for the report...   # meanwhile: the plots
        end.finish(mirror, outcome)        # the refit, the model, the tables, the parent run

Why begin before the reconcile: at the study's end every worker has exited, and its work is of
kinds that need not wait for each other: the reconcile and the report's reads of both stores
(Python, one core), the plots (a child: `experiments.plot_process`, which reads Optuna's trials
alone) and the refit (torch). Done one after another they kept one core idle. What the plots
read is the study as its last worker left it: if the reconcile then fails a dead worker's
trial, they are drawn again (`PlotDrawing.refresh`).

With --workers N the end begins earlier still (`EarlyEnd`): on the core a first worker to end
frees while the last one trains, the command opens the study and its mirror and forks the refit
(`experiments.refit_process`), so that of the study's end only the reconcile, the report's
reads and the model are left once the last worker exits. With one worker the refit follows the
reconcile: on a thread beside it, it was no faster (2.1-2.2 s from the last trial to the exit
either way: its small torch calls wait for the GIL the reconcile holds), and forking a process
that has trained on several torch threads is not safe (a forked OpenMP pool hangs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import optuna

from experiments.common import say
from experiments.config import SweepConfig
from experiments.mirror import Mirror
from experiments.plot_process import PlotDrawing, study_plots
from experiments.refit import ensure_refit
from experiments.refit_process import RefitApart
from experiments.report import SweepOutcome, study_metrics, write_study_tables
from experiments.store_faults import is_store_failure
from experiments.store_urls import Stores
from experiments.study import find_study
from softmaxreg.config import TrainConfig
from softmaxreg.data import DataSplits


@dataclass
class StudyEnd:
    """The end of one study, begun: its plots being drawn and (unless --no-refit) its refit."""

    study: optuna.Study
    drawing: PlotDrawing
    train_config: TrainConfig
    data: DataSplits
    sweep: SweepConfig
    optuna_url: str
    log: Callable[[str], None]
    refit: RefitApart | None

    @classmethod
    @contextmanager
    def begin(
        cls,
        study: optuna.Study,
        sweep: SweepConfig,
        train_config: TrainConfig,
        data: DataSplits,
        optuna_url: str,
        log: Callable[[str], None],
        refit: RefitApart | None = None,
    ) -> Iterator[StudyEnd]:
        """Start the plots; `refit` is one begun already (`EarlyEnd`)."""
        with study_plots(study, data.device) as drawing:
            if drawing.apart and not train_config.threads:
                train_config = replace(train_config, threads=1)  # the other core draws
            yield cls(study, drawing, train_config, data, sweep, optuna_url, log, refit)

    def finish(self, mirror: Mirror, outcome: SweepOutcome) -> None:
        """Once the refit is stored, register the best model; once the plots are drawn, close
        the parent run with a summary of the study, its plots and tables."""
        self.drawing.refresh(self.study)
        if self.refit is not None:
            self.refit.result()  # the child's (or refit here, if a later trial became best)
        elif self.sweep.refit:
            ensure_refit(self.study, self.data, self.train_config, self.optuna_url, self.log)
        mirror.ensure_best_model(self.study)
        plot_notes = self.drawing.wait()
        outcome.notes += plot_notes
        folder = self.drawing.folder
        write_study_tables(outcome.trials, outcome.best_per_batch_size, plot_notes, folder)
        mirror.finish_parent_run("FINISHED", study_metrics(outcome.trials), folder)


def report_mirror(sweep: SweepConfig, stores: Stores, study: optuna.Study) -> Mirror:
    """The study's mirror, to report from, when every worker exited 0: each mirrored its own
    trials as they ended, and the study's last worker reconciled it, or left that to this
    command with the rest of the study's end (`experiments.coordinator`). Any other exit (a
    fault, a signal) gets the full `reconcile_study` instead."""
    mirror = Mirror.open(stores, study, wait_seconds=sweep.tracking_wait_seconds, log=say)
    mirror.ensure_parent_run(study, {}, reopen=False)  # finds it; leaves its status alone
    return mirror


class EarlyEnd:
    """`run_workers`' `on_exit` for --workers N: once a worker has ended its share (exit 0: the
    trials to run are all claimed) while another still trains its last pass, the command
    begins the study's end on the core that worker freed. It opens the study and its mirror,
    which the report reads, and refits the best trial so far (`RefitApart`: a child, one torch
    thread). The study's end takes all three; if the last pass beat that trial, it refits the
    new best. A store out of reach or full leaves them to the end, which meets it too."""

    def __init__(
        self, sweep: SweepConfig, train_config: TrainConfig, data: DataSplits, stores: Stores
    ) -> None:
        self.sweep, self.data, self.stores = sweep, data, stores
        self.train_config = replace(train_config, threads=1)
        self.study: optuna.Study | None = None
        self.mirror: Mirror | None = None
        self.refit: RefitApart | None = None

    def __call__(self, code: int, still_running: int) -> None:
        if self.study is not None or code != 0 or still_running == 0:
            return
        try:
            # Once found, the study is begun on: a later worker's exit forks no second refit.
            self.study = find_study(self.stores.optuna_url, self.sweep.study_name)
            if self.study is None:
                return
            if self.sweep.refit:
                url = self.stores.optuna_url
                self.refit = RefitApart.start(self.study, self.data, self.train_config, url)
            self.mirror = report_mirror(self.sweep, self.stores, self.study)
        except Exception as error:
            if not is_store_failure(error):
                raise

    def cancel(self) -> None:
        """Stop the refit's child if the study's end did not take it."""
        if self.refit is not None:
            self.refit.cancel()
