"""Real services for the tests: an `mlflow server` process, PostgreSQL databases, free ports.

with MlflowServer(f"sqlite:///{folder / 'mlflow.db'}", folder) as server:
    server.url          # http://127.0.0.1:<port>
    server.stop(); server.start()   # an outage, then the same server back on the same port
with basic_auth_server(backend_uri, folder, admin_password) as server:   # logins, host checks
with postgres_database("optuna") as url:   # a new database, dropped afterwards
    ...
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from mlflow import MlflowClient

MLFLOW = Path(sys.executable).parent / "mlflow"
STARTUP_SECONDS = 120  # a cold start imports MLflow's server stack; bounded so CI cannot hang
POSTGRES_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def initialised_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite database with its schema created once per session (migrations take
    seconds); tests copy it instead of migrating a new one each time."""
    template = tmp_path_factory.getbasetemp() / "mlflow-template" / "mlflow.db"
    if not template.exists():
        template.parent.mkdir(exist_ok=True)
        MlflowClient(f"sqlite:///{template}").search_experiments()
    return template


def copy_mlflow_db(tmp_path_factory: pytest.TempPathFactory, destination: Path) -> Path:
    shutil.copyfile(initialised_mlflow_db(tmp_path_factory), destination)
    return destination


def server_environment() -> dict[str, str]:
    """The tests' environment, less MLflow's job runner: by default `mlflow server` also starts
    a huey job consumer and its periodic tasks (several processes on two cores) that serve
    GenAI jobs no test uses."""
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


class MlflowServer:
    """`mlflow server` on 127.0.0.1 with the given backend store; stopped by its process group."""

    def __init__(
        self,
        backend_uri: str,
        folder: Path,
        *,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.backend_uri = backend_uri
        self.folder = folder
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.process: subprocess.Popen | None = None
        self.started = False

    def start(self) -> None:
        """Start the server and wait until it answers. A first start whose port was taken in
        the meantime (`free_port` only found it free; tests run in parallel pytest workers)
        moves to another port; a restart keeps its port, as a server back from an outage does."""
        for _ in range(3):
            if self._launch():
                self.started = True
                return
            log = (self.folder / "server.log").read_text()
            if self.started or "already in use" not in log:
                pytest.fail(f"mlflow server exited:\n{log}")
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
        pytest.fail(f"mlflow server found no free port:\n{log}")

    def _launch(self) -> bool:
        """True once healthy, False if the process exited first."""
        log = (self.folder / "server.log").open("a")
        self.process = subprocess.Popen(
            [str(MLFLOW), "server", "--backend-store-uri", self.backend_uri,
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             *self.extra_args],
            cwd=self.folder,  # artifacts it serves go to ./mlartifacts here
            env={**server_environment(), **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so its workers stop with it
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + STARTUP_SECONDS
        while not self.healthy():
            if self.process.poll() is not None:
                return False
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not healthy after {STARTUP_SECONDS} s")
            time.sleep(0.5)
        return True

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=20)

    def __enter__(self) -> MlflowServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


AUTH_CONFIG = """[mlflow]
default_permission = READ
database_uri = sqlite:///{database}
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
"""
"""The README's auth.ini, its users' database in the server's folder."""


def basic_auth_server(backend_uri: str, folder: Path, admin_password: str) -> MlflowServer:
    """`mlflow server --app-name basic-auth` set up as the README's multi-machine section does:
    the auth config from a file, the admin's password and Flask's secret key from the
    environment (never a flag), Host headers and CORS origins limited to its own address."""
    config = folder / "auth.ini"
    config.write_text(AUTH_CONFIG.format(database=folder / "basic_auth.db"))
    port = free_port()
    return MlflowServer(
        backend_uri,
        folder,
        port=port,
        extra_args=("--app-name", "basic-auth", "--allowed-hosts", f"127.0.0.1:{port}",
                    "--cors-allowed-origins", f"http://127.0.0.1:{port}"),
        env={
            "MLFLOW_AUTH_CONFIG_PATH": str(config),
            "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex,
        },
    )  # fmt: skip


def postgres_reachable() -> str | None:
    """None if the local PostgreSQL accepts connections, else why not."""
    try:
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        engine = sqlalchemy.create_engine(POSTGRES_ADMIN, poolclass=NullPool)
        with engine.connect():
            pass
        engine.dispose()
    except Exception as error:  # driver missing, server down: the test is skipped, saying why
        return f"PostgreSQL at 127.0.0.1:5432 not usable: {error}"
    return None


@contextmanager
def postgres_database(prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database (plain postgresql:// URL), dropped afterwards."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    reason = postgres_reachable()
    if reason is not None:
        pytest.skip(reason)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(
        POSTGRES_ADMIN, poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def sqlite_rows(database: Path, query: str, *args) -> list[tuple]:
    """Rows of a read-only query on a SQLite file a running sweep writes to ([] until the file
    and its tables exist). Plain SQL: a second Optuna storage would race the sweep's schema."""
    try:
        with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            return db.execute(query, args).fetchall()
    except sqlite3.Error:
        return []


def recorded_epochs(database: Path, trial_number: int) -> int:
    """Epochs a sweep has stored so far on one trial of the only study in `database`."""
    rows = sqlite_rows(
        database,
        "SELECT a.value_json FROM trials t JOIN trial_user_attributes a "
        "ON a.trial_id = t.trial_id WHERE t.number = ? AND a.key = 'epochs'",
        trial_number,
    )
    return len(json.loads(rows[0][0]).get("step", [])) if rows else 0


def trial_states(database: Path) -> list[str]:
    return [row[0] for row in sqlite_rows(database, "SELECT state FROM trials ORDER BY number")]


def wait_for(condition, what: str, timeout: float = 120.0, every: float = 0.05) -> None:
    """Poll `condition()` until true: tests wait on events, never on a guess of how long."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def assert_sweep_refuses(argv: list[str], message: str, folder: Path, capsys) -> None:
    """`python -m experiments.sweep argv`, run in `folder`, exits 2 saying `message` on stderr
    and creates nothing there (no store, no data folder)."""
    from experiments.sweep import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert list(folder.iterdir()) == []
