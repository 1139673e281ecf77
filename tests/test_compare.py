"""benchmarks.compare: the verdict rule on recorded rounds, and reading both kinds of side.

Rounds are written the way the suite writes them (`write_rounds`, `write_environment`) and logged
to a real MLflow SQLite store by the suite's own recorder; no timing is measured here.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.common import SectionResult
from benchmarks.compare import (
    Band,
    Side,
    compare,
    main,
    order_statistic,
    regressions,
)
from benchmarks.compare_report import environment_warnings
from benchmarks.recording import BenchmarkRecorder
from benchmarks.report import write_environment, write_rounds

ENVIRONMENT = {
    "git_commit": "abc",
    "profile": "standard",
    "cpu_model": "AMD EPYC",
    "cpu_count": 2,
    "usable_cpus": 2,
    "device": "cpu",
    "device_name": "AMD EPYC",
    "torch_version": "2.14.1",
    "torch_threads": 2,
    "sections": {"scaling": {"seconds": 30.0, "load_average_start": 0.5, "load_average_end": 0.7}},
}
STEADY = [1.00, 1.03, 0.98, 1.01, 0.99]


def side(figures: dict[str, tuple[list[float], str, str]], env: dict | None = None) -> Side:
    """A side from {figure: (rounds, kind, better)}, all in section `scaling`."""
    rows = [
        ("scaling", figure, kind, better, "s", number, value)
        for figure, (values, kind, better) in figures.items()
        for number, value in enumerate(values, start=1)
    ]
    columns = ["section", "figure", "kind", "better", "unit", "round", "value"]
    return Side("test", pd.DataFrame(rows, columns=columns), env or ENVIRONMENT)


def judged(base: list[float], new: list[float], kind="timed", better="lower") -> str:
    table = compare(side({"f": (base, kind, better)}), side({"f": (new, kind, better)}), 0.10)
    return table.set_index("figure").verdict["f"]


def test_a_clear_regression_is_slower():
    assert judged(STEADY, [1.50, 1.55, 1.48, 1.52, 1.49]) == "slower"


def test_a_clear_gain_is_faster():
    assert judged(STEADY, [0.60, 0.62, 0.59, 0.61, 0.63]) == "faster"


def test_overlapping_noise_is_unchanged_even_with_a_large_median_move():
    # The medians differ by 30 %, but one slow round of the base reaches the new run's band.
    assert judged([1.00, 1.02, 0.99, 1.40], [1.30, 1.32, 1.29, 1.35]) == "unchanged"


def test_disjoint_bands_within_the_threshold_are_unchanged():
    assert judged(STEADY, [1.06, 1.07, 1.06, 1.08, 1.07]) == "unchanged"


def test_higher_is_better_figures_are_judged_the_other_way():
    rate = [100.0, 101.0, 99.0]
    assert judged(rate, [60.0, 61.0, 59.0], better="higher") == "slower"
    assert judged(rate, [160.0, 161.0, 159.0], better="higher") == "faster"


def test_accuracy_is_judged_against_its_seed_spread_without_a_threshold():
    base = [0.925, 0.926, 0.924]
    assert judged(base, [0.918, 0.917, 0.919], "accuracy", "higher") == "worse"
    assert judged(base, [0.9265, 0.9270, 0.9268], "accuracy", "higher") == "better"
    assert judged(base, [0.9255, 0.9262, 0.924], "accuracy", "higher") == "unchanged"


def test_a_single_round_has_no_band_and_no_verdict():
    assert judged([1.0], [2.0]) == "no band"


def test_a_figure_of_one_run_only_is_listed():
    table = compare(
        side({"a": (STEADY, "timed", "lower")}), side({"b": (STEADY, "timed", "lower")}), 0.1
    )
    assert dict(zip(table.figure, table.verdict, strict=True)) == {
        "a": "only in base",
        "b": "only in new",
    }


def test_band_is_the_range_up_to_five_rounds_then_tightens():
    assert order_statistic(3) == 1 and order_statistic(8) == 1
    assert order_statistic(9) == 2  # [x(2), x(8)] covers the median with 1 - 2 * 10/512 > 0.95
    band = Band.of([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (band.median, band.low, band.high, band.n) == (3.0, 1.0, 5.0, 5)
    wide = Band.of([float(v) for v in range(1, 21)])
    coverage = 1 - 2 * sum(math.comb(20, i) for i in range(order_statistic(20))) / 2**20
    assert coverage >= 0.95 and wide.low > 1.0 and wide.high < 20.0


def test_regressions_keep_slower_timed_figures_beyond_the_percentage():
    base = side({"x": (STEADY, "timed", "lower"), "y": (STEADY, "timed", "lower")})
    new = side(
        {"x": ([1.5, 1.5, 1.5], "timed", "lower"), "y": ([1.15, 1.16, 1.15], "timed", "lower")}
    )
    table = compare(base, new, 0.10)
    assert list(table.verdict) == ["slower", "slower"]
    assert list(regressions(table, 20).figure) == ["x"]
    assert list(regressions(table, 10).figure) == ["x", "y"]


def test_environment_warnings_name_what_makes_timings_meaningless():
    other = ENVIRONMENT | {"torch_threads": 1, "usable_cpus": 1, "git_commit": "def"}
    busy = ENVIRONMENT | {
        "sections": {"scaling": {"seconds": 1, "load_average_start": 5, "load_average_end": 4}}
    }
    warnings = " ".join(environment_warnings(ENVIRONMENT, other))
    assert "torch_threads" in warnings and "usable_cpus" in warnings
    assert "git_commit" not in warnings  # a different commit is the point of comparing
    assert environment_warnings(ENVIRONMENT, ENVIRONMENT) == []
    assert "NEW ran with a load average above its 2 CPUs in scaling" in " ".join(
        environment_warnings(ENVIRONMENT, busy)
    )


def recorded(folder: Path, values: list[float]) -> SectionResult:
    """A section's rounds written as the suite writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    result = SectionResult(key="scaling", title="Scaling")
    result.add_rounds("steady epoch, cpu, 2 thread(s), bs 1024", values)
    result.add_rounds(
        "logits: test accuracy", [0.92, 0.921, 0.919], kind="accuracy", better="higher", unit=""
    )
    write_rounds(folder, [result])
    write_environment(folder, ENVIRONMENT)
    return result


@pytest.fixture
def mlflow_run(tmp_path) -> tuple[str, str]:
    """A suite run in a real MLflow SQLite store, its folder logged by the suite's recorder."""
    folder = tmp_path / "slow"
    recorded(folder, [1.5, 1.52, 1.49])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    recorder = BenchmarkRecorder(uri, (tmp_path / "artifacts").as_uri())
    run_id = recorder.open_suite("suite-test", tags={"benchmark": "suite"}, params={})
    recorder.close_suite({}, folder, status="FINISHED")
    return run_id, uri


def test_a_folder_against_an_mlflow_run_flags_the_regression(tmp_path, mlflow_run, capsys):
    run_id, uri = mlflow_run
    base = tmp_path / "base"
    recorded(base, STEADY)
    out = tmp_path / "cmp"
    code = main([str(base), run_id, "--tracking-uri", uri, "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0  # no --fail-on-regression: report only
    row = next(line for line in text.splitlines() if "bs 1024" in line)
    assert "**slower**" in row and "1.5" in row
    assert "logits: test accuracy" in text and f"run {run_id}" in text
    assert (out / "comparison.md").read_text(encoding="utf-8").strip() == text.strip()
    assert (out / "comparison.png").stat().st_size > 0


def test_fail_on_regression_exits_1_on_a_regression_and_0_without(tmp_path, mlflow_run, capsys):
    run_id, uri = mlflow_run
    base = tmp_path / "base"
    recorded(base, STEADY)
    assert main([str(base), run_id, "--tracking-uri", uri, "--fail-on-regression"]) == 1
    assert "slower beyond noise and 10%" in capsys.readouterr().err
    assert main([str(base), run_id, "--tracking-uri", uri, "--fail-on-regression", "60"]) == 0
    assert main([str(base), str(base), "--fail-on-regression"]) == 0


def test_a_side_that_cannot_be_read_exits_2_naming_it(tmp_path, mlflow_run, capsys):
    _, uri = mlflow_run
    base = tmp_path / "base"
    recorded(base, STEADY)
    assert main([str(tmp_path / "missing"), str(base)]) == 2
    assert "BASE" in capsys.readouterr().err
    assert main([str(base), "0" * 32, "--tracking-uri", uri]) == 2
    assert "NEW 0000" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(base), str(tmp_path / "empty")]) == 2
    assert "no rounds.csv or environment.json" in capsys.readouterr().err
