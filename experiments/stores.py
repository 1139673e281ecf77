"""Where the sweep keeps its records: Optuna storage and MLflow tracking URIs, checked up front.

    check_optuna_storage("sqlite:///optuna.db", "--storage")        # raises StoreError if unusable
    check_tracking_uri("http://127.0.0.1:5000", "--tracking-uri")

Both stores are checked *before* anything is created, and the checks create nothing themselves:

- a SQLite URL must name a file (not `:memory:`, which would lose every result at exit) in a
  folder that exists and is writable; if the file exists it must be a sound SQLite database
  (and MLflow's a complete schema: `experiments.store_files`). The file itself is created
  later, whole or not at all, only once the sweep really starts;
- any other SQL URL (PostgreSQL, MySQL, ...) must accept a connection within
  `CONNECT_TIMEOUT_SECONDS`, through a driver that is installed;
- an MLflow tracking server (`http://`, `https://`) must answer its `/health` endpoint and
  accept this process's login (`experiments.tracking_server`); its URL may not carry one.

A failure raises `StoreError` whose message names the flag and what was wrong; the entry points
turn it into exit status 2 (`ServerRefused`: in one line). Passwords in URLs are never echoed:
every message and tag shows a URL through `display_url`.

`postgresql://` URLs without a driver use psycopg2 in SQLAlchemy. Where only psycopg 3 is
installed, `normalise_sql_url` rewrites them to `postgresql+psycopg://`, so the plain URL works.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import urllib.parse
from pathlib import Path

import sqlalchemy
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from softmaxreg.config import ConfigError

DEFAULT_OPTUNA_STORAGE = "sqlite:///optuna.db"
"""One SQLite file in the current folder holds every Optuna study (one per --study-name)."""

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
"""MLflow's own default tracking store; its artifacts go to ./mlruns beside it."""

CONNECT_TIMEOUT_SECONDS = 5
SQLITE_MAGIC = b"SQLite format 3\x00"
SERVER_SCHEMES = ("http", "https")


CREDENTIAL_VARIABLES = "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"


class StoreError(RuntimeError):
    """A store URL cannot be used; the message names the flag and the reason."""


class ServerRefused(StoreError):
    """The tracking server refuses this process's login or address (exit 2, one line)."""


def parse_sql_url(url: str, field_name: str) -> URL:
    """Parse an SQLAlchemy URL or raise `ConfigError` naming `field_name` (no I/O)."""
    shown = display_url(url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as error:
        raise ConfigError(
            f"{field_name}={shown!r} is invalid: expected a database URL such as "
            f"sqlite:///optuna.db or postgresql://user@host/db ({error})"
        ) from error
    if parsed.get_backend_name() == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise ConfigError(
                f"{field_name}={shown!r} is invalid: expected a SQLite file such as "
                "sqlite:///file.db (an in-memory database would lose every result when the "
                "process ends)"
            )
    elif not parsed.host or not parsed.database:
        # libpq and friends would silently fill these in from the environment (a local socket,
        # a database named after the user), writing the study somewhere nobody asked for.
        raise ConfigError(
            f"{field_name}={shown!r} is invalid: expected a host and a database name, as in "
            f"{parsed.get_backend_name()}://user@host:port/database"
        )
    return parsed


def validate_tracking_uri(uri: str, field_name: str) -> None:
    """Syntax check of an MLflow tracking URI: a database URL or an http(s) server (no I/O)."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme in SERVER_SCHEMES:
        shown = redact_server_url(uri)
        try:
            parts = urllib.parse.urlsplit(uri)
            host, _ = parts.hostname, parts.port  # .port raises on a malformed port
        except ValueError as error:
            raise ConfigError(
                f"{field_name}={shown!r} is invalid: expected a server URL such as "
                f"http://127.0.0.1:5000 ({error})"
            ) from error
        if not host:
            raise ConfigError(
                f"{field_name}={shown!r} is invalid: expected a server URL with a host, such as "
                "http://127.0.0.1:5000"
            )
        if parts.username is not None or parts.password is not None:
            # requests would log in with it over MLflow's own credentials, and a flag lands in
            # shell history and every process listing.
            raise ConfigError(
                f"{field_name}={shown!r} is invalid: a login in the URL lands in shell history "
                f"and process listings; give {scheme}://{parts.netloc.rsplit('@', 1)[1]} and set "
                f"{CREDENTIAL_VARIABLES} in the environment instead"
            )
        return
    if scheme.split("+", 1)[0] in ("sqlite", "postgresql", "mysql", "mssql"):
        parse_sql_url(uri, field_name)
        return
    raise ConfigError(
        f"{field_name}={uri!r} is invalid: expected a database URI (sqlite:///mlflow.db, "
        "postgresql://..., mysql://...) or an MLflow server (http://host:port); MLflow's file "
        "store (./mlruns) is deprecated and not supported"
    )


def is_server_uri(uri: str) -> bool:
    """True for an MLflow tracking server (http or https), False for a database URL."""
    return uri.split("://", 1)[0].lower() in SERVER_SCHEMES


def display_url(url: str) -> str:
    """`url` with any password masked, for messages and tags."""
    if is_server_uri(url):
        return redact_server_url(url)
    if "://" in url:
        try:
            return make_url(url).render_as_string(hide_password=True)
        except (ArgumentError, ValueError):
            return url.split("://", 1)[0] + "://***"  # unparsable: show nothing that may be secret
    return url


def redact_server_url(url: str) -> str:
    """An http(s) URL with the password of its user info, if any, replaced by `***`. Up to the
    last `@`, so a password with an unescaped `/` or `@` in it is hidden too."""
    scheme, _, rest = url.partition("://")
    if "@" not in rest:
        return url
    userinfo, host = rest.rsplit("@", 1)
    user = userinfo.split(":", 1)[0]
    login = f"{user}:***" if ":" in userinfo else user
    return f"{scheme}://{login}@{host}"


def normalise_sql_url(url: str) -> str:
    """Pick an installed PostgreSQL driver for a driver-less `postgresql://` URL."""
    parsed = make_url(url)
    if (
        parsed.drivername == "postgresql"
        and importlib.util.find_spec("psycopg2") is None
        and importlib.util.find_spec("psycopg") is not None
    ):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def normalise_tracking_uri(uri: str) -> str:
    """`normalise_sql_url` for database tracking URIs; server URIs unchanged."""
    if is_server_uri(uri):
        return uri
    return normalise_sql_url(uri)


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (relative to the current folder), else None."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    return Path(parsed.database or "")


def store_exists(url: str) -> bool:
    """False only when a SQLite URL names a file that does not exist yet (nothing to read)."""
    path = sqlite_file(url)
    return path is None or path.exists()


def _check_sqlite(path: Path, flag: str, url: str, writable: bool = True) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise StoreError(
            f"{flag} {url}: folder {folder.resolve()} does not exist (create it first, or "
            "point the URL at an existing folder)"
        )
    if writable and not folder_writable(folder):
        raise StoreError(f"{flag} {url}: folder {folder.resolve()} is not writable")
    if not writable and not path.exists():
        raise StoreError(f"{flag} {url}: no such database file {path.resolve()}")
    if path.exists():
        if not path.is_file():
            raise StoreError(f"{flag} {url}: {path.resolve()} exists but is not a file")
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_MAGIC))
        if header and header != SQLITE_MAGIC:
            raise StoreError(f"{flag} {url}: {path.resolve()} exists but is not a SQLite database")
        if header:
            # Imported here: store_files builds on this module.
            from experiments.store_files import check_sqlite_integrity

            check_sqlite_integrity(path.resolve(), f"{flag} {url}")


def connect_args(url: str | URL) -> dict[str, object]:
    """A bounded connect for a database server: an unreachable host fails in seconds rather
    than hanging the worker (libpq waits forever by default)."""
    backend = make_url(url).get_backend_name()
    if backend in ("postgresql", "mysql", "mariadb"):
        return {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    return {}


def check_sql_url(url: str, flag: str, writable: bool = True) -> None:
    """Raise `StoreError` unless the database behind `url` can be used (creates nothing).

    `writable=False` (export: reads only) accepts an existing SQLite file in a read-only
    folder."""
    path = sqlite_file(url)
    if path is not None:
        _check_sqlite(path, flag, url, writable)
        return
    parsed = make_url(normalise_sql_url(url))
    shown = display_url(url)
    try:
        engine = sqlalchemy.create_engine(
            parsed, poolclass=NullPool, connect_args=connect_args(parsed)
        )
    except (NoSuchModuleError, ImportError) as error:
        raise StoreError(
            f"{flag} {shown}: the database driver is not installed ({error}); for PostgreSQL "
            "install psycopg2-binary or psycopg[binary], for MySQL pymysql"
        ) from error
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()
        raise StoreError(
            f"{flag} {shown}: cannot connect to the database: {reason[0] if reason else error}"
        ) from error
    finally:
        engine.dispose()


def folder_writable(folder: Path) -> bool:
    """Whether files can be created in `folder`: its permissions and its mount (root passes
    every permission check, but not a read-only mount)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    return not os.statvfs(folder).f_flag & os.ST_RDONLY


def check_optuna_storage(url: str, flag: str = "--storage", writable: bool = True) -> None:
    check_sql_url(url, flag, writable)


def check_tracking_uri(uri: str, flag: str = "--tracking-uri", writable: bool = True) -> None:
    """Raise `StoreError` unless MLflow can track to `uri` (a database, or a live server that
    accepts this process's login: `ServerRefused` if not)."""
    if is_server_uri(uri):
        # Imported here: the server checks build on this module.
        from experiments.tracking_server import check_server

        check_server(uri, flag)
        return
    check_sql_url(uri, flag, writable)
    path = sqlite_file(uri)
    if path is not None and path.exists() and path.stat().st_size > 0:
        from experiments.store_files import check_mlflow_schema

        check_mlflow_schema(path.resolve(), f"{flag} {uri}")


def absolute_sqlite_url(url: str) -> str:
    """A relative `sqlite:///file.db` made absolute, so it works from any folder."""
    path = sqlite_file(url) if "://" in url and not is_server_uri(url) else None
    if path is None or path.is_absolute():
        return url
    return f"{url.split(':', 1)[0]}:///{path.resolve()}"


def mlflow_ui_command(tracking_uri: str) -> str:
    """The exact command that opens the MLflow UI on `tracking_uri`."""
    if is_server_uri(tracking_uri):
        return (
            f"open {display_url(tracking_uri)} in a browser (the MLflow server is already running)"
        )
    store = display_url(absolute_sqlite_url(tracking_uri))
    return f"{mlflow_executable()} ui --backend-store-uri {store}"


def mlflow_executable() -> str:
    """This environment's `mlflow` by its full path, so the command also runs in a shell whose
    PATH lacks the venv; `mlflow` where this environment has none."""
    beside_python = Path(sys.executable).parent / "mlflow"
    return str(beside_python) if beside_python.exists() else "mlflow"
