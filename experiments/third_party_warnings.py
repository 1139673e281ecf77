"""Warnings from the packages we build on that our commands keep from the user, in one place.

    hide_third_party_warnings()      # first thing in every entry point's main()

Each entry names the warning exactly: its category, the module it is attributed to and the
start of its message. Nothing else is touched: a warning raised by this project, another
category from the same module, or the same category from another module still shows as Python
would show it. Every entry is one that was seen on a command's stderr and that no user of ours
can act on; say in `why` where it comes from.

Measured with mlflow 3.17, SQLAlchemy 2, optuna 5, torch 2.14 (sweep, `--workers 2`, export,
reconcile, train and the benchmarks, each with `-W default` so that nothing Python hides by
default was missed): one warning, listed below. Under Python's default filters none of these
commands showed a third-party warning; the entry keeps it so where a developer has turned
warnings on (`PYTHONWARNINGS`, `-X dev`, pytest).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass


@dataclass(frozen=True)
class KnownWarning:
    category: type[Warning]
    """Matched with its subclasses, as `warnings.filterwarnings` does."""
    module: str
    """Regular expression for the module the warning is attributed to (from its start)."""
    message: str
    """Regular expression for the start of the message."""
    why: str

    def pytest_filter(self) -> str:
        """The same filter as a pytest `filterwarnings` line (`action:message:category:module`)."""
        return f"ignore:{self.message}:{self.category.__name__}:{self.module}"


KNOWN_WARNINGS: tuple[KnownWarning, ...] = (
    KnownWarning(
        DeprecationWarning,  # sqlalchemy.exc.SADeprecationWarning, a subclass
        r"mlflow\.store\.\w+\.sqlalchemy_store",
        r"The ``noload`` loader strategy is deprecated",
        "MLflow's own table models use SQLAlchemy's deprecated `noload`; raised once per process "
        "when the first of MLflow's SQL stores (tracking, registry, jobs) configures its mappers",
    ),
)


def hide_third_party_warnings() -> None:
    """Ignore exactly the warnings in `KNOWN_WARNINGS` for the rest of the process (and the
    workers it forks)."""
    for known in KNOWN_WARNINGS:
        warnings.filterwarnings(
            "ignore", message=known.message, category=known.category, module=known.module
        )
