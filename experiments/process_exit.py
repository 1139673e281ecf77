"""End an entry point's process without the interpreter's teardown, once its work is stored.

    if __name__ == "__main__":
        exit_without_teardown(main())   # instead of sys.exit(main())

Why: a process that has imported torch, MLflow, Optuna and SQLAlchemy spends 1.4-1.6 s after
its last line, on this machine, freeing every module's objects one by one (`python -c "import
torch"` alone takes about 1 s longer to exit than to import): the sweep printed its report and
the shell waited that long for the prompt. Nothing in that teardown is work of ours, so it is
skipped with `os._exit`, after doing first what of it matters:
- non-daemon threads are joined, as the interpreter would;
- atexit handlers run (MLflow's flush of asynchronous logging and its telemetry among them);
- logging is flushed and closed;
- every SQLAlchemy engine is disposed: SQLite moves its write-ahead log into the .db file when
  the file's last connection closes, so no -wal or -shm file is left beside optuna.db or
  mlflow.db and a copy of the .db alone holds everything;
- stdout and stderr are flushed.
Only a normal return takes this path: an exception or SystemExit (a bad flag) leaves the usual
way.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
import weakref
from typing import NoReturn

from sqlalchemy import event
from sqlalchemy.engine import Engine

_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()
"""Every engine that has connected in this process (Optuna's, MLflow's, ours)."""


@event.listens_for(Engine, "engine_connect")
def _remember_engine(connection) -> None:
    _ENGINES.add(connection.engine)


def dispose_engines() -> None:
    """Close every pooled connection of every engine this process has used."""
    for engine in list(_ENGINES):
        engine.dispose()


def exit_without_teardown(status: int) -> NoReturn:
    """Flush and close what the teardown would have, then leave with `status` at once."""
    current = threading.current_thread()
    for thread in threading.enumerate():
        if thread is not current and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    logging.shutdown()
    dispose_engines()
    for stream in (sys.stdout, sys.stderr):
        # A reader that is gone or a stream closed already: nothing more can reach it.
        with contextlib.suppress(BrokenPipeError, OSError, ValueError):
            stream.flush()
    os._exit(status)
