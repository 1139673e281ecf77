"""MLflow's UI in a real browser: what a user following the README sees of a small sweep.

Debian's Chromium and chromedriver (`.ci/run` installs them) driven by Selenium, against a real
`mlflow server` on 127.0.0.1 holding a 3-trial sweep: the runs table with the best model, the
Compare view of the finished trials, a child run's curve and the parent's plots. Screenshots go
to the test's folder, and to `$SOFTMAXREG_SCREENSHOTS` when set (how docs/ was made). Skipped,
saying why, only where no browser is installed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from experiments.config import SweepConfig
from experiments.model_registry import registered_model_name
from experiments.worker import run_sweep
from softmaxreg.config import DataConfig, TrainConfig
from tests.services import MlflowServer, copy_mlflow_db

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1600,1000")  # fmt: skip
EPOCHS, TRIALS = 3, 3
PAGE_SECONDS = 60  # the first page compiles MLflow's bundle on a busy 2-core machine

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium missing: pip install -e .[dev]"
)
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        f"no browser: {CHROMIUM} or {CHROMEDRIVER} missing (apt-get install chromium "
        "chromium-driver; .ci/run does)",
        allow_module_level=True,
    )
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def served_sweep(tmp_path_factory, synthetic_splits):
    """A finished 3-trial sweep tracked through a real `mlflow server`."""
    folder = tmp_path_factory.mktemp("browser")
    copy_mlflow_db(tmp_path_factory, folder / "mlflow.db")
    with MlflowServer(f"sqlite:///{folder / 'mlflow.db'}", folder) as server:
        config = SweepConfig(
            study_name="browser-study", n_trials=TRIALS, batch_sizes=(32, 128),
            lr_range=(0.05, 1.0), quiet=True, storage=f"sqlite:///{folder / 'optuna.db'}",
            tracking_uri=server.url,
            population=2,  # passes of 2 and 1: runs that differ in both batch size and lr
        )  # fmt: skip
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(folder)
            outcome = run_sweep(config, TrainConfig(epochs=EPOCHS, device="cpu"), DataConfig(),
                                synthetic_splits, log=lambda _: None)  # fmt: skip
        yield server.url, outcome


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def shoot(driver, tmp_path: Path, name: str) -> None:
    driver.save_screenshot(str(tmp_path / name))
    if os.environ.get("SOFTMAXREG_SCREENSHOTS"):
        shutil.copy(tmp_path / name, Path(os.environ["SOFTMAXREG_SCREENSHOTS"]) / name)


def page_text(driver) -> str:
    return driver.find_element(By.TAG_NAME, "body").text


def wait_for_text(driver, *texts: str) -> str:
    WebDriverWait(driver, PAGE_SECONDS, 0.5).until(
        lambda d: all(text in page_text(d) for text in texts),
        f"never showed {texts}",
    )
    return page_text(driver)


# Plotly keeps each chart's data on its element: the points a user sees, readable as JSON.
SCROLL_DOWN = """
document.querySelectorAll('main *').forEach(node => {
  if (node.scrollHeight > node.clientHeight + 50) node.scrollTop += 300;
});
"""
CHART_POINTS = """
const title = plot => {
  for (let node = plot; node; node = node.parentElement) {
    const first = (node.innerText || '').split('\\n')[0].trim();
    if (first && isNaN(Number(first.replace('\u2212', '-')))) return first;
  }
  return '';
};
return Array.from(document.querySelectorAll('.js-plotly-plot')).map(plot => ({
  title: title(plot), traces: (plot.data || []).map(trace => (trace.x || []).length),
}));
"""


# Plotly keeps a chart's traces on its element: the Compare view's plots, readable as JSON.
PLOT_TRACES = """
return Array.from(document.querySelectorAll('.js-plotly-plot')).flatMap(plot =>
  (plot.data || []).map(trace => ({
    type: trace.type,
    dimensions: (trace.dimensions || []).map(d => d.label),
    colour: Array.from((trace.line || {}).color || []),
    x: Array.from(trace.x || []), y: Array.from(trace.y || []), z: Array.from(trace.z || []),
  })));
"""
# The byte size of every loaded image on the page (the artifact viewer shows blob: URLs).
SHOWN_IMAGE_BYTES = """
const done = arguments[arguments.length - 1];
const images = Array.from(document.images).filter(i => i.complete && i.naturalWidth > 400);
Promise.all(images.map(i => fetch(i.src).then(r => r.blob()).then(b => b.size)))
  .then(done, () => done([]));
"""
# The parent, one run per trial, and the refit of the best trial (which holds the model).
RUNS = TRIALS + 2
UNFOLD = (By.CSS_SELECTOR, "button[data-component-id*='runnamecellrenderer']")
MODELS_CELL = "[row-id='{}'] [col-id='attributes.`Models`']"
ASSISTANT_CLOSE = "button[data-component-id='mlflow.assistant.chat_panel.close']"


def open_runs_table(driver, experiment: str, runs: int) -> None:
    """The README's URL, then the parent's row unfolded to show its child runs."""
    driver.get(f"{experiment}/runs?workflowType=machine_learning")
    text = wait_for_text(driver, "browser-study", f"{runs} matching runs")
    assert "Usage" not in text and "Token Usage" not in text  # the runs, not GenAI's overview
    # The table renders after the run count: wait for the button rather than race the page.
    WebDriverWait(driver, PAGE_SECONDS, 0.5).until(
        expected_conditions.element_to_be_clickable(UNFOLD)
    ).click()
    # MLflow's assistant panel covers a third of the page (the Models column) in screenshots.
    for close in driver.find_elements(By.CSS_SELECTOR, ASSISTANT_CLOSE):
        close.click()


def plot_trace(driver, kind: str) -> dict:
    """The first Plotly trace of `kind` once it is drawn with data."""
    WebDriverWait(driver, PAGE_SECONDS, 0.5).until(
        lambda d: any(t["type"] == kind and (t["dimensions"] or t["x"])
                      for t in d.execute_script(PLOT_TRACES)),
        f"no {kind} plot drawn",
    )  # fmt: skip
    return next(t for t in driver.execute_script(PLOT_TRACES) if t["type"] == kind)


def choose(driver, selector_id: str, option: str) -> None:
    """Pick `option` in one of MLflow's drop-down selectors."""
    driver.find_element(By.ID, selector_id).click()
    WebDriverWait(driver, PAGE_SECONDS, 0.5).until(
        expected_conditions.element_to_be_clickable(
            (By.XPATH, f"//*[@role='option'][normalize-space()='{option}']")
        )
    ).click()


def test_the_runs_table_shows_each_trial_and_the_best_trials_model(served_sweep, browser, tmp_path):
    url, outcome = served_sweep
    children = outcome.trials
    open_runs_table(browser, f"{url}/#/experiments/{outcome.experiment_id}", RUNS)
    columns = zip(children["trial_number"], children["batch_size"], children["lr"], strict=True)
    wait_for_text(browser, *(f"trial-{n} bs{b} lr{lr:.3g}" for n, b, lr in columns))

    # The registered model's run (the refit's) shows it, name and version, in the Models
    # column; no trial's run does.
    name = registered_model_name("browser-study")
    (version,) = MlflowClient(url).search_model_versions(f"name = '{name}'")
    best_cell = (By.CSS_SELECTOR, MODELS_CELL.format(version.run_id))
    WebDriverWait(browser, PAGE_SECONDS, 0.5).until(
        expected_conditions.text_to_be_present_in_element(best_cell, name),
        f"the refit run never showed {name} in its Models column",
    )
    assert browser.find_element(*best_cell).text.split() == [name, "v1"]
    for run_id in children["mlflow_run_id"]:
        if run_id != version.run_id:
            assert browser.find_element(By.CSS_SELECTOR, MODELS_CELL.format(run_id)).text == "-"
    shoot(browser, tmp_path, "runs_table.png")


def test_compare_shows_the_finished_trials_by_the_search_and_the_objective(
    served_sweep, browser, tmp_path
):
    url, outcome = served_sweep
    finished = outcome.trials[outcome.trials["mlflow_status"] == "FINISHED"]
    assert finished["batch_size"].nunique() == 2, "the compared runs should differ in both params"
    open_runs_table(browser, f"{url}/#/experiments/{outcome.experiment_id}", RUNS)
    for run_id in finished["mlflow_run_id"]:  # README step 1: tick the FINISHED child runs
        tick = f"[row-id='{run_id}'] .ag-selection-checkbox .ag-checkbox-input-wrapper"
        WebDriverWait(browser, PAGE_SECONDS, 0.5).until(
            expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, tick))
        ).click()
        assert browser.find_element(By.CSS_SELECTOR, f"{tick} input").is_selected()
    WebDriverWait(browser, PAGE_SECONDS, 0.5).until(
        expected_conditions.element_to_be_clickable((By.XPATH, "//button[.='Compare']"))
    ).click()
    wait_for_text(browser, f"Comparing {len(finished)} Runs from 1 Experiment")
    assert all(run_id in browser.current_url for run_id in finished["mlflow_run_id"])

    # It opens on parallel coordinates of the swept params, coloured by the objective: the sweep
    # logs summary/best_val_accuracy as each run's first metric, which MLflow picks.
    lines = plot_trace(browser, "parcoords")
    assert lines["dimensions"] == [
        "batch_size", "log10_lr", "log2_batch_size", "summary/best_val_accuracy"
    ]  # fmt: skip
    assert sorted(lines["colour"]) == pytest.approx(sorted(finished["best_val_accuracy"]))
    shoot(browser, tmp_path, "compare_parallel_coordinates.png")

    # README step 2: the contour tab, with the search's axes and the objective as its colour.
    browser.find_element(By.XPATH, "//*[@role='tab'][.='Contour Plot']").click()
    choose(browser, "xaxis-selector", "log2_batch_size")
    choose(browser, "yaxis-selector", "log10_lr")
    choose(browser, "zaxis-selector", "summary/best_val_accuracy")
    contour = plot_trace(browser, "contour")
    expected = zip(np.log2(finished["batch_size"]), np.log10(finished["lr"]),
                   finished["best_val_accuracy"], strict=True)  # fmt: skip
    shown = sorted(zip(contour["x"], contour["y"], contour["z"], strict=True))
    assert len(shown) == len(finished)
    for point, wanted in zip(shown, sorted(expected), strict=True):
        assert point == pytest.approx(wanted, abs=1e-4)  # log10_lr is rounded to 4 places
    shoot(browser, tmp_path, "compare_contour.png")


def test_a_child_runs_figures_and_curve_and_the_parents_plots(served_sweep, browser, tmp_path):
    url, outcome = served_sweep
    experiment = f"{url}/#/experiments/{outcome.experiment_id}"
    children = outcome.trials

    # A child run: its batch size, lr and validation accuracy, and the per-epoch curve.
    best = children.loc[children["best_val_accuracy"].idxmax()]
    run_page = f"{experiment}/runs/{best['mlflow_run_id']}"
    browser.get(f"{run_page}?workflowType=machine_learning")
    text = wait_for_text(browser, "batch_size", "log10_lr", "summary/best_val_accuracy")
    assert str(int(best["batch_size"])) in text and f"{best['best_val_accuracy']:.4g}"[:5] in text
    shoot(browser, tmp_path, "child_run.png")
    browser.get(f"{run_page}/model-metrics?workflowType=machine_learning")
    wait_for_text(browser, "val_accuracy")
    deadline = time.monotonic() + PAGE_SECONDS
    while time.monotonic() < deadline:
        charts = browser.execute_script(CHART_POINTS)
        curve = [c for c in charts if c["title"] == "val_accuracy"]
        if curve and curve[0]["traces"]:
            break
        browser.execute_script(SCROLL_DOWN)  # charts are drawn only once scrolled into view
        time.sleep(0.5)
    assert curve and set(curve[0]["traces"]) == {EPOCHS}, charts  # a line and its markers
    shoot(browser, tmp_path, "child_metrics.png")

    # The parent's plots, each picked in the artifact tree as a user does (a new #/…/artifacts/X
    # URL in the same page keeps showing the previous file): the image shown is that file.
    sizes = {a.path: a.file_size for a in MlflowClient(url).list_artifacts(outcome.parent_run_id)}
    browser.get(
        f"{experiment}/runs/{outcome.parent_run_id}/artifacts?workflowType=machine_learning"
    )
    browser.set_script_timeout(PAGE_SECONDS)
    for plot in (
        "validation_curves.png",
        "best_lr_per_batch_size.png",
        "contour_lr_batch_size.png",
    ):
        WebDriverWait(browser, PAGE_SECONDS, 0.5).until(
            expected_conditions.element_to_be_clickable(
                (By.XPATH, f"//li[normalize-space()='{plot}']")
            )
        ).click()
        WebDriverWait(browser, PAGE_SECONDS, 0.5).until(
            lambda d, size=sizes[plot]: size in d.execute_async_script(SHOWN_IMAGE_BYTES),
            f"{plot} never shown",
        )
        shoot(browser, tmp_path, f"parent_{plot}")
