"""The study's plots drawn by a forked child while this process refits the best trial.

    with study_plots(study, device) as drawing:         # one read of the study, then drawn
        ...reconcile, refit, register the model...      # meanwhile, here
        drawing.refresh(study)                          # drawn again if trials ended since
        notes = drawing.wait()                          # PNGs in drawing.folder, skip notes

Why: at the end of a study the plots (matplotlib and Optuna's importances with scikit-learn
and SciPy: about 2 s at 100 trials, 1.3 s of it imports) and the refit (about 1 s) each keep
one core busy, one after the other, while the other core idles: every worker has exited. A
child forked from this process has every module it loaded already and draws from a snapshot
of the trials taken before the fork, so it never touches this process's database connections
(a connection used from two processes corrupts its protocol); the parent never imports
matplotlib at all. The plots read that snapshot instead of the storage in either case: they
read the study's trials five times over, a full read each on a large study.

Apart only on Linux, on the CPU, with at least two usable cores: a process that has
initialised CUDA or macOS's frameworks is not safe to fork, and one core gains nothing. The
caller refits on one thread meanwhile, so the refit and the child do not contend for a core
(two torch threads with a core taken are far slower than one). A child that fails or is
killed costs nothing but time: the plots are drawn here instead.

The sweep command goes one step further (`experiments.plot_server.fork_plot_server_early`,
kept by `prepare_plot_server` once its flags and device are checked): it forks the child before
its own imports, while it still has a core to spare (importing torch and MLflow, loading the
data, creating the stores keep one core busy), and the child imports matplotlib, Optuna's plots
and scikit-learn then waits; at the study's end `PlotDrawing.start` sends it the snapshot (a
pickle through a pipe) instead of forking. The imports, 1.3 s of the plots' 2 s, so leave the
end of the study, where the plots were the slower of its two cores' work, and the start of the
workers, whose cores they took when forked just before them.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from experiments.forking import fork_child
from experiments.plot_server import (
    PlotServer,
    StudySnapshot,
    child_main,
    draw_plots,
    forking_helps,
)


def plots_apart(device: torch.device) -> bool:
    """Whether a forked child may draw the plots beside the refit (see the module docstring)."""
    return device.type == "cpu" and forking_helps()


@contextmanager
def study_plots(study: optuna.Study, device: torch.device) -> Iterator[PlotDrawing]:
    """The study's plots being drawn (apart where `plots_apart`) into a temporary folder from a
    snapshot taken now; a drawing still running on leaving is stopped, the folder removed."""
    with tempfile.TemporaryDirectory(prefix="softmaxreg-sweep-") as folder:
        drawing = PlotDrawing.start(
            StudySnapshot.of(study), Path(folder), apart=plots_apart(device)
        )
        try:
            yield drawing
        finally:
            drawing.cancel()


def drawn_trials(snapshot: StudySnapshot) -> list[tuple[int, TrialState]]:
    return [(trial.number, trial.state) for trial in snapshot.trials]


@dataclass
class PlotDrawing:
    """The plots of one snapshot, being drawn by a child (`pid`) or already drawn (`notes`)."""

    snapshot: StudySnapshot
    folder: Path
    apart: bool
    pid: int | None = None
    notes_fd: int | None = None
    notes: Sequence[str] | None = None

    @classmethod
    def start(cls, snapshot: StudySnapshot, folder: Path, *, apart: bool) -> PlotDrawing:
        """Fork a child drawing the plots if `apart`, else draw them now."""
        if not apart:
            return cls(snapshot, folder, apart, notes=draw_plots(snapshot, folder))
        server = take_plot_server()
        if server is not None:
            if server.send(snapshot, folder):
                return cls(snapshot, folder, apart, pid=server.pid, notes_fd=server.notes_fd)
            server.discard()  # it died: fork one now
        read_fd, write_fd = os.pipe()
        pid = fork_child(read_fd, child_main, snapshot, folder, write_fd)
        os.close(write_fd)
        return cls(snapshot, folder, apart, pid=pid, notes_fd=read_fd)

    def refresh(self, study: optuna.Study) -> None:
        """Draw again, from a new snapshot, if a trial ended or failed since this one was taken
        (a reconcile fails a dead worker's trials): the plots start before the study's end
        work, so as to be drawn during it, and must still show every trial the tables do."""
        snapshot = StudySnapshot.of(study)
        if drawn_trials(snapshot) == drawn_trials(self.snapshot):
            return
        self.cancel()
        for stale in self.folder.iterdir():  # a plot the new snapshot skips must not remain
            stale.unlink()
        fresh = PlotDrawing.start(snapshot, self.folder, apart=self.apart)
        self.snapshot, self.pid, self.notes_fd = fresh.snapshot, fresh.pid, fresh.notes_fd
        self.notes = fresh.notes

    def wait(self) -> list[str]:
        """The notes on plots skipped, once every plot is in the folder: the child's, or, if it
        failed, those of drawing them here."""
        if self.notes is None:
            text = self._read_notes()
            _, status = os.waitpid(self.pid, 0)
            self.pid = None
            drawn = os.waitstatus_to_exitcode(status) == 0 and text
            self.notes = json.loads(text) if drawn else draw_plots(self.snapshot, self.folder)
        return list(self.notes)

    def cancel(self) -> None:
        """Stop a child still drawing (the end of the study was interrupted or failed)."""
        if self.pid is not None:
            os.kill(self.pid, signal.SIGKILL)  # unreaped, it exists until waited for
            os.waitpid(self.pid, 0)
            self.pid = None
        if self.notes_fd is not None:
            os.close(self.notes_fd)
            self.notes_fd = None

    def _read_notes(self) -> str:
        with os.fdopen(self.notes_fd, "rb") as pipe:  # to EOF: the child has written or died
            self.notes_fd = None
            return pipe.read().decode()


_prepared: PlotServer | None = None
"""The plot server `prepare_plot_server` forked, until `PlotDrawing.start` takes it."""


def prepare_plot_server(device: torch.device, early: PlotServer | None = None) -> None:
    """Keep a `PlotServer` for this process's study end where plots are drawn apart: `early`
    (the sweep command's, forked before its imports) or one forked now. An early server the
    device turns out to refuse (CUDA, MPS) is stopped."""
    global _prepared
    if _prepared is not None or not plots_apart(device):
        if early is not None:
            early.discard()
        return
    _prepared = early or PlotServer.fork()


def take_plot_server() -> PlotServer | None:
    """The prepared server, once, in the process that forked it."""
    global _prepared
    server, _prepared = _prepared, None
    if server is not None and server.owner != os.getpid():
        return None  # a worker forked after it: the command's, not this process's
    return server


def discard_plot_server() -> None:
    """Stop a prepared server nobody took (the command ends without a study's end)."""
    server = take_plot_server()
    if server is not None:
        server.discard()
