"""The study's end, by its last worker or by that worker's command: refit, plots, model, parent run.

    with StudyEnd.begin(study, sweep, train_config, data, optuna_url, log) as end:
        ...reconcile, read the study for the report...   # meanwhile: the refit, the plots
        end.finish(mirror, outcome)                      # the model, the tables, the parent run

With --workers N the refit begins earlier still, in a child (`experiments.refit_process`):
`RefitWhileLastTrains` starts it on the core a first worker to end frees while the last one
trains.

Why begin before the reconcile: at the study's end every worker has exited, and its work is of
three kinds that need not wait for each other: the reconcile and the report's reads of both
stores (Python on one core), the refit (torch, on a thread: `experiments.refit.RefitBeside`)
and the plots (a child: `experiments.plot_process`), which read Optuna's trials alone. Done one
after another they kept one core idle; begun together, the end takes about as long as the
longest of them. What they read is the study as its last worker left it: the reconcile may
still fail a dead worker's trial, and then the plots are drawn again (`PlotDrawing.refresh`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import optuna

from experiments.config import SweepConfig
from experiments.mirror import Mirror
from experiments.plot_process import PlotDrawing, study_plots
from experiments.refit import RefitBeside
from experiments.refit_process import RefitApart
from experiments.report import SweepOutcome, study_metrics, write_study_tables
from experiments.store_faults import is_store_failure
from experiments.study import find_study
from softmaxreg.config import TrainConfig
from softmaxreg.data import DataSplits


@dataclass
class StudyEnd:
    """The end of one study, begun: its plots being drawn and (unless --no-refit) its refit."""

    study: optuna.Study
    drawing: PlotDrawing
    refit: RefitApart | RefitBeside | None

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
        """Start the plots, and the refit unless `refit` began already (`RefitWhileLastTrains`)."""
        with study_plots(study, data.device) as drawing:
            if drawing.apart and not train_config.threads:
                train_config = replace(train_config, threads=1)  # the other core draws
            if refit is None and sweep.refit:
                refit = RefitBeside(study, data, train_config, optuna_url, log)
            yield cls(study, drawing, refit)

    def finish(self, mirror: Mirror, outcome: SweepOutcome) -> None:
        """Once the refit is stored, register the best model; once the plots are drawn, close
        the parent run with a summary of the study, its plots and tables."""
        self.drawing.refresh(self.study)
        if self.refit is not None:
            self.refit.result()
        mirror.ensure_best_model(self.study)
        plot_notes = self.drawing.wait()
        outcome.notes += plot_notes
        folder = self.drawing.folder
        write_study_tables(outcome.trials, outcome.best_per_batch_size, plot_notes, folder)
        mirror.finish_parent_run("FINISHED", study_metrics(outcome.trials), folder)


class RefitWhileLastTrains:
    """`run_workers`' `on_exit` for --workers N: once a worker has ended its share (exit 0: the
    trials to run are all claimed) while another still trains its last pass, refit the best
    trial so far on the core it freed (`RefitApart`: a child, one torch thread). The study's end
    takes it as its refit; if the last pass beat that trial, the end refits the new best."""

    def __init__(
        self, sweep: SweepConfig, train_config: TrainConfig, data: DataSplits, optuna_url: str
    ) -> None:
        self.sweep, self.data, self.optuna_url = sweep, data, optuna_url
        self.train_config = replace(train_config, threads=1)
        self.refit: RefitBeside | None = None

    def __call__(self, code: int, still_running: int) -> None:
        if self.refit is not None or code != 0 or still_running == 0 or not self.sweep.refit:
            return
        try:
            study = find_study(self.optuna_url, self.sweep.study_name)
        except Exception as error:  # the study's end meets it too, and says so
            if not is_store_failure(error):
                raise
            return
        if study is not None:
            self.refit = RefitApart.start(study, self.data, self.train_config, self.optuna_url)

    def cancel(self) -> None:
        """Stop the refit's child if the study's end did not take it."""
        if self.refit is not None:
            self.refit.cancel()
