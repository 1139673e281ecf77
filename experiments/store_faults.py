"""Faults of the stores themselves: Optuna's storage unreachable, a full disk anywhere.

    watch = StorageWatch(stores.optuna_url, wait_seconds=60, log=print)
    study = watch.call(open_study, ...)     # an outage: wait for the storage, then again
    watch.recover(error)                    # in an `except`: wait (bounded) or raise
    raise_if_disk_full(error, "/path/mlflow.db")   # DiskFull naming the path, at once

Where Optuna raises: any SQLAlchemy error in a write's commit becomes `StorageInternalError`
("invalid data in the commit, e.g. exceeding max length"), a refused connection included;
reads raise SQLAlchemy's `OperationalError` as is; trial creation retries a few times within
seconds, then raises. Nothing inside `study.optimize` catches them, and Optuna's own clean-up
(telling the trial FAIL) fails the same way on top. They reach our boundary, the worker's loop
and our own storage calls, which recognise an outage by the chain (a connection-level error at
its root, `is_storage_outage`) and wait here, visibly and for a bounded time, rather than
retrying inside Optuna. A storage answering the ping while the call keeps failing is not an
outage: after `MAX_BLIPS` such attempts the error is raised as it is.

A full disk is not an outage: waiting frees no space. It is raised at once as `DiskFull`, one
line naming the path, wherever it is recognised (`softmaxreg.disk_full`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import sqlalchemy
from sqlalchemy import exc as sqlalchemy_exc
from sqlalchemy.pool import NullPool

from experiments.interrupts import GATE
from experiments.stores import connect_args, display_url, sqlite_file
from softmaxreg.disk_full import causes, disk_full_path, is_disk_full, says_disk_full

POLL_SECONDS = 1.0
MAX_BLIPS = 3
CONNECTION_ERRORS = (
    sqlalchemy_exc.OperationalError,
    sqlalchemy_exc.InterfaceError,
    sqlalchemy_exc.DisconnectionError,
)


class StoreFault(RuntimeError):
    """A store failed in a way already decided and worded: report the message, one line."""


class StorageUnavailable(StoreFault):
    """Optuna's storage stayed unreachable for the whole wait."""


class DiskFull(StoreFault):
    """A write failed for want of space; the message names the path."""


def one_line(error: BaseException) -> str:
    """The innermost reason of a (possibly wrapped) error, on one line, at most 160 chars."""
    reason = getattr(error, "orig", None) or error
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    lines = [line for line in str(reason).strip().splitlines() if line.strip()]
    return (lines[0] if lines else type(reason).__name__)[:160]


def disk_full(error: BaseException, where: str) -> DiskFull | None:
    """`DiskFull` for `error` if a full disk is behind it, naming the file it says or `where`."""
    if isinstance(error, DiskFull):
        return error
    if not is_disk_full(error):
        return None
    path = disk_full_path(error) or where
    reason = one_line([e for e in causes(error) if says_disk_full(e)][-1])  # the innermost
    return DiskFull(
        f"disk full: {path} ({reason}); free space there, then run the same command again "
        "(finished trials are kept; python -m experiments.reconcile repairs the MLflow runs)"
    )


def raise_if_disk_full(error: BaseException, where: str) -> None:
    fault = disk_full(error, where)
    if fault is error:
        raise error
    if fault is not None:
        raise fault from error


def is_storage_outage(error: BaseException) -> bool:
    """A connection-level database error anywhere in the chain, and not one of ours."""
    chain = list(causes(error))
    if any(isinstance(e, StoreFault) for e in chain):
        return False  # decided already (the tracking store's, a full disk, the wait's end)
    return any(isinstance(e, CONNECTION_ERRORS) for e in chain)


def is_store_failure(error: BaseException) -> bool:
    """Optuna's storage out of reach, or a full disk: what a background thread or a clean-up
    may let pass, since the worker's loop meets the same fault and reports it."""
    faults = any(isinstance(e, StoreFault) for e in causes(error))
    return faults or is_storage_outage(error) or is_disk_full(error)


def outage_reason(error: BaseException) -> str:
    """The connection-level error behind `error`, on one line."""
    found = [e for e in causes(error) if isinstance(e, CONNECTION_ERRORS)]
    return one_line(found[-1] if found else error)


def store_failure_line(error: BaseException) -> str:
    """One line for a store's failure met outside the watched calls (a repair, a summary)."""
    fault = next((e for e in causes(error) if isinstance(e, StoreFault)), None)
    if fault is not None:
        return str(fault)
    full = disk_full(error, where="a store")
    if full is not None:
        return str(full)
    return f"Optuna's storage unreachable ({outage_reason(error)})"


def store_where(url: str) -> str:
    """How a message names a store: its file for SQLite, else its URL (password masked)."""
    path = sqlite_file(url) if "://" in url and not url.startswith("http") else None
    return str(path) if path is not None else display_url(url)


class StorageWatch:
    """Optuna's storage seen from one worker: is it there, wait for it, or give up."""

    def __init__(self, url: str, *, wait_seconds: float, log: Callable[[str], None]) -> None:
        self.url = url
        self.shown = display_url(url)
        self.where = store_where(url)
        self.wait_seconds = wait_seconds
        self.log = log
        self.blips = 0
        """Failed attempts in a row while the storage answered the ping."""
        self.seconds = 0.0
        """Wall seconds spent waiting for the storage."""
        # A pool whose connection fails to reset during an outage logs it with a traceback;
        # the outage is reported here, once.
        logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)

    def ping(self) -> str | None:
        """None if the storage answers a query now, else the reason, on one line."""
        engine = sqlalchemy.create_engine(
            self.url, poolclass=NullPool, connect_args=connect_args(self.url)
        )
        try:
            with engine.connect() as connection:
                query = "SELECT 1" if sqlite_file(self.url) is None else "PRAGMA schema_version"
                connection.exec_driver_sql(query).fetchall()
            return None
        except sqlalchemy_exc.SQLAlchemyError as error:
            return one_line(error)
        finally:
            engine.dispose()

    def call(self, function: Callable, *args, **kwargs):
        """`function(*args, **kwargs)`, called again after each outage it runs into."""
        while True:
            try:
                result = function(*args, **kwargs)
            except Exception as error:
                self.recover(error)
                continue
            self.blips = 0
            return result

    def recover(self, error: Exception) -> str:
        """Call in an `except`: return the outage's reason once the storage answers again (the
        caller retries); raise `DiskFull`, `StorageUnavailable`, or `error` if no outage."""
        raise_if_disk_full(error, self.where)
        if not is_storage_outage(error):
            raise error
        reason = self.ping()
        if reason is None:
            self.blips += 1
            if self.blips > MAX_BLIPS:
                raise error  # the storage answers, the call still fails: not an outage
            return outage_reason(error)
        self.wait(reason)
        self.blips = 0
        return reason

    def wait(self, reason: str) -> None:
        """Wait up to `wait_seconds` for the storage to answer, saying so once."""
        started = time.monotonic()
        self.log(
            f"Optuna's storage {self.shown} is unreachable ({reason}), waiting up to "
            f"{self.wait_seconds:.0f} s"
        )
        while True:
            GATE.raise_pending()  # Ctrl-C or SIGTERM does not wait for the storage
            waited = time.monotonic() - started
            if waited >= self.wait_seconds:
                self.seconds += waited
                raise StorageUnavailable(
                    f"Optuna's storage {self.shown} unreachable for {waited:.0f} s ({reason})"
                )
            time.sleep(min(POLL_SECONDS, self.wait_seconds - waited))
            answer = self.ping()
            if answer is None:
                break
            reason = answer
        waited = time.monotonic() - started
        self.seconds += waited
        self.log(f"Optuna's storage reachable again after {waited:.0f} s")
