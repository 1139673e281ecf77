"""The plots' child process, torch-free: a study snapshot in, PNGs and skip notes out.

    server = PlotServer.fork()                 # imports the plotting modules, then waits
    server.send(StudySnapshot.of(study), folder)   # it draws; its notes come on notes_fd
    server.discard()                           # or stop it unused

Torch-free so that the sweep command can fork it first thing (`fork_plot_server_early`),
before its own imports: the child's imports (matplotlib, Optuna's plots, scikit-learn for the
importances; 1.3-1.5 s here) then run on the core the command's start leaves idle, instead of
on a core its forked workers train on. `experiments.plot_process` decides when the plots are
drawn apart and forks a drawing child when no server was prepared.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import struct
import sys
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from experiments.forking import fork_child, usable_cores

DRAWN_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
"""The trials the plots can show; RUNNING and WAITING ones have nothing to draw yet."""


@dataclass(frozen=True)
class StudySnapshot:
    """What `experiments.plots` reads of a study (its directions, metric names and finished
    trials), read from the storage once; the plots take it in place of the study."""

    directions: list[StudyDirection]
    metric_names: list[str] | None
    trials: tuple[FrozenTrial, ...]

    @classmethod
    def of(cls, study: optuna.Study) -> StudySnapshot:
        return cls(
            directions=list(study.directions),
            metric_names=study.metric_names,
            trials=tuple(study.get_trials(deepcopy=False, states=DRAWN_STATES)),
        )

    def get_trials(
        self, deepcopy: bool = False, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        del deepcopy  # frozen: nobody writes to these trials
        return [t for t in self.trials if states is None or t.state in states]


def draw_plots(snapshot: StudySnapshot, folder: Path) -> list[str]:
    """Draw every plot into `folder`; return the notes on plots skipped."""
    from experiments.plots import write_study_plots  # matplotlib: only at the end of a study

    _, notes = write_study_plots(snapshot, folder)  # type: ignore[arg-type]  # reads as a study
    return notes


def child_main(snapshot: StudySnapshot, folder: Path, notes_fd: int) -> int:
    """In the forked child: draw, then write the notes to `notes_fd`."""
    notes = draw_plots(snapshot, folder)
    with os.fdopen(notes_fd, "w") as pipe:
        json.dump(notes, pipe)
    return 0


@dataclass
class PlotServer:
    """A plot-drawing child forked before it is needed (see the module docstring): it has
    imported the plotting modules and waits for one (snapshot, folder) on `request_fd`, then
    draws like the child `PlotDrawing.start` forks and writes its notes to `notes_fd`."""

    pid: int
    owner: int
    """The process that forked it: a worker forked from that process later must not use it."""
    request_fd: int | None
    notes_fd: int | None

    @classmethod
    def fork(cls) -> PlotServer:
        request_read, request_write = os.pipe()
        notes_read, notes_write = os.pipe()
        pid = fork_child(request_write, _server_main, request_read, notes_read, notes_write)
        os.close(request_read)
        os.close(notes_write)
        return cls(pid=pid, owner=os.getpid(), request_fd=request_write, notes_fd=notes_read)

    def send(self, snapshot: StudySnapshot, folder: Path) -> bool:
        """Hand the child its work; False if it is gone (then nothing was drawn)."""
        payload = pickle.dumps((snapshot, str(folder)), protocol=pickle.HIGHEST_PROTOCOL)
        fd, self.request_fd = self.request_fd, None
        try:
            # Length first: workers forked after the server hold this pipe's write end too,
            # so the child cannot wait for an end of file.
            with os.fdopen(fd, "wb") as pipe:
                pipe.write(struct.pack(">Q", len(payload)) + payload)
        except OSError:  # BrokenPipeError: it died (killed, or its imports failed)
            return False
        return True

    def discard(self) -> None:
        """Stop and reap the child, and close this side's pipes."""
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass  # reaped already
        for fd in (self.request_fd, self.notes_fd):
            if fd is not None:
                os.close(fd)
        self.request_fd = self.notes_fd = None


def _server_main(request_fd: int, parents_notes_fd: int, notes_fd: int) -> int:
    """In the plot server: import, wait for the snapshot, draw (`child_main`)."""
    os.close(parents_notes_fd)
    import optuna.importance  # noqa: F401  scikit-learn and SciPy, for the importances

    import experiments.plots  # noqa: F401  matplotlib and Optuna's plots

    with os.fdopen(request_fd, "rb") as pipe:
        header = pipe.read(8)
        if len(header) < 8:
            return 0  # this process ended with no study's end to draw
        (size,) = struct.unpack(">Q", header)
        snapshot, folder = pickle.loads(pipe.read(size))
    return child_main(snapshot, Path(folder), notes_fd)


def forking_helps() -> bool:
    """Whether drawing in a forked child can gain anything here, whatever the device: on Linux
    (a process that has initialised macOS's frameworks is not safe to fork) with two or more
    usable cores (one core gains nothing). `experiments.plot_process.plots_apart` adds the
    device."""
    return sys.platform.startswith("linux") and usable_cores() >= 2


def fork_plot_server_early() -> PlotServer | None:
    """A plot server forked before the sweep command's imports, where the plots may be drawn
    apart at all (`forking_helps`; the device, checked later, may still refuse it:
    `experiments.plot_process.prepare_plot_server`)."""
    return PlotServer.fork() if forking_helps() else None
