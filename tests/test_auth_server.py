"""A real `mlflow server --app-name basic-auth` with host checks, run as the README's multi-machine
section runs it, and the Optuna storage on PostgreSQL with a password in its URL.

Without a login, or with a wrong password, the sweep, reconcile and export exit 2 with one line
naming the server and the variables to set, before any study, trial or run exists. With the
workers' login (a user of their own, from the environment) the sweep runs and its runs are in
MLflow; then no password is in any output, tag, param, registered model, artifact, Optuna record
or exported file.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy
from mlflow import MlflowClient
from sqlalchemy.pool import NullPool

from experiments.export import main as export_main
from experiments.reconcile import main as reconcile_main
from experiments.stores import ServerRefused, check_tracking_uri, display_url
from experiments.sweep import main as sweep_main
from softmaxreg.data import DATA_ENV_VAR
from tests.services import basic_auth_server, copy_mlflow_db, postgres_database

REPO_ROOT = Path(__file__).resolve().parent.parent
PROCESS_TIMEOUT = 300
ADMIN_PASSWORD = "admin-Zebrafinch-4412-qX"
WORKER_USER = "sweeper"
WORKER_PASSWORD = "worker-Narwhal-9051-kP"
POSTGRES_PASSWORD = "pg-Axolotl-3377-vB"
READER_PASSWORD = "reader-Quokka-6120-mZ"
WORDS = ("zebrafinch", "narwhal", "axolotl", "quokka")
"""Each password's distinctive word: found however a password was quoted, cut or escaped."""
LOGIN_VARIABLES = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


def assert_no_secret(text: str, where: str) -> None:
    lowered = text.lower()
    found = [word for word in WORDS if word in lowered]
    basic = base64.b64encode(f"{WORKER_USER}:{WORKER_PASSWORD}".encode()).decode()
    assert not found and basic not in text, f"password word {found} in {where}"


def run_cli(module: str, argv: list[str], cwd: Path, login: tuple[str, str] | None):
    """`python -m module argv` with the given MLflow login in its environment (or none)."""
    env = {k: v for k, v in os.environ.items() if k not in (DATA_ENV_VAR, *LOGIN_VARIABLES)}
    env["PYTHONPATH"] = str(REPO_ROOT)
    if login is not None:
        env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"] = login
    process = subprocess.run(
        [sys.executable, "-m", module, *argv], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=PROCESS_TIMEOUT,
    )  # fmt: skip
    return process.returncode, process.stdout, process.stderr


def admin_request(url: str, body: dict | None = None, host: str | None = None) -> dict:
    """One REST call as the server's admin (POST with a JSON body, else GET)."""
    login = base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()
    headers = {"Authorization": f"Basic {login}", "Content-Type": "application/json"}
    if host is not None:
        headers["Host"] = host
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def database_text(url: str, only: str | None = None) -> str:
    """Every row of every table of a PostgreSQL database (or of table `only`), as text."""
    engine = sqlalchemy.create_engine(
        url.replace("postgresql://", "postgresql+psycopg://"), poolclass=NullPool
    )
    query = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    with engine.connect() as connection:
        tables = connection.execute(sqlalchemy.text(query)).scalars().all()
        rows = {
            t: connection.execute(sqlalchemy.text(f'SELECT * FROM "{t}"')).all()
            for t in tables
            if only in (None, t)
        }
    engine.dispose()
    return repr(rows)


def assert_refused_in_one_line(code: int, out: str, err: str, server_url: str, says: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert out == "" and len(lines) == 1, err
    assert server_url in lines[0] and says in lines[0], lines[0]
    assert_no_secret(err, "the refusal")


@pytest.fixture
def auth_server(tmp_path, tmp_path_factory):
    """The server on its own SQLite store, with a user for the workers; stopped afterwards."""
    folder = tmp_path / "server"
    folder.mkdir()
    copy_mlflow_db(tmp_path_factory, folder / "mlflow.db")
    with basic_auth_server(f"sqlite:///{folder / 'mlflow.db'}", folder, ADMIN_PASSWORD) as server:
        admin_request(
            f"{server.url}/api/2.0/mlflow/users/create",
            {"username": WORKER_USER, "password": WORKER_PASSWORD},
        )
        yield server


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://sweeper:pw-Narwhal@10.0.0.5:5000", "http://sweeper:***@10.0.0.5:5000"),
        ("https://sweeper:a/b@c-Narwhal@mlflow.lab", "https://sweeper:***@mlflow.lab"),
        ("http://10.0.0.5:5000", "http://10.0.0.5:5000"),
        (
            "postgresql://postgres:pg-Axolotl@db:5432/optuna",
            "postgresql://postgres:***@db:5432/optuna",
        ),
        ("postgresql+psycopg://u:pg-Axolotl@db/optuna", "postgresql+psycopg://u:***@db/optuna"),
        ("sqlite:///optuna.db", "sqlite:///optuna.db"),
    ],
)
def test_urls_are_shown_without_their_password(url, shown):
    assert display_url(url) == shown


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tracking-uri", f"http://{WORKER_USER}:{WORKER_PASSWORD}@127.0.0.1:5000"],
         f"--tracking-uri 'http://{WORKER_USER}:***@127.0.0.1:5000' is invalid: a login in"),
        (["--tracking-uri", f"http://{WORKER_USER}@127.0.0.1:5000"],
         "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in the environment"),
        (["--storage", f"postgresql://postgres:{POSTGRES_PASSWORD}@/optuna"],
         "--storage 'postgresql://postgres:***@/optuna' is invalid"),
    ],
)  # fmt: skip
def test_a_login_in_a_flag_is_refused_without_showing_it(
    argv, message, tmp_path, monkeypatch, capsys
):
    """Credentials for the tracking server come from the environment only: one in the URL is
    refused before anything is created, and no message shows a password."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        sweep_main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err, err
    assert_no_secret(err, "the message")
    assert list(tmp_path.iterdir()) == []


# Real processes each import torch, MLflow and Optuna and load MNIST (1,000 training examples).
@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_sweep_needs_the_servers_login_and_records_no_password(
    auth_server, real_mnist_root, tmp_path, monkeypatch, capsys
):
    work = tmp_path / "work"
    work.mkdir()
    url = auth_server.url
    with postgres_database("optuna") as plain_url:
        storage = plain_url.replace("postgres@", f"postgres:{POSTGRES_PASSWORD}@")
        stores = ["--storage", storage, "--tracking-uri", url]
        sweep = ["--study-name", "guarded", "--n-trials", "2", "--epochs", "1",
                 "--batch-sizes", "32", "128", "--lr-range", "0.05", "1", "--pruner", "none",
                 "--val-size", "59000", "--data-root", str(real_mnist_root), "--device", "cpu",
                 "--quiet", "--no-refit", "--workers", "1", *stores]  # fmt: skip
        # One process, so a refusal is one line (forked workers would each print theirs).
        outputs = []

        # No login (the real command), then a wrong password: one line, exit 2, nothing created.
        code, out, err = run_cli("experiments.sweep", sweep, work, None)
        assert_refused_in_one_line(code, out, err, url, f"set {' and '.join(LOGIN_VARIABLES[:2])}")
        outputs += [out, err]
        monkeypatch.chdir(work)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", WORKER_USER)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-" + WORKER_PASSWORD)
        code = sweep_main(sweep)
        captured = capsys.readouterr()
        says = f"user '{WORKER_USER}' (HTTP 401: wrong user name or password)"
        assert_refused_in_one_line(code, captured.out, captured.err, url, says)
        assert database_text(plain_url) == "{}"  # not even Optuna's schema
        assert list(work.iterdir()) == []
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
        admin = MlflowClient(url, registry_uri=url)  # not whatever registry the process has
        assert admin.get_experiment_by_name("guarded") is None

        # The host check: a Host header the server was not told to allow is refused, by the
        # server and by our start-up check (which names the flag to fix).
        with pytest.raises(urllib.error.HTTPError) as refused:
            admin_request(f"{url}/api/2.0/mlflow/experiments/search", host="evil.example")
        assert refused.value.code == 403
        with pytest.raises(ServerRefused, match="--allowed-hosts"):
            check_tracking_uri(f"http://localhost:{auth_server.port}")

        # With the workers' login: the sweep runs, its runs are in MLflow.
        login = (WORKER_USER, WORKER_PASSWORD)
        code, out, err = run_cli("experiments.sweep", sweep, work, login)
        assert code == 0, err
        outputs += [out, err]
        experiment = admin.get_experiment_by_name("guarded")
        runs = admin.search_runs([experiment.experiment_id], max_results=100)
        roles = sorted(r.data.tags["softmaxreg.role"] for r in runs)
        assert roles == ["study", "trial", "trial"], roles
        assert {r.info.status for r in runs} == {"FINISHED"}
        (parent,) = [r for r in runs if r.data.tags["softmaxreg.role"] == "study"]
        assert ":***@127.0.0.1" in parent.data.tags["optuna.storage"]  # shown without it

        # Another user may read the experiment but not write to it: its worker stops at once,
        # in one line, and adds no trial.
        admin_request(
            f"{url}/api/2.0/mlflow/users/create",
            {"username": "reader", "password": READER_PASSWORD},
        )
        code, out, err = run_cli("experiments.sweep", sweep, work, ("reader", READER_PASSWORD))
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert "refused the request" in err and "403" in err, err
        assert database_text(plain_url, "trials").count("COMPLETE") == 2  # the same 2 trials
        outputs += [out, err]

        # Reconcile and export: refused in one line without a valid login, fine with it.
        for main in (reconcile_main, export_main):
            extra = ["--out", str(work / "export.csv")] if main is export_main else []
            for user, password in (("", ""), (WORKER_USER, "not-" + WORKER_PASSWORD)):
                monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
                monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
                code = main(["--study-name", "guarded", *stores, *extra])
                captured = capsys.readouterr()
                assert_refused_in_one_line(code, captured.out, captured.err, url, "HTTP 401")
        assert not (work / "export.csv").exists()
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", WORKER_USER)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", WORKER_PASSWORD)
        assert reconcile_main(["--study-name", "guarded", *stores]) == 0
        out = ["--out", str(work / "export.csv")]
        assert export_main(["--study-name", "guarded", *stores, *out]) == 0
        captured = capsys.readouterr()
        assert "0 runs repaired" in captured.out
        outputs += [captured.out, captured.err]
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)

        # No password anywhere: outputs, runs, models, artifacts, Optuna, the export.
        for number, text in enumerate(outputs):
            assert_no_secret(text, f"output {number}")
        for run in runs:
            assert_no_secret(repr((run.data.tags, run.data.params, run.info)), run.info.run_name)
        assert_no_secret(repr(experiment), "the experiment")
        models = admin.search_registered_models()
        assert [m.name for m in models] == ["guarded-best"]
        versions = admin.search_model_versions("name = 'guarded-best'")
        assert_no_secret(repr((models, versions)), "the registered model")
        artifacts = sorted((auth_server.folder / "mlartifacts").rglob("*"))
        assert any(path.name == "trials.csv" for path in artifacts)
        for path in (p for p in artifacts if p.is_file()):
            assert_no_secret(path.read_bytes().decode("latin-1"), str(path))
        # MLflow's whole store and Optuna's whole database, every table and row.
        assert_no_secret((auth_server.folder / "mlflow.db").read_bytes().decode("latin-1"),
                         "mlflow.db")  # fmt: skip
        optuna_rows = database_text(plain_url)
        assert "best_val_accuracy" in optuna_rows and "fixed_settings" in optuna_rows
        assert_no_secret(optuna_rows, "the Optuna database")
        exported = sorted(work.glob("export*"))
        assert len(exported) == 3  # the trials CSV, the best-per-batch-size CSV and Markdown
        for path in exported:
            assert_no_secret(path.read_text(), str(path))
