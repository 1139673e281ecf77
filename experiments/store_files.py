"""SQLite store files: refused when damaged or half-built, and created so a cut-off creation
leaves nothing.

    check_sqlite_integrity(path, "--storage sqlite:///optuna.db")   # raises StoreError
    check_mlflow_schema(path, "--tracking-uri sqlite:///mlflow.db")  # raises StoreError
    create_stores(stores)        # builds missing SQLite stores in a temporary file, then links

A store file cut short (a full disk, a copy interrupted) is found with SQLite's own
`PRAGMA quick_check` before any work, and named; it is never written to or replaced. MLflow
builds its schema in dozens of steps (migrations); cut off half-way, the file holds some tables
and an old revision, and every later start fails with `table ... already exists`. So a missing
SQLite store is built in a temporary file in the same folder and hard-linked into place only
once complete (`os.link` refuses to replace a file another worker linked first); a half-built
file left by older code is refused with how to recover.
"""

from __future__ import annotations

import functools
import os
import shutil
import sqlite3
import uuid
from contextlib import closing, suppress
from pathlib import Path

from experiments.common import say
from experiments.stores import StoreError, sqlite_file
from softmaxreg.data_cache import user_cache_root


def _read_only(path: Path) -> closing[sqlite3.Connection]:
    # mode=ro: checking never creates, changes or takes over the file.
    return closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60))


def check_sqlite_integrity(path: Path, named: str) -> None:
    """Raise `StoreError` naming `path` unless SQLite finds its file sound."""
    try:
        with _read_only(path) as connection:
            problems = [row[0] for row in connection.execute("PRAGMA quick_check(3)")]
    except sqlite3.DatabaseError as error:
        problems = [str(error)]
    if problems != ["ok"]:
        raise StoreError(
            f"{named}: {path} is damaged ({'; '.join(problems)}), e.g. cut short by a full "
            "disk or an interrupted copy; it is left untouched: restore it from a backup, or "
            "move it away to start afresh (an MLflow store can be rebuilt from Optuna's with "
            "python -m experiments.reconcile)"
        )


@functools.cache
def _mlflow_head_revision() -> str:
    """The schema revision this MLflow builds. Alembic finds it by importing every migration
    script (0.4-0.7 s a process here, paid by every sweep, reconcile and export on SQLite); it
    depends only on the installed MLflow, so it is kept in the machine's cache folder under
    MLflow's version and its migrations folder's mtime (a reinstall or an edit moves the key)."""
    import mlflow
    import mlflow.store.db_migrations as migrations

    versions = Path(migrations.__file__).parent / "versions"
    key = f"{mlflow.__version__}-{versions.stat().st_mtime_ns}"
    cached = user_cache_root() / f"mlflow-head-revision-{key}.txt"
    try:
        return cached.read_text().strip() or _remember_head_revision(cached)
    except OSError:
        return _remember_head_revision(cached)


def _remember_head_revision(cached: Path) -> str:
    from mlflow.store.db.utils import _get_latest_schema_revision

    revision = _get_latest_schema_revision()
    writing = cached.with_name(f".{cached.name}.{uuid.uuid4().hex[:8]}")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        writing.write_text(revision)
        os.replace(writing, cached)  # whole or absent: a reader never sees half a revision
    except OSError:  # a read-only cache folder: the revision is found again next time
        with suppress(OSError):
            writing.unlink(missing_ok=True)
    return revision


def check_mlflow_schema(path: Path, named: str) -> None:
    """Raise `StoreError` if the MLflow database at `path` has tables but not MLflow's schema."""
    with _read_only(path) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        revision = None
        if "alembic_version" in tables:
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
            revision = row[0] if row else None
    if not tables - {"alembic_version"}:
        return  # empty: MLflow builds its schema
    head = _mlflow_head_revision()
    if revision == head:
        return
    raise StoreError(
        f"{named}: {path} holds an incomplete MLflow schema (revision {revision or 'none'}, "
        f"this MLflow needs {head}): if its creation was cut off (a full disk, a kill), move it "
        "away and run again, then `python -m experiments.reconcile` rebuilds every run from "
        f"Optuna; if it comes from an older MLflow, upgrade it: mlflow db upgrade sqlite:///{path}"
    )


def _create_optuna_tables(url: str) -> None:
    import optuna

    optuna.storages.RDBStorage(url).engine.dispose()


def _build_optuna_schema(url: str) -> None:
    """Copy an empty Optuna schema made by this Optuna (and SQLAlchemy), built once per machine:
    creating it (tables, then Alembic's stamp) takes 0.5-0.9 s of a 1-trial sweep here."""
    import optuna
    import sqlalchemy

    versions = f"{optuna.__version__}-sqlalchemy-{sqlalchemy.__version__}"
    _copy_template(url, f"optuna-schema-{versions}.db", _create_optuna_tables)


def _migrate_mlflow_schema(url: str) -> None:
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    engine = sqlalchemy.create_engine(url)
    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()


def _build_mlflow_schema(url: str) -> None:
    """Copy an empty schema of this MLflow's head revision, migrated once per machine: MLflow's
    migrations take 3-7 s here, paid by every new study folder; the copy takes milliseconds."""
    _copy_template(url, f"mlflow-schema-{_mlflow_head_revision()}.db", _migrate_mlflow_schema)


def _copy_template(url: str, name: str, build) -> None:
    """Copy the template `name` of the machine's cache folder to `url`'s file, building the
    template first if missing. It is built like any store (temporary file, then linked), so it
    is whole or absent; where the cache folder cannot be written, the store is built in place."""
    target = sqlite_file(url)
    template = user_cache_root() / name
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        create_sqlite_store(template, build)
    except (OSError, StoreCreationError):
        build(url)
        return
    shutil.copyfile(template, target)


def create_sqlite_store(path: Path, build) -> bool:
    """Build a missing store in a temporary file beside `path`, then link it into place.

    Returns False when `path` exists already (nothing done). Cut off at any moment, this leaves
    at most a temporary `.<name>.building-*` file, never a half-built `path`."""
    if path.exists():
        return False
    building = path.with_name(f".{path.name}.building-{uuid.uuid4().hex[:8]}")
    try:
        build(f"sqlite:///{building}")
        os.link(building, path)  # atomic, and never over a store another worker linked
    except FileExistsError:
        return False
    except Exception as error:  # SQLAlchemy's, SQLite's or the OS's: the file was not made
        raise StoreCreationError(
            f"cannot create {path}: {one_line(error)}; nothing was left behind (it is built "
            "in a temporary file first): free space or fix the folder, then run the same "
            "command again"
        ) from error
    finally:
        for leftover in (building, *building.parent.glob(f"{building.name}-*")):
            leftover.unlink(missing_ok=True)  # the file, and any -wal / -journal beside it
    return True


def one_line(error: BaseException) -> str:
    """The innermost reason of a (possibly SQLAlchemy-wrapped) error, on one line."""
    reason = getattr(error, "orig", None) or error
    if isinstance(reason, OSError) and reason.strerror:
        return f"{reason.strerror} (errno {reason.errno})"
    lines = str(reason).strip().splitlines()
    return lines[0] if lines else type(reason).__name__


def create_stores(optuna_url: str, tracking_uri: str) -> None:
    """Create whichever of the two stores is a missing SQLite file, each whole or not at all."""
    for url, build in ((optuna_url, _build_optuna_schema), (tracking_uri, _build_mlflow_schema)):
        path = None if "://" not in url or url.startswith("http") else sqlite_file(url)
        if path is not None:
            create_sqlite_store(path, build)


class StoreCreationError(RuntimeError):
    """A store could not be created (a full disk, a vanished folder); nothing was left behind."""


def create_stores_or_exit(optuna_url: str, tracking_uri: str) -> None:
    """`create_stores`, or exit 1 with one line naming the file and why (nothing left behind)."""
    try:
        create_stores(optuna_url, tracking_uri)
    except StoreCreationError as error:
        say(f"error: {error}")
        raise SystemExit(1) from error
