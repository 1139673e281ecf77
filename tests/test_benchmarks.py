"""The benchmark suite: quick mode end to end on synthetic data, its tables, report and runs.

Timings are never asserted (speed is measured by the suite, not by tests); what is checked is
that every table has its rows and columns, the figures are in range, the report only links files
that exist, every benchmark is an MLflow run, and bad input exits 2 before any work.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from benchmarks.common import Spread, all_threads
from benchmarks.compare import main as main_compare
from benchmarks.config import SECTIONS
from benchmarks.contention import PIPELINES as CONTENTION_PIPELINES
from benchmarks.estimate import estimate_seconds
from benchmarks.population import QUICK as POPULATION_QUICK
from benchmarks.profiles import QUICK, STANDARD
from benchmarks.report import ROUNDS_COLUMNS, format_cell, markdown_table
from benchmarks.runner import main
from benchmarks.sweep_throughput import REFIT_MODEL, TRIAL_MODEL
from benchmarks.time_to_accuracy import best_lrs, median_with_misses
from softmaxreg.config import LR_SCHEDULE_CHOICES

SEEDS = 2
CEILING_POINTS = (
    len(QUICK.ceiling_batch_sizes)
    * len(QUICK.ceiling_epochs)
    * len(LR_SCHEDULE_CHOICES)
    * len(QUICK.ceiling_lrs)
    * len(QUICK.ceiling_weight_decays)
)
# Sweeps as processes load MNIST through the verified CLI.
NEEDS_REAL_MNIST = ("sweep_workers", "population_sweep", "startup", "bookkeeping")
MEASURED_ON_SYNTHETIC = tuple(name for name in SECTIONS if name not in NEEDS_REAL_MNIST)
N_BS = len(QUICK.batch_sizes)
THREADS = len({1, all_threads()})
TUTORIAL_THREADS = len({1, torch.get_num_threads()})  # the default count, then 1


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[int, Path]:
    out = tmp_path_factory.mktemp("bench") / "results"
    code = main(["--quick", "--synthetic", "--out", str(out), "--seeds", str(SEEDS)])
    return code, out


def read(out: Path, name: str) -> pd.DataFrame:
    path = out / f"{name}.csv"
    assert path.is_file(), f"{path.name} was not written"
    return pd.read_csv(path)


# (table, expected row count, columns that must be there)
EXPECTED_TABLES = [
    (
        "tutorial_vs_trainer",
        2 * TUTORIAL_THREADS,
        ["threads", "pipeline", "median_total_seconds", "median_train_seconds"],
    ),
    ("tutorial_vs_trainer_ratios", 3 * TUTORIAL_THREADS, ["threads", "ratio", "value"]),
    (
        "tutorial_vs_trainer_rounds",
        2 * QUICK.tutorial_rounds * TUTORIAL_THREADS,
        ["round", "pipeline", "total_seconds", "test_accuracy"],
    ),
    (
        "scaling",
        THREADS * N_BS,
        [
            "device",
            "threads",
            "batch_size",
            "epoch_seconds_median",
            "epoch_seconds_min",
            "epoch_seconds_max",
            "samples_per_second_median",
            "floor_seconds",
            "epoch_over_floor",
        ],
    ),
    (
        "scaling_full",
        THREADS * N_BS,
        ["epoch_seconds_q1", "epoch_seconds_q3", "repeats", "warmup_epoch_seconds"],
    ),
    ("scaling_floor", THREADS, ["device", "threads", "floor_seconds_median"]),
    (
        "time_to_accuracy",
        N_BS,
        [
            "batch_size",
            "best_lr",
            "sweep_best_val_accuracy",
            "reached_0.92",
            "median_seconds_to_0.92",
            "reached_0.91",
            "median_seconds_to_0.91",
        ],
    ),
    (
        "time_to_accuracy_lr_sweep",
        N_BS * len(QUICK.sweep_lrs),
        ["batch_size", "lr", "best_val_accuracy", "diverged"],
    ),
    ("time_to_accuracy_seeds", N_BS * SEEDS, ["batch_size", "lr", "seed", "seconds_to_0.92"]),
    (
        "tutorial_bug",
        QUICK.ablation_epochs,
        ["epoch", "tutorial_double_softmax_test_accuracy", "logits_test_accuracy"],
    ),
    (
        "tutorial_bug_curves",
        2 * QUICK.ablation_epochs,
        ["model", "epoch", "test_accuracy_mean", "test_accuracy_std"],
    ),
    (
        "tutorial_bug_runs",
        2 * SEEDS * QUICK.ablation_epochs,
        ["model", "seed", "epoch", "test_accuracy"],
    ),
    ("tracking_overhead", 6, ["figure", "value"]),
    (
        "tracking_overhead_runs",
        2 * QUICK.tracking_repeats,
        ["mode", "trial_seconds", "mlflow_seconds"],
    ),
    ("sweep_throughput", 9, ["figure", "value"]),
    ("sweep_throughput_refit", 2, ["model", "trial", "train_examples", "test_accuracy"]),
    ("sweep_throughput_trials", QUICK.sweep_trials, ["trial_number", "state", "batch_size", "lr"]),
    ("fashion_mnist", N_BS, ["batch_size", "best_lr", "median_seconds_to_0.92"]),
    ("fashion_mnist_lr_sweep", N_BS * len(QUICK.sweep_lrs), ["batch_size", "lr"]),
    ("fashion_mnist_seeds", N_BS * SEEDS, ["batch_size", "seed"]),
    # ours and the tutorial's recipe (55k and refit on 60k), logits at the tutorial's settings per
    # schedule, scikit-learn
    (
        "accuracy_ceiling",
        4 + len(LR_SCHEDULE_CHOICES) + 1,
        ["method", "configuration", "seeds", "test_accuracy_mean", "test_accuracy_sd"],
    ),
    (
        "accuracy_ceiling_grid",
        CEILING_POINTS,
        ["batch_size", "epochs", "lr_schedule", "lr", "weight_decay", "final_val_accuracy"],
    ),
    (
        "accuracy_ceiling_seeds",
        (4 + len(LR_SCHEDULE_CHOICES)) * SEEDS,
        ["method", "seed", "val_accuracy", "test_accuracy"],
    ),
    ("accuracy_ceiling_sklearn", len(QUICK.sklearn_cs), ["C", "val_accuracy", "test_accuracy"]),
    (
        "contention",
        len(CONTENTION_PIPELINES) * len(QUICK.contention_batch_sizes),
        ["batch_size", "pipeline", "quiet_seconds", "busy_seconds", "slowdown"],
    ),
    (
        "contention_runs",
        2 * len(CONTENTION_PIPELINES) * QUICK.contention_rounds * len(QUICK.contention_batch_sizes),
        ["round", "condition", "batch_size", "pipeline", "train_seconds", "trials", "load_average"],
    ),
    (
        "population",
        len(POPULATION_QUICK["batch_sizes"]) * len(POPULATION_QUICK["members"]),
        ["batch_size", "members", "ratio", "matmul_floor_epoch_s", "reachable_ratio"],
    ),
]


def test_quick_run_succeeds_and_writes_every_table(quick_run):
    code, out = quick_run
    assert code == 0
    written = {path.stem for path in out.glob("*.csv")}
    assert written == {name for name, _, _ in EXPECTED_TABLES} | {"rounds"}


def test_every_measured_section_records_its_rounds_and_load(quick_run):
    _, out = quick_run
    rounds = read(out, "rounds")
    assert list(rounds.columns) == list(ROUNDS_COLUMNS)
    assert set(rounds.section) == set(MEASURED_ON_SYNTHETIC)
    assert set(rounds.kind) == {"timed", "accuracy"} and set(rounds.better) == {"lower", "higher"}
    assert rounds.value.notna().all() and (rounds["round"] >= 1).all()
    # The scaling check's figure, one round per timed epoch (quick: 2 per pass, 1 pass).
    worst = rounds[rounds.figure.str.startswith("steady epoch / matmul floor")]
    assert len(worst) == THREADS * QUICK.scaling_passes * QUICK.scaling_epochs_per_pass
    seeds = rounds[rounds.figure == "logits: test accuracy after the last epoch"]
    assert len(seeds) == SEEDS and (seeds.kind == "accuracy").all()
    environment = json.loads((out / "environment.json").read_text(encoding="utf-8"))
    assert environment["profile"] == "quick" and environment["torch_version"]
    assert list(environment["sections"]) == list(MEASURED_ON_SYNTHETIC)
    for load in environment["sections"].values():
        assert load["seconds"] > 0 and load["load_average_start"] >= 0


def test_the_suite_run_compares_with_its_own_folder(quick_run, capsys):
    """compare reads back what the suite logged to MLflow: the same rounds as the folder."""
    from mlflow import MlflowClient

    _, out = quick_run
    uri = f"sqlite:///{out / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("benchmarks")
    (suite,) = client.search_runs([experiment.experiment_id], "tags.benchmark = 'suite'")
    assert main_compare([str(out), suite.info.run_id, "--tracking-uri", uri]) == 0
    text = capsys.readouterr().out
    assert not re.search(r"\*\*(slower|faster|better|worse)\*\*", text)
    assert "⚠ **" not in text  # the same environment: no warning that timings compare machines
    figures = len(read(out, "rounds").groupby(["section", "figure"]))
    assert text.count("| unchanged |") + text.count("| no band |") == figures


@pytest.mark.parametrize(
    ("name", "rows", "columns"), EXPECTED_TABLES, ids=[t[0] for t in EXPECTED_TABLES]
)
def test_table_has_its_rows_and_columns(quick_run, name, rows, columns):
    _, out = quick_run
    frame = read(out, name)
    assert len(frame) == rows
    missing = set(columns) - set(frame.columns)
    assert not missing, f"{name}.csv lacks {missing}"


def test_figures_are_in_range(quick_run):
    _, out = quick_run
    ratios = read(out, "tutorial_vs_trainer_ratios")
    assert (ratios.value > 0).all() and ratios.value.map(math.isfinite).all()
    scaling = read(out, "scaling")
    assert (scaling.epoch_seconds_min <= scaling.epoch_seconds_median).all()
    assert (scaling.epoch_seconds_median <= scaling.epoch_seconds_max).all()
    assert (scaling.epoch_over_floor > 0).all()
    assert sorted(scaling.threads.unique()) == sorted({1, all_threads()})
    sweep = read(out, "time_to_accuracy_lr_sweep")
    assert sweep.best_val_accuracy.between(0, 1).all()
    tta = read(out, "time_to_accuracy")
    # The chosen lr is the grid point with the best validation accuracy for that batch size.
    for _, row in tta.iterrows():
        points = sweep[sweep.batch_size == row.batch_size]
        assert row.best_lr == points.loc[points.best_val_accuracy.idxmax(), "lr"]
    runs = read(out, "tutorial_bug_runs")
    assert set(runs.model) == {"tutorial_double_softmax", "logits"}
    assert runs.test_accuracy.between(0, 1).all()
    # Synthetic prototypes are easy: logits learns them, the double softmax lags behind.
    last = runs[runs.epoch == runs.epoch.max()].groupby("model").test_accuracy.mean()
    assert last["logits"] > last["tutorial_double_softmax"]
    tracked = read(out, "tracking_overhead_runs")
    assert (tracked[tracked["mode"] == "tracked"].mlflow_seconds > 0).all()
    assert (tracked[tracked["mode"] == "untracked"].mlflow_seconds == 0).all()


def test_the_default_study_shows_the_refit_model_beside_its_best_trial(quick_run):
    """The sweep section's study ends with its refit: the registered model (the best trial's
    configuration on train + validation) and the trial's own weights, both scored on test."""
    _, out = quick_run
    refit = read(out, "sweep_throughput_refit").set_index("model")
    trials = read(out, "sweep_throughput_trials")
    trial, model = refit.loc[TRIAL_MODEL], refit.loc[REFIT_MODEL]
    assert trial.trial == model.trial
    complete = trials[trials.state == "COMPLETE"]
    best = complete.loc[complete.best_val_accuracy.idxmax()]
    assert trial.trial == best.trial_number
    assert trial.test_accuracy == pytest.approx(best.final_test_accuracy)
    assert trial.train_examples == QUICK.synthetic_train - QUICK.synthetic_val
    assert model.train_examples == QUICK.synthetic_train  # train + validation
    assert 0 < model.test_accuracy <= 1
    report = (out / "report.md").read_text(encoding="utf-8")
    both = (
        f"{model.test_accuracy:.4f} for the refit model ({int(model.train_examples):,} images) "
        f"beside {trial.test_accuracy:.4f} for the best trial's own weights "
        f"({int(trial.train_examples):,} images)"
    )
    assert f"| default study, test accuracy: refit vs best trial | {both} |" in report
    rounds = read(out, "rounds")
    accuracies = rounds[rounds.figure.str.startswith("default study test accuracy")]
    assert sorted(accuracies.value) == sorted([trial.test_accuracy, model.test_accuracy])


def test_report_links_only_files_that_exist(quick_run):
    _, out = quick_run
    report = (out / "report.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", report)
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", report)
    assert targets and images
    for target in targets:
        assert not target.startswith("/") and "://" not in target, target
        assert (out / target).is_file(), f"report links {target}, which does not exist"
    for image in images:
        assert image.endswith(".png")
        assert (out / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    linked = set(targets)
    assert {p.name for p in out.glob("*.csv")} <= linked, "every table is linked"
    assert {p.name for p in out.glob("*.png")} <= linked, "every plot is shown"
    for heading in ("## Machine", "## Summary", "Quick mode", "Wall time", "torch_version"):
        assert heading in report


def test_every_benchmark_is_an_mlflow_run(quick_run):
    from mlflow import MlflowClient

    _, out = quick_run
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("benchmarks")
    runs = client.search_runs([experiment.experiment_id])
    by_name = {run.info.run_name: run for run in runs}
    assert set(MEASURED_ON_SYNTHETIC) <= set(by_name)
    assert not set(NEEDS_REAL_MNIST) & set(by_name)
    report = (out / "report.md").read_text(encoding="utf-8")
    for name in NEEDS_REAL_MNIST:  # said, with the reason, not silently left out
        assert re.search(rf"{name}.*not measured.*real files", report), name
    suite = [r for r in runs if r.data.tags.get("benchmark") == "suite"]
    assert len(suite) == 1 and suite[0].info.status == "FINISHED"
    for name in MEASURED_ON_SYNTHETIC:
        run = by_name[name]
        assert run.data.tags["mlflow.parentRunId"] == suite[0].info.run_id
        assert run.data.metrics, f"{name} logged no metrics"
        assert run.data.tags["torch_version"]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert any(path.endswith(".csv") for path in artifacts), name
    speedups = [k for k in by_name["tutorial_speed"].data.metrics if k.startswith("speedup_raw")]
    assert len(speedups) == TUTORIAL_THREADS
    plots = {a.path for a in client.list_artifacts(by_name["scaling"].info.run_id)}
    assert {"scaling_epoch_seconds.png", "scaling_throughput.png"} <= plots
    suite_files = {a.path for a in client.list_artifacts(suite[0].info.run_id)}
    assert "report.md" in suite_files


@pytest.mark.parametrize(
    "argv",
    [
        ["--no-such-flag"],
        ["--seeds", "0"],
        ["--threads", "-1"],
        ["--sections", "scaling", "nope"],
        ["--sections", "scaling", "scaling"],
        ["--device", "tpu"],
        ["--tracking-uri", "file:///tmp/mlruns"],
        ["--tracking-uri", "sqlite:///no/such/folder/mlflow.db"],
        ["--profile", "full"],  # contradicts --quick
        ["--profile", "medium"],
    ],
)
def test_bad_input_exits_2_before_any_work(tmp_path, capsys, argv):
    out = tmp_path / "results"
    with pytest.raises(SystemExit) as exit_info:
        main(["--quick", "--synthetic", "--out", str(out), *argv])
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err
    assert not (out / "report.md").exists()
    assert not list(out.glob("*.csv")) if out.exists() else True


def test_the_standard_profile_is_estimated_under_12_minutes_and_keeps_three_rounds():
    assert estimate_seconds(SECTIONS, STANDARD, 55000) <= 12 * 60
    assert min(STANDARD.seeds, STANDARD.tutorial_rounds, STANDARD.scaling_passes) >= 3
    assert STANDARD.contention_rounds >= 3 and STANDARD.tracking_repeats >= 3


def test_spread_of_repeats():
    spread = Spread.of([3.0, 1.0, 2.0, 10.0])
    assert (spread.median, spread.minimum, spread.maximum, spread.n) == (2.5, 1.0, 10.0, 4)
    assert spread.q1 <= spread.median <= spread.q3
    assert Spread.of([]).n == 0 and math.isnan(Spread.of([]).median)


def test_median_counts_misses_as_infinitely_slow():
    assert median_with_misses(pd.Series([1.0, 2.0, math.nan])) == 2.0
    assert math.isnan(median_with_misses(pd.Series([1.0, math.nan, math.nan])))


def test_best_lr_prefers_the_smaller_on_ties_and_skips_diverged():
    sweep = pd.DataFrame(
        {
            "batch_size": [16, 16, 16, 64, 64],
            "lr": [0.3, 0.1, 1.0, 0.1, 1.0],
            "best_val_accuracy": [0.9, 0.9, math.nan, 0.8, 0.85],
            "diverged": [False, False, True, False, False],
        }
    )
    assert best_lrs(sweep) == {16: 0.1, 64: 1.0}


def test_markdown_table_formats_cells():
    frame = pd.DataFrame({"a": [1, 2], "b": [0.123456, math.nan], "c": ["x|y", "z"]})
    table = markdown_table(frame)
    assert table.splitlines()[0] == "| a | b | c |"
    assert "| 1 | 0.1235 | x\\|y |" in table and "| 2 | — | z |" in table
    assert format_cell(123456.7) == "123,457"


def test_time_to_accuracy_plots_when_no_target_was_reached(tmp_path):
    from types import SimpleNamespace

    from benchmarks.time_to_accuracy_plots import plot

    sweep = pd.DataFrame(
        {"batch_size": [16, 16, 64], "lr": [0.1, 1.0, 0.1], "best_val_accuracy": [0.8, 0.7, 0.8]}
    )
    summary = pd.DataFrame(
        {
            "batch_size": [16, 64],
            "median_seconds_to_0.85": [math.nan, math.nan],
            "median_seconds_to_0.84": [math.nan, math.nan],
        }
    )
    context = SimpleNamespace(out=tmp_path, settings=SimpleNamespace(sweep_epochs=3))
    written = plot(sweep, summary, (0.85, 0.84), "fashion_mnist", "fashion_mnist", context)
    for name, _ in written:
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_fashion_mnist_that_cannot_be_loaded_skips_its_section_with_the_reason(monkeypatch):
    """Offline without a local copy, only the Fashion-MNIST section is skipped, not the run."""
    from types import SimpleNamespace

    from benchmarks import fashion_mnist, suite_data
    from benchmarks.common import NotMeasured
    from softmaxreg.data import DataError

    def offline(name, *args, **kwargs):
        raise DataError(f"{name}: no source worked (offline)")

    monkeypatch.setattr(suite_data, "load_splits", offline)
    logged: list[str] = []
    reason = suite_data.load_fashion(None, torch.device("cpu"), logged.append)
    assert isinstance(reason, str) and reason.startswith("skipped: ")
    assert "fashion_mnist: no source worked (offline)" in reason and logged
    with pytest.raises(NotMeasured, match=r"^skipped: Fashion-MNIST could not be loaded"):
        fashion_mnist.run(SimpleNamespace(fashion=reason))


def test_accuracy_ceiling_chooses_on_validation_and_compares_on_the_same_seeds(quick_run):
    _, out = quick_run
    grid = read(out, "accuracy_ceiling_grid")
    table = read(out, "accuracy_ceiling").set_index("method")
    seeds = read(out, "accuracy_ceiling_seeds")
    best = grid.loc[grid.final_val_accuracy.idxmax()]
    ours = table.loc["ours (best on validation)"]
    assert f"lr {best.lr:g}, {best.lr_schedule}" in ours.configuration
    assert table.test_accuracy_mean.between(0, 1).all()
    assert set(seeds.groupby("method").seed.apply(frozenset)) == {frozenset({1, 2})}
    assert 0.0 not in set(seeds.seed), "the selection seed is not reused for reporting"
    refit = table.loc["ours (best on validation), refit on train + validation"]
    assert refit.configuration.startswith(ours.configuration.split(" (")[0])
    refit_seeds = seeds[seeds.method.str.endswith("refit on train + validation")]
    assert len(refit_seeds) == 2 * 2 and refit_seeds.val_accuracy.isna().all()
    assert refit_seeds.test_accuracy.between(0, 1).all()


def test_the_refit_trains_on_train_and_validation_and_keeps_the_test_split(synthetic_splits):
    from benchmarks.accuracy_ceiling import train_and_validation

    refit = train_and_validation(synthetic_splits)
    n_train, n_val = len(synthetic_splits.train_y), len(synthetic_splits.val_y)
    assert len(refit.train_y) == len(refit.train_x) == n_train + n_val
    assert torch.equal(refit.train_x[n_train:], synthetic_splits.val_x)
    assert torch.equal(refit.test_x, synthetic_splits.test_x)
    assert refit.checksum == synthetic_splits.checksum


def test_population_bound_is_below_every_measured_epoch(quick_run):
    """The matmul floor counts a subset of a population step's work, so a real epoch is slower
    and the reachable ratio is above the measured one; the summary says the bound."""
    _, out = quick_run
    table = read(out, "population")
    assert (table.matmul_floor_epoch_s < table.population_epoch_s).all()
    assert (table.reachable_ratio > table.ratio).all()
    report = (out / "report.md").read_text()
    assert re.search(r"at most \d+\.\d\dx with the matmuls alone", report)


def test_contention_reports_every_pipeline_quiet_and_busy(quick_run):
    _, out = quick_run
    runs = read(out, "contention_runs")
    assert set(runs.condition) == {"quiet", "busy"}
    assert (runs.train_seconds > 0).all()
    summary = read(out, "contention")
    assert (summary.slowdown > 0).all() and summary.slowdown.map(math.isfinite).all()


def test_choose_prefers_validation_then_fewer_epochs_then_smaller_lr():
    from benchmarks.accuracy_ceiling import choose

    grid = pd.DataFrame(
        {
            "epochs": [40, 10, 10, 10],
            "lr": [0.1, 0.3, 0.1, 1.0],
            "weight_decay": [0.0, 0.0, 0.0, 0.0],
            "diverged": [False, False, False, True],
            "final_val_accuracy": [0.92, 0.92, 0.92, math.nan],
        }
    )
    chosen = choose(grid)
    assert (chosen.epochs, chosen.lr) == (10, 0.1)


def test_accuracy_ceiling_without_scikit_learn_says_so(monkeypatch):
    import builtins

    from benchmarks import sklearn_reference

    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    reason = sklearn_reference.sklearn_grid(None, None)
    assert isinstance(reason, str) and "scikit-learn is not installed" in reason


def run_quick(real_mnist_root: Path, tmp_path: Path, section: str) -> Path:
    """Run one real-MNIST section in quick mode into a results folder (tests/test_bench_*.py:
    one module per section, so pytest-xdist's --dist loadscope runs them side by side)."""
    out = tmp_path / "results"
    argv = ["--quick", "--data-root", str(real_mnist_root), "--out", str(out),
            "--sections", section]  # fmt: skip
    assert main(argv) == 0
    return out
