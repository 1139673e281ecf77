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

The sweep command goes one step further (`prepare_plot_server`, once its flags are checked):
it forks the child while it still has a core to spare (loading the data, creating the stores
and the study keep one core busy), and the child imports matplotlib, Optuna's plots and
scikit-learn then waits; at the study's end `PlotDrawing.start` sends it the snapshot (a
pickle through a pipe) instead of forking. The imports, 1.3 s of the plots' 2 s, so leave the
end of the study, where the plots were the slower of its two cores' work.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import struct
import sys
import tempfile
import traceback
from collections.abc import Callable, Container, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from experiments.workers import flush_quietly, stop_with_parent, usable_cores

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


def plots_apart(device: torch.device) -> bool:
    """Whether a forked child may draw the plots beside the refit (see the module docstring)."""
    return sys.platform.startswith("linux") and device.type == "cpu" and usable_cores() >= 2


def draw_plots(snapshot: StudySnapshot, folder: Path) -> list[str]:
    """Draw every plot into `folder`; return the notes on plots skipped."""
    from experiments.plots import write_study_plots  # matplotlib: only at the end of a study

    _, notes = write_study_plots(snapshot, folder)  # type: ignore[arg-type]  # reads as a study
    return notes


def fork_child(close_in_child: int, main: Callable[..., int], *args: object) -> int:
    """Fork a child that closes the parent's pipe end `close_in_child`, runs `main(*args)` and
    exits with its code; return the child's pid. In the child the parent's signal handlers
    (which record requests for its own loop) give way to the defaults, so a signal just ends
    it, and the parent's death ends it too. Whatever `main` raises ends the child with code 1:
    nothing of the parent's stack may run on in a forked copy of it."""
    flush_quietly()  # nothing buffered here is written twice by the child
    pid = os.fork()
    if pid != 0:
        return pid
    code = 1
    try:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        stop_with_parent()
        os.close(close_in_child)
        code = main(*args)
    except BaseException:
        traceback.print_exc()
    finally:
        flush_quietly()
        os._exit(code)


def _child_main(snapshot: StudySnapshot, folder: Path, notes_fd: int) -> int:
    """In the forked child: draw, then write the notes to `notes_fd`."""
    notes = draw_plots(snapshot, folder)
    with os.fdopen(notes_fd, "w") as pipe:
        json.dump(notes, pipe)
    return 0


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
        pid = fork_child(read_fd, _child_main, snapshot, folder, write_fd)
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
    """In the plot server: import, wait for the snapshot, draw (`_child_main`)."""
    os.close(parents_notes_fd)
    import optuna.importance  # noqa: F401  scikit-learn and SciPy, for the importances

    import experiments.plots  # noqa: F401  matplotlib and Optuna's plots

    with os.fdopen(request_fd, "rb") as pipe:
        header = pipe.read(8)
        if len(header) < 8:
            return 0  # this process ended with no study's end to draw
        (size,) = struct.unpack(">Q", header)
        snapshot, folder = pickle.loads(pipe.read(size))
    return _child_main(snapshot, Path(folder), notes_fd)


_prepared: PlotServer | None = None
"""The plot server `prepare_plot_server` forked, until `PlotDrawing.start` takes it."""


def prepare_plot_server(device: torch.device) -> None:
    """Fork a `PlotServer` for this process's study end, where plots are drawn apart."""
    global _prepared
    if _prepared is None and plots_apart(device):
        _prepared = PlotServer.fork()


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
