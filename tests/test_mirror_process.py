"""The mirror's syncs in a child process (`experiments.mirror_process`), behind `MirrorQueue`.

Real SQLite stores and a real forked child: the runs it writes are read back from MLflow, the
worker's own client is counted to show the writes happened elsewhere, and the child is killed
for real to show that the queue's thread then syncs in-process.
"""

from __future__ import annotations

import os
import signal

import pytest
from mlflow import MlflowClient
from tqdm import tqdm

from experiments.mirror_queue import MirrorQueue
from experiments.trial_tracker import TrialTracker
from tests.test_mirror_sync import STUDY, WRITES, open_mirror, population, quiet, record
from tests.test_sweep import child_runs

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the child is forked")


def child_alive(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return False  # reaped


def tracked(stores, study):
    """A new mirror of `study` with its client's calls counted, and a tracker on it."""
    mirror, calls = open_mirror(stores, study)
    return mirror, calls, TrialTracker(study, mirror, tqdm(disable=True), quiet)


def test_the_child_writes_every_run_and_the_worker_none(stores):
    study, trials = population(stores)
    mirror, calls, tracker = tracked(stores, study)
    with MirrorQueue(tracker, apart=True) as queue:
        child = queue._apart.pid
        assert child != os.getpid() and child_alive(child)
        for trial in trials:
            queue.put(trial)
        queue.drain()
    assert not child_alive(child)  # stopped and reaped when the queue closed
    assert tracker.synced == {trial._trial_id for trial in trials}
    assert sum(calls[name] for name in WRITES) == 0  # this process's client wrote nothing
    assert mirror.seconds > 0  # the child's MLflow time, counted here
    runs = child_runs(MlflowClient(stores["tracking_uri"]), STUDY)
    assert sorted(runs) == [0, 1, 2, 3]
    assert all(run.info.status == "FINISHED" for run in runs.values())
    assert all(run.data.metrics["val_accuracy"] > 0.4 for run in runs.values())


def test_a_killed_child_leaves_the_syncs_to_the_queues_thread(stores):
    study, trials = population(stores)
    _, calls, tracker = tracked(stores, study)
    with MirrorQueue(tracker, apart=True) as queue:
        child = queue._apart.pid
        os.kill(child, signal.SIGKILL)
        for trial in trials:
            queue.put(trial)
        queue.drain()
        assert queue._apart is None
    assert not child_alive(child)
    assert tracker.synced == {trial._trial_id for trial in trials}
    assert calls["set_terminated"] == 4  # written here once the child was gone
    runs = child_runs(MlflowClient(stores["tracking_uri"]), STUDY)
    assert sorted(runs) == [0, 1, 2, 3]
    assert all(run.info.status == "FINISHED" for run in runs.values())


def test_what_the_child_meets_is_raised_on_the_main_thread(stores):
    """A record MLflow refuses (a param name longer than it stores) fails in the child; the
    worker raises it at its next drain, with MLflow's reason, as an in-process sync would."""
    study, _ = population(stores, size=1)
    trial = study.ask({})
    record(trial, 0.5)
    trial.set_user_attr("settings", {"note" * 100: 1})
    study.tell(trial, 0.5)
    refused = study.get_trials(deepcopy=False)[-1]
    _, _, tracker = tracked(stores, study)
    with MirrorQueue(tracker, apart=True) as queue:
        queue.put(refused)
        with pytest.raises(Exception, match=r"Param key.* exceeds"):
            queue.drain()
    assert refused._trial_id not in tracker.synced


def test_a_thread_queue_forks_nothing(stores):
    study, trials = population(stores, size=1)
    _, calls, tracker = tracked(stores, study)
    with MirrorQueue(tracker) as queue:
        assert queue._apart is None
        queue.put(trials[0])
        queue.drain()
    assert calls["set_terminated"] == 1
