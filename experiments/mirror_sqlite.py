"""The MLflow mirror's SQLite file in WAL mode with synchronous=NORMAL.

    relax_durability(Path("mlflow.db"))   # before the first MlflowClient on it

MLflow opens SQLite in its default rollback-journal mode with synchronous=FULL: every commit
waits for two or three fsyncs, about 14 ms on this disk, and the mirror commits several times
per trial (create the run, log its batch, its input, end it): most of a short trial's
bookkeeping was that wait. WAL with synchronous=NORMAL commits in about 0.05 ms; an application
crash still loses nothing committed, and a power cut can lose only the last commits, never
corrupt the file. That trade is right for the mirror alone: everything in it is rebuilt from
Optuna's storage by reconcile. Optuna's own file (experiments.study) is set the same way.

Applied per connection by a SQLAlchemy pool listener (MLflow builds its engine itself), only to
the files registered here; a file another process holds in rollback mode keeps that mode (the
switch is retried on the next connection), and synchronous=NORMAL is per connection anyway.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.pool import Pool

_FILES: set[str] = set()
_DONE_KEY = "softmaxreg_mirror_pragmas"


def relax_durability(path: Path) -> None:
    """WAL and synchronous=NORMAL on every connection this process opens to `path`."""
    if not _FILES:
        event.listen(Pool, "checkout", _on_checkout)
    _FILES.add(str(Path(path).resolve()))


def _on_checkout(dbapi_connection, record, _proxy) -> None:
    # On checkout, not connect: connections pooled before the file was registered count too.
    if record.info.get(_DONE_KEY) or not isinstance(dbapi_connection, sqlite3.Connection):
        return
    record.info[_DONE_KEY] = True
    rows = dbapi_connection.execute("PRAGMA database_list").fetchall()
    if not any(row[1] == "main" and row[2] in _FILES for row in rows):
        return
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")
    try:
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError:  # locked by another process right now: next connection
        record.info[_DONE_KEY] = False
