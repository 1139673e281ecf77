"""What `Mirror.sync` writes, and how little: a population's runs found or created with one
search, each run created with all its tags, nothing written twice, and a sync cut short after
its run's creation completed by the next sync or reconcile.

Real SQLite stores throughout; the MLflow client's methods are counted by wrapping them on the
mirror's own client (each wrapper calls the real method).
"""

from __future__ import annotations

import functools
from collections import Counter

import optuna
import pytest
from mlflow import MlflowClient
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from experiments.config import SweepConfig
from experiments.mirror import Mirror
from experiments.mirror_queue import MirrorQueue
from experiments.mirror_sync import find_or_create_runs
from experiments.run_record import as_tags, trial_run_name, trial_tags
from experiments.store_urls import Stores
from experiments.trial_tracker import TrialTracker
from tests.test_sweep import child_runs

STUDY = "mirror-sync"
SPACE = {
    "batch_size": CategoricalDistribution((32, 128)),
    "lr": FloatDistribution(0.05, 1.0, log=True),
}
WRITES = ("create_run", "log_batch", "log_inputs", "set_terminated", "update_run", "set_tag")
COUNTED = (*WRITES, "search_runs")


def quiet(_message: str) -> None:
    pass


def record(trial: optuna.Trial, accuracy: float) -> None:
    """What the objective stores on a trial that the mirror reads: environment, epochs."""
    trial.set_user_attr("environment", {"dataset": "mnist", "dataset_checksum": "c0ffee"})
    trial.set_user_attr("settings", {"epochs": 1, "population": 4})
    trial.set_user_attr("epochs", {"step": [1], "time_ms": [1_000], "val_accuracy": [accuracy]})


def population(stores: dict[str, str], size: int = 4) -> tuple[optuna.Study, list[FrozenTrial]]:
    """A study with `size` trials stored COMPLETE (none mirrored yet)."""
    study = optuna.create_study(study_name=STUDY, storage=stores["storage"], direction="maximize")
    study.set_user_attr("study_uuid", "uuid-mirror-sync")
    for index in range(size):
        trial = study.ask(SPACE)
        record(trial, 0.5 + index / 10)
        trial.set_user_attr("best_val_accuracy", 0.5 + index / 10)
        study.tell(trial, 0.5 + index / 10)
    return study, study.get_trials(deepcopy=False)


class Calls(Counter):
    """The mirror's client calls by name, and the keyword arguments of each."""

    def __init__(self) -> None:
        super().__init__()
        self.kwargs: dict[str, list[dict]] = {}

    def clear(self) -> None:
        super().clear()
        self.kwargs.clear()


def open_mirror(stores: dict[str, str], study: optuna.Study) -> tuple[Mirror, Calls]:
    """A new mirror (as a new process has), its client's calls counted."""
    sweep = SweepConfig(**stores)
    mirror = Mirror.open(Stores.from_config(sweep), study, wait_seconds=5, log=quiet)
    mirror.ensure_parent_run(study, {}, reopen=False)
    calls = Calls()
    for name in COUNTED:
        setattr(mirror.client, name, counted(getattr(mirror.client, name), name, calls))
    return mirror, calls


def counted(method, name: str, calls: Calls):
    @functools.wraps(method)
    def call(*args, **kwargs):
        calls[name] += 1
        calls.kwargs.setdefault(name, []).append(kwargs)
        return method(*args, **kwargs)

    return call


def test_a_populations_runs_are_found_or_created_by_one_search(stores):
    study, trials = population(stores)
    mirror, calls = open_mirror(stores, study)
    for index, trial in enumerate(trials):
        mirror.sync(trial, alongside=trials[index + 1 :])
    assert (calls["search_runs"], calls["create_run"]) == (1, 4)
    runs = child_runs(MlflowClient(stores["tracking_uri"]), STUDY)
    assert sorted(runs) == [0, 1, 2, 3]
    assert all(run.info.status == "FINISHED" for run in runs.values())

    again, calls = open_mirror(stores, study)  # another worker, or a restart: finds them all
    find_or_create_runs(again, trials, patient=True)
    assert (calls["search_runs"], calls["create_run"]) == (1, 0)
    assert {n: again._run_ids[n] for n in runs} == {n: r.info.run_id for n, r in runs.items()}


def test_the_queue_mirrors_the_snapshots_waiting_together_with_one_search(stores):
    study, trials = population(stores)
    mirror, calls = open_mirror(stores, study)
    tracker = TrialTracker(study, mirror, tqdm(disable=True), quiet)
    queue = MirrorQueue(tracker)
    for trial in trials:  # put before its thread starts: it takes all four at once
        queue.put(trial)
    with queue:
        queue.drain()
    assert tracker.synced == {trial._trial_id for trial in trials}
    assert (calls["search_runs"], calls["create_run"], calls["set_terminated"]) == (1, 4, 4)
    assert sorted(child_runs(MlflowClient(stores["tracking_uri"]), STUDY)) == [0, 1, 2, 3]


def test_a_run_is_created_with_all_its_tags(stores):
    """The run's tags are written by its creation, and its first sync writes none again."""
    study, trials = population(stores, size=1)
    mirror, calls = open_mirror(stores, study)
    find_or_create_runs(mirror, trials, patient=True)
    run = MlflowClient(stores["tracking_uri"]).get_run(mirror._run_ids[0])
    expected = trial_tags(trials[0], STUDY, "uuid-mirror-sync", mirror.parent_run_id)
    expected = {tag.key: tag.value for tag in as_tags(expected)}
    assert expected.items() <= run.data.tags.items()
    assert run.info.run_name == run.data.tags["mlflow.runName"] == trial_run_name(trials[0])
    assert (calls["create_run"], sum(calls.values()) - calls["search_runs"]) == (1, 1)

    calls.clear()
    mirror.sync(trials[0])
    (batch,) = calls.kwargs["log_batch"]  # params and metrics, in one call
    assert batch["tags"] == [] and batch["params"] and batch["metrics"]
    run = MlflowClient(stores["tracking_uri"]).get_run(mirror._run_ids[0])
    assert run.info.status == "FINISHED"
    assert expected.items() <= run.data.tags.items()


def test_a_second_sync_of_a_finished_trial_writes_nothing(stores):
    study, trials = population(stores, size=1)
    mirror, calls = open_mirror(stores, study)
    run_id = mirror.sync(trials[0])
    calls.clear()
    assert mirror.sync(trials[0]) == run_id
    assert sum(calls.values()) == 0
    client = MlflowClient(stores["tracking_uri"])
    assert len(client.get_metric_history(run_id, "val_accuracy")) == 1
    assert list(child_runs(client, STUDY)) == [0]


def test_a_running_trial_seen_again_is_written_once_then_ended(stores):
    """Its running snapshot creates the run (RUNNING, params, input); a later running one
    writes nothing; its end writes its figures and status."""
    study, _ = population(stores, size=0)
    mirror, calls = open_mirror(stores, study)
    live = study.ask(SPACE)
    record(live, 0.4)
    running = study._storage.get_trial(live._trial_id)
    run_id = mirror.sync(running, patient=False)
    client = MlflowClient(stores["tracking_uri"])
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING" and run.data.params["lr"] == str(running.params["lr"])
    assert calls["update_run"] == 0  # a new run is RUNNING already

    live.set_user_attr("epochs", {"step": [1, 2], "time_ms": [1_000, 2_000],
                                  "val_accuracy": [0.4, 0.6]})  # fmt: skip
    calls.clear()
    mirror.sync(study._storage.get_trial(live._trial_id), patient=False)
    assert sum(calls.values()) == 0

    live.set_user_attr("best_val_accuracy", 0.6)
    mirror.sync(study.tell(live, 0.6))
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["summary/best_val_accuracy"] == 0.6
    assert len(client.get_metric_history(run_id, "val_accuracy")) == 2


@pytest.mark.parametrize("repair", ["sync", "reconcile"])
def test_a_sync_cut_short_after_creating_the_run_converges(stores, repair):
    """A worker died between creating a finished trial's runs (with their final tags, digest
    included) and writing their figures and status: a new mirror's sync, or a reconcile,
    completes the same runs, and nothing is left to repair."""
    study, trials = population(stores, size=2)
    died, _ = open_mirror(stores, study)
    find_or_create_runs(died, trials, patient=True)
    created = dict(died._run_ids)

    mirror, calls = open_mirror(stores, study)
    if repair == "sync":
        for trial in trials:
            mirror.sync(trial)
    else:
        assert mirror.reconcile(study).synced == 2
    assert calls["create_run"] == 0
    runs = child_runs(MlflowClient(stores["tracking_uri"]), STUDY)
    assert {n: r.info.run_id for n, r in runs.items()} == created
    for trial in trials:
        assert runs[trial.number].info.status == "FINISHED"
        assert runs[trial.number].data.metrics["summary/best_val_accuracy"] == trial.value
    report = open_mirror(stores, study)[0].reconcile(study)
    assert (report.trials, report.mismatches) == (2, 0)
    assert {t.state for t in study.trials} == {TrialState.COMPLETE}


def test_a_run_deleted_after_its_sync_is_rebuilt_by_the_same_mirrors_reconcile(stores):
    """The mirror remembers what it wrote; a reconcile trusts what it finds instead."""
    study, trials = population(stores, size=1)
    mirror, calls = open_mirror(stores, study)
    client = MlflowClient(stores["tracking_uri"])
    client.delete_run(mirror.sync(trials[0]))
    calls.clear()
    assert mirror.reconcile(study).synced == 1
    assert calls["create_run"] == 1
    (run,) = child_runs(client, STUDY).values()
    assert run.info.status == "FINISHED"
    assert run.data.metrics["summary/best_val_accuracy"] == trials[0].value
