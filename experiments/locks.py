"""A named lock held in a database itself: the arbiter of start-up and repair across workers.

    with store_lock(stores.optuna_url, "study:softmaxreg-mnist"):
        ...  # create the schema, the study and its parent run; or reconcile its runs

Who creates a store's schema, a study, its MLflow parent run or a missing child run is decided
by this lock, which the store guarantees across processes and machines, never by a search
followed by a create:

- SQLite (one host): an exclusive `flock` on a file beside the database, `<database>.lock`.
  Never on the database file itself: closing any descriptor of a database file drops every
  POSIX lock SQLite holds on it in this process, which corrupts concurrent writes.
- PostgreSQL: a session-level advisory lock (`pg_try_advisory_lock`) keyed by the name.
- MySQL/MariaDB: `GET_LOCK(name, timeout)`.

The operating system or the database releases the lock when its holder dies, kill -9 included,
so a crashed worker never leaves a study locked. Locks are held for milliseconds to seconds.
"""

from __future__ import annotations

import fcntl
import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy
from sqlalchemy.pool import NullPool

from experiments.stores import connect_args, display_url, is_server_uri, sqlite_file

LOCK_TIMEOUT_SECONDS = 300.0
POLL_SECONDS = 0.05


class LockTimeout(RuntimeError):
    """The lock was not free within the timeout (another worker holds it for too long)."""


@contextmanager
def store_lock(url: str, name: str, timeout: float = LOCK_TIMEOUT_SECONDS) -> Iterator[None]:
    """Hold the lock `name` in the database behind `url` (a no-op for an MLflow server, which
    serialises its own schema and writes)."""
    if is_server_uri(url):
        yield
        return
    path = sqlite_file(url)
    if path is not None:
        with _file_lock(path, timeout, url):
            yield
        return
    with _database_lock(url, name, timeout):
        yield


def lock_file(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


@contextmanager
def _file_lock(database: Path, timeout: float, url: str) -> Iterator[None]:
    with lock_file(database).open("ab") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError as busy:
                if time.monotonic() > deadline:
                    message = f"{display_url(url)} stayed locked for {timeout:.0f} s"
                    raise LockTimeout(message) from busy
                time.sleep(POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _lock_key(name: str) -> int:
    """A stable signed 64-bit key for PostgreSQL's advisory locks."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def _database_lock(url: str, name: str, timeout: float) -> Iterator[None]:
    engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=connect_args(url))
    backend = engine.dialect.name
    try:
        with engine.connect() as connection:
            if backend == "postgresql":
                _acquire_postgres(connection, _lock_key(name), timeout, url)
                release = sqlalchemy.text("SELECT pg_advisory_unlock(:key)")
                params: dict[str, object] = {"key": _lock_key(name)}
            elif backend in ("mysql", "mariadb"):
                got = connection.execute(
                    sqlalchemy.text("SELECT GET_LOCK(:name, :timeout)"),
                    {"name": name[:64], "timeout": int(timeout)},
                ).scalar()
                if got != 1:
                    raise LockTimeout(f"{display_url(url)}: lock {name!r} not free in {timeout} s")
                release = sqlalchemy.text("SELECT RELEASE_LOCK(:name)")
                params = {"name": name[:64]}
            else:  # no lock primitive known: serialise nothing rather than refuse to run
                yield
                return
            try:
                yield
            finally:
                connection.execute(release, params)
                connection.commit()
    finally:
        engine.dispose()


def _acquire_postgres(connection, key: int, timeout: float, url: str) -> None:
    deadline = time.monotonic() + timeout
    query = sqlalchemy.text("SELECT pg_try_advisory_lock(:key)")
    while not connection.execute(query, {"key": key}).scalar():
        connection.commit()
        if time.monotonic() > deadline:
            raise LockTimeout(f"{display_url(url)}: advisory lock {key} not free in {timeout} s")
        time.sleep(POLL_SECONDS)
    connection.commit()
