"""The sweep against real SQLite (and PostgreSQL) stores, on small synthetic data.

Every sweep here runs `experiments.sweep.run_sweep` — the function the CLI calls after loading
the data — with preloaded synthetic splits, so no test touches MNIST. The working folder is a
temporary one, because MLflow puts artifacts in ./mlruns beside the tracking database.
"""

from __future__ import annotations

import _thread
import math
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from dataclasses import replace
from pathlib import Path

import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState, create_trial

from experiments.config import SweepConfig
from experiments.export import main as export_main
from experiments.interrupts import install_signal_handlers
from experiments.mirror import Mirror
from experiments.objective import WORKER_LOST_REASON
from experiments.reconcile import reconcile_study
from experiments.results import best_per_batch_size, best_per_batch_size_markdown
from experiments.store_urls import Stores
from experiments.study import SameBatchSizeMedianPruner, open_storage
from experiments.sweep import build_parser, main
from experiments.worker import run_sweep
from softmaxreg.config import ConfigError, DataConfig, TrainConfig
from tests.services import recorded_epochs

REPO_ROOT = Path(__file__).resolve().parent.parent
CPU = TrainConfig(epochs=2, device="cpu")


def sweep_config(stores: dict[str, str], **overrides) -> SweepConfig:
    settings = {
        "study_name": "test-study",
        "n_trials": 3,
        "batch_sizes": (32, 128),
        "lr_range": (0.05, 1.0),
        "quiet": True,
        # One trial at a time: these tests are about single mode (tests/test_population_sweep.py
        # covers --population, the default).
        "population": 1,
        **stores,
        **overrides,
    }
    return SweepConfig(**settings)


def enqueue(stores: dict[str, str], study_name: str, params: list[dict]) -> None:
    """Queue trials with these exact params (once the study exists)."""
    if not params:
        return
    study = optuna.load_study(study_name=study_name, storage=stores["storage"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "out of range": on purpose
        for values in params:
            study.enqueue_trial(values)


def child_runs(client: MlflowClient, experiment_name: str) -> dict[int, object]:
    """Trial runs by trial number, found as the mirror finds them: by their tags (exactly one
    each)."""
    by_number: dict[int, object] = {}
    for run in runs_by_role(client, experiment_name)["trial"]:
        number = int(run.data.tags["optuna.trial_number"])
        assert number not in by_number, f"trial {number} has two runs"
        by_number[number] = run
    return by_number


def runs_by_role(client: MlflowClient, experiment_name: str) -> dict[str, list]:
    experiment = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    grouped: dict[str, list] = {"study": [], "trial": [], "refit": []}
    for run in runs:
        grouped[run.data.tags["softmaxreg.role"]].append(run)
    return grouped


def test_sweep_logs_one_parent_and_a_child_per_trial_then_resumes(stores, synthetic_splits):
    config = sweep_config(stores)
    said: list[str] = []
    outcome = run_sweep(config, CPU, DataConfig(), synthetic_splits, log=said.append)
    assert said[0] == "new study test-study"

    client = MlflowClient(stores["tracking_uri"])
    runs = runs_by_role(client, "test-study")
    assert len(runs["study"]) == 1
    parent = runs["study"][0]
    assert parent.info.run_id == outcome.parent_run_id
    assert parent.info.status == "FINISHED"
    children = runs["trial"]
    assert sorted(r.info.run_name.split()[0] for r in children) == ["trial-0", "trial-1", "trial-2"]
    (refit,) = runs["refit"]  # the best trial trained again on train + validation
    assert refit.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert refit.data.params["train_examples"] == str(
        len(synthetic_splits.train_y) + len(synthetic_splits.val_y)
    )

    study = optuna.load_study(study_name="test-study", storage=stores["storage"])
    assert len(study.trials) == 3
    # optuna-dashboard names the objective after these ("Objective 0" without them).
    assert study.metric_names == ["best_val_accuracy"]
    assert study.trials[0].distributions["batch_size"].choices == (32, 128)  # in the given order
    child_by_number = child_runs(client, "test-study")
    for trial in study.trials:
        run = child_by_number[trial.number]
        # The name says the configuration, so every legend does too.
        bs, lr = trial.params["batch_size"], trial.params["lr"]
        assert run.info.run_name == f"trial-{trial.number} bs{bs} lr{lr:.3g}"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.status == "FINISHED" and trial.state == TrialState.COMPLETE
        # Every config field is a param, with the values this trial used.
        params = run.data.params
        assert int(params["batch_size"]) == trial.params["batch_size"]
        assert float(params["lr"]) == pytest.approx(trial.params["lr"])
        assert params["trial_number"] == str(trial.number)
        assert float(params["log10_lr"]) == pytest.approx(math.log10(lr), abs=1e-4)
        assert float(params["log2_batch_size"]) == math.log2(bs)
        assert "" not in params.values() and "" not in run.data.tags.values()
        for name in ("epochs", "momentum", "seed", "device", "dataset", "val_size", "optimizer"):
            assert name in params
        assert params["epochs"] == "2" and params["device"] == "cpu"
        # Tags: study, trial and state, the environment and exactly which data was used.
        tags = run.data.tags
        assert tags["optuna.study_name"] == "test-study"
        assert tags["optuna.trial_number"] == str(trial.number)
        assert tags["optuna.trial_state"] == "COMPLETE"
        assert tags["dataset_checksum"] == synthetic_splits.checksum
        for name in ("cpu_model", "torch_threads", "torch_version", "torchvision_version"):
            assert tags[name]
        assert "cuda_version" in tags and tags["git_commit"]
        # Per-epoch metrics have one point per epoch, at step = epoch.
        for metric in ("train_loss", "val_loss", "val_accuracy", "test_accuracy", "epoch_seconds"):
            history = client.get_metric_history(run.info.run_id, metric)
            assert sorted(m.step for m in history) == [1, 2], metric
        val_history = client.get_metric_history(run.info.run_id, "val_accuracy")
        # Summary metrics agree with the curve and with what Optuna recorded; each is one value
        # at step 0 under a name of its own, never mistaken for a per-epoch curve.
        summary = {k.removeprefix("summary/"): v for k, v in run.data.metrics.items()}
        assert summary["best_val_accuracy"] == pytest.approx(max(m.value for m in val_history))
        assert summary["best_val_accuracy"] == pytest.approx(trial.value)
        assert trial.user_attrs["test_accuracy_at_best_val"] == pytest.approx(
            summary["test_accuracy_at_best_val"]
        )
        assert summary["total_train_seconds"] > 0
        assert trial.user_attrs["total_train_seconds"] == pytest.approx(
            summary["total_train_seconds"]
        )
        best_history = client.get_metric_history(run.info.run_id, "summary/best_val_accuracy")
        assert [m.step for m in best_history] == [0]
        assert "best_val_accuracy" not in run.data.metrics
        assert "final_train_loss" not in summary  # the train_loss curve's last point says it
        # The data is a dataset input: name, and the checksum of its bytes as digest.
        (data,) = run.inputs.dataset_inputs
        assert (data.dataset.name, data.dataset.digest) == ("synthetic", synthetic_splits.checksum)

    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"trials.csv", "best_per_batch_size.csv", "best_per_batch_size.md"} <= artifacts
    assert "optimization_history.png" in artifacts
    # Both clocks ran, inside the sweep's own (which of the two is larger depends on the
    # machine's load: tiny synthetic trials beside MLflow's database calls).
    assert 0 < outcome.tracking_seconds < outcome.wall_seconds
    assert 0 < outcome.trial_seconds < outcome.wall_seconds

    # Same name again: the study resumes, the parent run is reused, trial numbers go on.
    said.clear()
    second = run_sweep(config, CPU, DataConfig(), synthetic_splits, log=said.append)
    assert said[0].startswith("resuming study test-study: 3 trials so far (3 complete, ")
    assert second.parent_run_id == outcome.parent_run_id
    assert second.new_trials == 3
    runs = runs_by_role(client, "test-study")
    assert len(runs["study"]) == 1
    names = sorted(r.info.run_name.split()[0] for r in runs["trial"])
    assert names == sorted(f"trial-{n}" for n in range(6))
    assert len(optuna.load_study(study_name="test-study", storage=stores["storage"]).trials) == 6
    assert list(second.trials["trial_number"]) == list(range(6))


def test_pruned_and_diverged_trials_get_their_own_mlflow_status(stores, synthetic_splits):
    three_epochs = TrainConfig(epochs=3, device="cpu")
    one_batch_size = {"batch_sizes": (32,)}
    # Two good trials to compare against, then one whose learning rate is far too small (pruned
    # after epoch 2 against the median of the same batch size), then two that diverge.
    # The last three are queued outside the study's --lr-range (which a resume cannot change):
    # Optuna runs a queued trial's values as they are.
    for n_trials, queued in ((2, ()), (1, (1.5e-7,)), (2, (1.2e35, 1.7e35))):
        config = sweep_config(stores, n_trials=n_trials, lr_range=(0.1, 0.5), **one_batch_size)
        enqueue(stores, "test-study", [{"batch_size": 32, "lr": lr} for lr in queued])
        run_sweep(config, three_epochs, DataConfig(), synthetic_splits, log=lambda _: None)

    study = optuna.load_study(study_name="test-study", storage=stores["storage"])
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE] * 2 + [TrialState.PRUNED] + [TrialState.FAIL] * 2

    client = MlflowClient(stores["tracking_uri"])
    runs = runs_by_role(client, "test-study")
    assert len(runs["study"]) == 1
    by_number = child_runs(client, "test-study")
    pruned_run = by_number[2]
    assert pruned_run.info.status == "KILLED"
    assert pruned_run.data.tags["optuna.pruned"] == "true"
    assert pruned_run.data.tags["optuna.trial_state"] == "PRUNED"
    history = client.get_metric_history(pruned_run.info.run_id, "val_accuracy")
    assert sorted(m.step for m in history) == [1, 2]  # stopped before epoch 3
    assert pruned_run.data.metrics["summary/epochs_completed"] == 2
    # The value Optuna keeps for a pruned trial (its last intermediate value) is the best
    # validation accuracy its run shows, not the last epoch's.
    pruned = study.trials[2]
    assert pruned.value == pruned.user_attrs["best_val_accuracy"]
    assert pruned.value == pruned_run.data.metrics["summary/best_val_accuracy"]
    assert pruned.value == max(m.value for m in history)

    for failed in study.trials[3:]:
        assert "diverged" in failed.user_attrs["fail_reason"]
        run = by_number[failed.number]
        assert run.info.status == "FAILED"
        assert run.data.tags["optuna.trial_state"] == "FAIL"
        assert "diverged at epoch 1" in run.data.tags["optuna.fail_reason"]

    complete = [by_number[t.number] for t in study.trials[:2]]
    assert all(r.info.status == "FINISHED" and "optuna.pruned" not in r.data.tags for r in complete)


def test_same_batch_size_median_pruner_ignores_other_batch_sizes():
    """Small batches lead early; a large batch must only be compared with large batches."""
    study = optuna.create_study(direction="maximize")
    distributions = {
        "batch_size": optuna.distributions.CategoricalDistribution([16, 1024]),
        "lr": optuna.distributions.FloatDistribution(1e-3, 1.0, log=True),
    }
    for batch_size, curve in ((16, [0.90, 0.91, 0.92]), (16, [0.89, 0.91, 0.92])) * 2 + (
        (1024, [0.70, 0.80, 0.90]),
        (1024, [0.60, 0.75, 0.89]),
    ):
        study.add_trial(
            create_trial(
                params={"batch_size": batch_size, "lr": 0.1},
                distributions=distributions,
                value=curve[-1],
                intermediate_values=dict(enumerate(curve, start=1)),
            )
        )
    running = create_trial(
        state=TrialState.RUNNING,
        params={"batch_size": 1024, "lr": 0.1},
        distributions=distributions,
        intermediate_values={1: 0.72, 2: 0.81},
    )
    ours = SameBatchSizeMedianPruner(n_startup_trials=2, n_warmup_steps=2)
    plain = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2)
    assert plain.prune(study, running)  # below the median of all batch sizes at epoch 2
    assert not ours.prune(study, running)  # above the median of batch size 1024
    lagging = create_trial(
        state=TrialState.RUNNING,
        params={"batch_size": 1024, "lr": 0.1},
        distributions=distributions,
        intermediate_values={1: 0.50, 2: 0.60},
    )
    assert ours.prune(study, lagging)


def test_best_per_batch_size_picks_each_batch_sizes_best_complete_trial():
    trials = pd.DataFrame(
        {
            "trial_number": [0, 1, 2, 3, 4],
            "state": ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE", "FAIL"],
            "batch_size": [64, 64, 64, 256, 256],
            "lr": [0.01, 0.1, 0.5, 0.3, 9.0],
            "best_val_accuracy": [0.90, 0.92, 0.99, 0.91, float("nan")],
            "test_accuracy_at_best_val": [0.905, 0.921, 0.99, 0.912, float("nan")],
            "final_test_accuracy": [0.9, 0.92, 0.99, 0.91, float("nan")],
            "time_to_target_seconds": [float("nan"), 1.5, 0.1, float("nan"), float("nan")],
            "steady_samples_per_second": [1e5, 1.1e5, 1e5, 4e5, 4e5],
        }
    )
    best = best_per_batch_size(trials)
    assert list(best["batch_size"]) == [64, 256]
    assert list(best["best_lr"]) == [0.1, 0.3]  # the PRUNED 0.99 does not count
    assert list(best["complete_trials"]) == [2, 1]
    markdown = best_per_batch_size_markdown(best)
    assert "| 64 | 0.1 | 0.9200 | 0.9210 |" in markdown
    assert "| 256 | 0.3 | 0.9100 | 0.9120 | 0.9100 | not reached |" in markdown


def test_flags_come_from_the_configs_once_each():
    parser = build_parser()
    flags = [flag for action in parser._actions for flag in action.option_strings]
    for flag in ("--epochs", "--device", "--dataset", "--data-root", "--seed", "--repeats",
                 "--study-name", "--n-trials", "--timeout", "--batch-sizes", "--lr-range",
                 "--sampler", "--pruner", "--objective", "--storage", "--tracking-uri",
                 "--quiet", "--target-accuracy"):  # fmt: skip
        assert flags.count(flag) == 1, flag
    assert "--batch-size" not in flags and "--lr" not in flags  # the study chooses those
    lr_range = next(a for a in parser._actions if "--lr-range" in a.option_strings)
    assert lr_range.nargs == 2 and lr_range.metavar == ("MIN", "MAX")
    assert SweepConfig().grid_learning_rates()[-1] == SweepConfig().lr_range[1]
    with pytest.raises(ConfigError, match="pruner"):
        SweepConfig(objective="accuracy_vs_time")  # default pruner is median


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the socket is closed


BAD_FLAGS = [
    (["--batch-sizes"], "expected at least one argument"),
    (["--batch-sizes", "0", "64"], "--batch-sizes"),
    (["--batch-sizes", "64", "64"], "distinct"),
    (["--lr-range", "1", "0.1"], "--lr-range"),
    (["--lr-range", "0", "1"], "--lr-range"),
    (["--lr-range", "0.1", "inf"], "--lr-range"),
    (["--sampler", "annealing"], "invalid choice"),
    (["--repeats", "0"], "--repeats"),
    (["--objective", "accuracy_vs_time"], "--pruner"),
    (["--study-name", "a b"], "--study-name"),
    (["--storage", "sqlite:///:memory:"], "in-memory"),
    (["--storage", "not a url"], "--storage"),
    (["--storage", "sqlite:///missing/optuna.db"], "does not exist"),
    (["--tracking-uri", "sqlite:///missing/mlflow.db"], "does not exist"),
    (["--tracking-uri", "./mlruns"], "file store"),
    (["--storage", "postgresql://postgres@127.0.0.1:{port}/test"], "cannot connect"),
    (["--tracking-uri", "http://127.0.0.1:{port}"], "no MLflow server"),
    (["--epochs", "0"], "--epochs"),
    (["--tracking-uri", "sqlite:///optuna.db"], "cannot share one"),
    (["--tracking-uri", "sqlite:///./optuna.db"], "cannot share one"),
    (["--storage", "postgresql://"], "expected a host and a database name"),
    (["--storage", "postgresql://postgres@127.0.0.1"], "expected a host and a database name"),
    (["--tracking-uri", "http://[::1"], "--tracking-uri"),
    (["--tracking-uri", "http://"], "with a host"),
    (["--workers", "-1"], "--workers"),
    (["--heartbeat-seconds", "0"], "--heartbeat-seconds"),
    (["--tracking-wait-seconds", "-1"], "--tracking-wait-seconds"),
    (["--storage-wait-seconds", "-1"], "--storage-wait-seconds"),
    (["--storage-wait-seconds", "nan"], "--storage-wait-seconds"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_flags_exit_2_and_create_nothing(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    port = str(_closed_port())
    with pytest.raises(SystemExit) as exit_info:
        main([arg.replace("{port}", port) for arg in argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no optuna.db, no mlflow.db, no data folder


def test_bad_flags_exit_2_from_the_command_line(tmp_path):
    """The real CLI in a subprocess: the message names the store, the folder stays empty.

    (One case only: each interpreter start imports torch, Optuna and MLflow, which takes seconds;
    the in-process test above covers every other bad value through the same `main`.)"""
    cases = {
        "postgres": (
            ["--storage", f"postgresql://postgres@127.0.0.1:{_closed_port()}/test"],
            "cannot connect to the database",
        ),
    }
    processes = {}
    for name, (argv, _) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        processes[name] = subprocess.Popen(
            [sys.executable, "-m", "experiments.sweep", *argv],
            cwd=folder,
            env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    for name, process in processes.items():
        _, err = process.communicate(timeout=120)
        assert process.returncode == 2, err
        assert cases[name][1] in err
        assert list((tmp_path / name).iterdir()) == []


def test_resuming_with_another_objective_exits_2_before_writing(
    stores, synthetic_splits, tmp_path, capsys
):
    run_sweep(
        sweep_config(stores, n_trials=1), CPU, DataConfig(), synthetic_splits, log=lambda _: None
    )
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.is_file()}
    argv = ["--study-name", "test-study", "--objective", "accuracy_vs_time", "--pruner", "none",
            "--population", "1",
            "--storage", stores["storage"], "--tracking-uri", stores["tracking_uri"],
            "--data-root", str(tmp_path / "data")]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "use another --study-name" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()
    assert len(optuna.load_study(study_name="test-study", storage=stores["storage"]).trials) == 1
    after = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.is_file()}
    assert after["mlflow.db"] == before["mlflow.db"]


def test_accuracy_vs_time_finds_a_pareto_front(stores, synthetic_splits):
    config = sweep_config(
        stores, n_trials=3, objective="accuracy_vs_time", pruner="none", study_name="pareto"
    )
    outcome = run_sweep(
        config,
        TrainConfig(epochs=2, device="cpu", target_accuracy=0.5),
        DataConfig(),
        synthetic_splits,
        log=lambda _: None,
    )
    study = outcome.study
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["best_val_accuracy", "time_to_target_seconds"]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert complete and all(len(t.values) == 2 for t in complete)
    for trial in complete:
        row = outcome.trials.set_index("trial_number").loc[trial.number]
        assert row["objective_value_2"] == pytest.approx(trial.values[1])
        if trial.user_attrs["time_to_target_seconds"] is None:
            assert trial.values[1] == float("inf")
    client = MlflowClient(stores["tracking_uri"])
    artifacts = {a.path for a in client.list_artifacts(outcome.parent_run_id)}
    assert "pareto_front.png" in artifacts


def _postgres_url() -> str | None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            return None
    return "postgresql://postgres@127.0.0.1:5432/test"


def test_postgresql_as_optuna_storage(stores, synthetic_splits):
    url = _postgres_url()
    if url is None:
        pytest.skip("no PostgreSQL driver installed (pip install psycopg[binary])")
    from experiments.stores import StoreError, check_optuna_storage

    try:
        check_optuna_storage(url)
    except StoreError as error:
        pytest.skip(f"PostgreSQL not reachable: {error}")
    name = f"test-pg-{uuid.uuid4().hex[:12]}"
    config = sweep_config(stores, storage=url, study_name=name, n_trials=2)
    try:
        outcome = run_sweep(
            config, TrainConfig(epochs=1, device="cpu"), DataConfig(), synthetic_splits
        )
        reloaded = optuna.load_study(study_name=name, storage=outcome.study._storage)
        assert len(reloaded.trials) == 2
        client = MlflowClient(stores["tracking_uri"])
        runs = child_runs(client, name)
        for trial in reloaded.trials:
            run = runs[trial.number]
            assert run.info.run_name.split()[0] == f"trial-{trial.number}"
            assert run.data.tags["optuna.study_name"] == name
    finally:
        storage = open_storage(url)
        if name in {s.study_name for s in storage.get_all_studies()}:
            optuna.delete_study(study_name=name, storage=storage)


def test_grid_sampler_with_hyperband_covers_the_grid_once(stores, synthetic_splits):
    config = sweep_config(stores, n_trials=10, sampler="grid", grid_lr_points=2, pruner="hyperband")
    outcome = run_sweep(config, CPU, DataConfig(), synthetic_splits, log=lambda _: None)
    # 2 batch sizes × 2 learning rates: the grid is exhausted after 4 trials, not 10.
    combos = {(t.params["batch_size"], t.params["lr"]) for t in outcome.study.trials}
    assert len(outcome.study.trials) == 4
    assert combos == {(b, lr) for b in (32, 128) for lr in config.grid_learning_rates()}
    assert config.grid_learning_rates() == pytest.approx([0.05, 1.0])


def interrupt_once_trial_has_trained(database: Path, trial_number: int) -> None:
    """Ctrl-C (KeyboardInterrupt in the main thread) once the trial has stored an epoch: an
    event, not a wall-clock guess, so a fast or a slow machine interrupts the same trial."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if recorded_epochs(database, trial_number) >= 1:
            _thread.interrupt_main()
            return
        time.sleep(0.02)


def test_interrupt_leaves_no_run_marked_running(stores, synthetic_splits, tmp_path):
    """Ctrl-C mid-trial: finished trials stay, the interrupted one is FAIL with its reason,
    its run and the parent are closed, and the export shows the reason."""
    # --epochs is the study's for life, so the interrupted trial is the long one by its batch
    # size: 2,000 steps an epoch at batch size 1 against 63 at 32, ten epochs to interrupt in.
    config = sweep_config(stores, n_trials=1, batch_sizes=(1, 32), pruner="none")
    ten_epochs = TrainConfig(epochs=10, device="cpu")
    run_sweep(config, ten_epochs, DataConfig(), synthetic_splits, log=lambda _: None)
    enqueue(stores, "test-study", [{"batch_size": 1, "lr": 0.1}])
    database = Path(stores["storage"].removeprefix("sqlite:///"))
    watcher = threading.Thread(
        target=interrupt_once_trial_has_trained, args=(database, 1), daemon=True
    )
    previous = signal.getsignal(signal.SIGINT)
    install_signal_handlers()  # as the command does: the interrupt waits for a safe point
    watcher.start()
    with pytest.raises(KeyboardInterrupt):
        run_sweep(replace(config, n_trials=5), ten_epochs, DataConfig(), synthetic_splits,
                  log=lambda _: None)  # fmt: skip
    watcher.join(timeout=5)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, previous if signum == signal.SIGINT else signal.SIG_DFL)

    study = optuna.load_study(study_name="test-study", storage=stores["storage"])
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert study.trials[1].user_attrs["fail_reason"] == "interrupted by Ctrl-C (SIGINT)"
    client = MlflowClient(stores["tracking_uri"])
    runs = runs_by_role(client, "test-study")
    assert runs["study"][0].info.status == "KILLED"
    by_number = child_runs(client, "test-study")
    assert {n: r.info.status for n, r in by_number.items()} == {0: "FINISHED", 1: "FAILED"}
    assert by_number[1].data.tags["optuna.fail_reason"] == "interrupted by Ctrl-C (SIGINT)"
    assert client.get_metric_history(by_number[1].info.run_id, "val_accuracy")  # epochs so far

    out = tmp_path / "interrupted.csv"
    argv = ["--study-name", "test-study", "--out", str(out), "--storage", stores["storage"],
            "--tracking-uri", stores["tracking_uri"]]  # fmt: skip
    assert export_main(argv) == 0
    table = pd.read_csv(out)
    assert list(table["fail_reason"].fillna("")) == ["", "interrupted by Ctrl-C (SIGINT)"]
    assert list(table["mlflow_status"]) == ["FINISHED", "FAILED"]


def test_resuming_with_other_batch_sizes_exits_2_and_adds_no_trial(
    stores, synthetic_splits, tmp_path, capsys
):
    run_sweep(sweep_config(stores, n_trials=1), CPU, DataConfig(), synthetic_splits,
              log=lambda _: None)  # fmt: skip
    for attempt in range(2):
        argv = ["--study-name", "test-study", "--batch-sizes", "32", "512",
                "--storage", stores["storage"], "--tracking-uri", stores["tracking_uri"],
                "--data-root", str(tmp_path / "data")]  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2, attempt
        message = capsys.readouterr().err
        assert "chooses batch sizes 32 128" in message
        assert "--batch-sizes 32 128" in message and "--study-name test-study-bs32-512" in message
    study = optuna.load_study(study_name="test-study", storage=stores["storage"])
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]  # no empty FAIL trials
    assert not (tmp_path / "data").exists()


def test_a_reconcile_leaves_a_live_workers_trial_to_it(stores, synthetic_splits):
    """Another worker's reconcile (at its start or end) reads the study; then the owner finishes
    a trial and closes its run. The reconcile must not write its stale view (RUNNING) over it."""
    config = sweep_config(stores, n_trials=1)
    run_sweep(config, CPU, DataConfig(), synthetic_splits, log=lambda _: None)
    study = optuna.load_study(study_name="test-study", storage=stores["storage"])
    owner, other = (
        Mirror.open(Stores.from_config(config), study, wait_seconds=5, log=lambda _: None)
        for _ in range(2)
    )
    for mirror in (owner, other):
        mirror.ensure_parent_run(study, {}, reopen=False)
    trial = study.ask(
        {
            "batch_size": optuna.distributions.CategoricalDistribution((32, 128)),
            "lr": optuna.distributions.FloatDistribution(0.05, 1.0, log=True),
        }
    )
    run_id = owner.sync(study._storage.get_trial(trial._trial_id))  # the run of a live trial
    # Its record moves on, as each epoch does.
    trial.set_user_attr("epochs", {"step": [1], "time_ms": [0], "val_accuracy": [0.9]})

    def owner_finishes_meanwhile(*args):
        runs = read_runs(*args)
        owner.sync(study.tell(trial, 0.9))
        return runs

    read_runs = other._study_runs
    other._study_runs = owner_finishes_meanwhile
    report = other.reconcile(study)

    assert MlflowClient(stores["tracking_uri"]).get_run(run_id).info.status == "FINISHED"
    assert report.synced == 0  # the finished trial was the owner's to mirror, and it did


def test_a_trial_whose_worker_never_beat_is_failed_by_a_reconcile(stores, synthetic_splits):
    """A worker cut off between asking for a trial and its first heartbeat (its storage full or
    gone right then) leaves a RUNNING trial with no heartbeat, which Optuna's stale check never
    sees: once the grace period has passed since the trial started, a reconcile fails it."""
    config = sweep_config(stores, n_trials=1, heartbeat_seconds=1)
    run_sweep(config, CPU, DataConfig(), synthetic_splits, log=lambda _: None)
    study = optuna.load_study(study_name="test-study", storage=stores["storage"])
    study.ask()  # no heartbeat thread: a trial that never beat
    time.sleep(config.grace_seconds + 1)  # the grace period is the contract here
    repaired = reconcile_study(replace(config, retries=0), log=lambda _: None)[2]
    study = optuna.load_study(study_name="test-study", storage=stores["storage"])
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert repaired >= 1
    run = child_runs(MlflowClient(stores["tracking_uri"]), "test-study")[1]
    assert run.info.status == "FAILED"
    assert run.data.tags["optuna.fail_reason"] == WORKER_LOST_REASON
