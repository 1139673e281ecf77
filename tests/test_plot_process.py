"""The study's plots drawn by a forked child (`experiments.plot_process`) are the plots this
process draws, from one read of a real SQLite study; a child killed half-way loses no plot. The
same of the plot server the sweep forks at its start: it is used once, by its own process only,
a dead one is replaced by a fork, and one never used is stopped and reaped.
"""

from __future__ import annotations

import os
import signal
import warnings
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from experiments import plot_process
from experiments.forking import fork_child
from experiments.plot_process import (
    PlotDrawing,
    discard_plot_server,
    plots_apart,
    prepare_plot_server,
)
from experiments.plot_server import StudySnapshot
from tests.test_plots import recorded_trial

pytestmark = pytest.mark.skipif(
    not plots_apart(torch.device("cpu")), reason="plots are drawn apart on Linux with 2+ cores"
)


@pytest.fixture
def study(tmp_path: Path) -> optuna.Study:
    """Eight COMPLETE trials as the sweep records them, and one still RUNNING."""
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="plots", direction="maximize"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["best_val_accuracy"])
    for number in range(8):
        study.add_trial(recorded_trial(number, objectives=1))
    study.ask()
    return study


def drawn(folder: Path) -> dict[str, int]:
    return {path.name: path.stat().st_size for path in sorted(folder.iterdir())}


def test_the_snapshot_holds_the_finished_trials_and_what_the_plots_read(study):
    snapshot = StudySnapshot.of(study)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert [t.number for t in snapshot.get_trials(states=(TrialState.COMPLETE,))] == [
        t.number for t in complete
    ]
    assert [t.state for t in snapshot.get_trials()] == [TrialState.COMPLETE] * 8  # not RUNNING
    assert snapshot.metric_names == ["best_val_accuracy"]
    assert snapshot.directions == study.directions


def test_a_child_draws_the_plots_this_process_would(study, tmp_path):
    snapshot = StudySnapshot.of(study)
    here = PlotDrawing.start(snapshot, tmp_path / "here", apart=False)
    apart = PlotDrawing.start(snapshot, tmp_path / "apart", apart=True)
    assert here.pid is None and apart.pid not in (None, os.getpid())
    assert apart.wait() == here.wait()
    assert apart.pid is None  # reaped
    files = drawn(tmp_path / "apart")
    assert set(files) == set(drawn(tmp_path / "here"))
    assert {"param_importances.png", "validation_curves.png"} <= set(files)
    assert all(size > 1000 for size in files.values())


def test_a_killed_child_loses_no_plot(study, tmp_path):
    snapshot = StudySnapshot.of(study)
    drawing = PlotDrawing.start(snapshot, tmp_path / "apart", apart=True)
    os.kill(drawing.pid, signal.SIGKILL)
    notes = drawing.wait()  # drawn here instead
    expected = PlotDrawing.start(snapshot, tmp_path / "here", apart=False).wait()
    assert notes == expected
    assert set(drawn(tmp_path / "apart")) == set(drawn(tmp_path / "here"))


def test_cancel_stops_and_reaps_the_child(study, tmp_path):
    drawing = PlotDrawing.start(StudySnapshot.of(study), tmp_path / "apart", apart=True)
    pid = drawing.pid
    drawing.cancel()
    assert drawing.pid is None
    with pytest.raises(ChildProcessError):  # no zombie left to reap
        os.waitpid(pid, os.WNOHANG)
    drawing.cancel()  # twice is harmless


def server_has_imported_the_plots(pid: int) -> bool:
    """Has the server's process mapped matplotlib's compiled modules (its imports are done)?"""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "matplotlib" in maps and "sklearn" in maps


def test_a_prepared_server_draws_the_plots_this_process_would(study, tmp_path):
    from tests.services import wait_for

    prepare_plot_server(torch.device("cpu"))
    try:
        server = plot_process._prepared
        assert server is not None and server.pid != os.getpid()
        wait_for(lambda: server_has_imported_the_plots(server.pid), "the server's imports")
        snapshot = StudySnapshot.of(study)
        apart = PlotDrawing.start(snapshot, tmp_path / "apart", apart=True)
        assert apart.pid == server.pid  # sent to the server, no new fork
        assert plot_process._prepared is None  # taken: used once
        here = PlotDrawing.start(snapshot, tmp_path / "here", apart=False)
        assert apart.wait() == here.wait()
        assert drawn(tmp_path / "apart").keys() == drawn(tmp_path / "here").keys()
        with pytest.raises(ChildProcessError):  # reaped by wait
            os.waitpid(server.pid, os.WNOHANG)
    finally:
        discard_plot_server()


def test_a_dead_server_falls_back_to_a_fork_and_loses_no_plot(study, tmp_path):
    prepare_plot_server(torch.device("cpu"))
    server = plot_process._prepared
    os.kill(server.pid, signal.SIGKILL)
    os.waitpid(server.pid, 0)  # gone before it is sent anything
    drawing = PlotDrawing.start(StudySnapshot.of(study), tmp_path / "apart", apart=True)
    assert drawing.pid not in (None, server.pid)  # forked afresh
    assert (
        drawing.wait()
        == PlotDrawing.start(StudySnapshot.of(study), tmp_path / "here", apart=False).wait()
    )
    assert drawn(tmp_path / "apart").keys() == drawn(tmp_path / "here").keys()


def test_an_unused_server_is_stopped_and_reaped_and_a_forked_process_never_takes_it():
    prepare_plot_server(torch.device("cpu"))
    server = plot_process._prepared
    pid = os.fork()
    if pid == 0:  # a worker forked after the server: the server is not its own
        os._exit(0 if plot_process.take_plot_server() is None else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert plot_process._prepared is server  # the child's take left this process's alone
    discard_plot_server()
    assert plot_process._prepared is None
    with pytest.raises(ChildProcessError):
        os.waitpid(server.pid, os.WNOHANG)
    discard_plot_server()  # nothing left: harmless


def _raise_in_child() -> int:
    raise RuntimeError("a plot server's imports failed")


def test_a_forked_child_that_raises_exits_1_and_runs_nothing_of_the_parent(tmp_path, capfd):
    """A child's exception must end it there: escaping `fork_child`, the forked copy would go
    on running this process's code (here: touch a marker of its own pid)."""
    read_fd, write_fd = os.pipe()
    pid = fork_child(read_fd, _raise_in_child)
    (tmp_path / f"ran-in-{os.getpid()}").touch()
    os.close(read_fd)
    os.close(write_fd)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 1
    assert [p.name for p in tmp_path.iterdir()] == [f"ran-in-{os.getpid()}"]
    assert "a plot server's imports failed" in capfd.readouterr().err  # its traceback, once


def test_a_drawing_is_redrawn_only_when_a_trial_ended_since_its_snapshot(study, tmp_path):
    drawing = PlotDrawing.start(StudySnapshot.of(study), tmp_path / "apart", apart=True)
    first_child = drawing.pid
    drawing.refresh(study)  # nothing changed: the same child goes on drawing
    assert drawing.pid == first_child
    (running,) = study.get_trials(states=(TrialState.RUNNING,))
    study.tell(running.number, state=TrialState.FAIL)  # as a reconcile fails a dead worker's
    drawing.refresh(study)
    assert drawing.pid != first_child  # drawn again, from a snapshot with the failed trial
    assert [t.state for t in drawing.snapshot.trials][-1] == TrialState.FAIL
    drawing.wait()
    expected = PlotDrawing.start(StudySnapshot.of(study), tmp_path / "here", apart=False).wait()
    assert drawing.notes == expected
    assert sorted(drawn(tmp_path / "apart")) == sorted(drawn(tmp_path / "here"))


def children_of(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return children


@pytest.mark.real_data
def test_the_commands_plot_server_is_forked_before_its_imports_and_draws_its_plots(
    real_mnist_root, tmp_path
):
    """`python -m experiments.sweep` forks its plot server first thing: the server imports the
    plotting modules (matplotlib, scikit-learn) but never torch, which the command imports
    after the fork; the study's plots are drawn, and nothing it imported warned or failed."""
    from tests.services import wait_for
    from tests.test_workers import finish, start, sweep_args

    process = start(tmp_path, sweep_args(real_mnist_root, "--n-trials", "8", "--refit"))
    servers: list[int] = []

    def plot_server_found() -> bool:
        if process.poll() is not None:
            return True  # the command ended first: asserted below
        try:
            for pid in children_of(process.pid):
                maps = Path(f"/proc/{pid}/maps").read_text()
                if server_has_imported_the_plots(pid) and "libtorch" not in maps:
                    servers.append(pid)
                    return True
        except (FileNotFoundError, ProcessLookupError):
            pass  # a child that ended while looked at
        return False

    wait_for(plot_server_found, "the command's plot server")
    code, _, err = finish(process)
    assert code == 0, err
    assert servers, "no child of the command imported the plots without torch"
    artifacts = next((tmp_path / "mlruns").rglob("param_importances.png"))
    assert artifacts.read_bytes()[:4] == b"\x89PNG"
    assert "Traceback" not in err and "Warning" not in err, err
