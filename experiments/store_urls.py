"""The sweep's two stores as typed, normalised URLs, parsed once from the flags.

    stores = Stores.from_config(sweep)               # normalised once: absolute SQLite paths,
    stores.optuna_url, stores.tracking_uri           # a PostgreSQL driver that is installed

The rest of the sweep receives `Stores` and never re-reads a URL string. Nothing here touches a
file, a database or the network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from experiments.stores import (
    absolute_sqlite_url,
    display_url,
    is_server_uri,
    normalise_sql_url,
    parse_sql_url,
    sqlite_file,
)
from softmaxreg.config import require

if TYPE_CHECKING:
    from experiments.config import SweepConfig


@dataclass(frozen=True)
class Stores:
    """The two stores of a sweep, as normalised URLs every module uses as they are.

    SQLite paths are absolute (so worker processes and messages agree whatever the folder), and
    a driver-less postgresql:// URL names the installed driver.
    """

    optuna_url: str
    tracking_uri: str

    @classmethod
    def from_config(cls, sweep: SweepConfig) -> Stores:
        stores = cls(
            optuna_url=normalise_sql_url(absolute_sqlite_url(sweep.storage)),
            tracking_uri=normalise_tracking(sweep.tracking_uri),
        )
        require(
            not same_database(stores.optuna_url, stores.tracking_uri),
            "tracking_uri",
            display_url(sweep.tracking_uri),
            f"a different database from --storage {display_url(sweep.storage)} (Optuna and "
            "MLflow both keep an alembic_version table, so they cannot share one)",
        )
        return stores

    @property
    def tracking_is_server(self) -> bool:
        return is_server_uri(self.tracking_uri)

    def shown(self) -> tuple[str, str]:
        """Both URLs with passwords masked, for messages and tags."""
        return display_url(self.optuna_url), display_url(self.tracking_uri)


def normalise_tracking(uri: str) -> str:
    if is_server_uri(uri):
        return uri.rstrip("/")
    return normalise_sql_url(absolute_sqlite_url(uri))


def same_database(first: str, second: str) -> bool:
    """True when two normalised URLs name one database (one SQLite file however spelled)."""
    if is_server_uri(first) or is_server_uri(second):
        return False
    first_file, second_file = sqlite_file(first), sqlite_file(second)
    if first_file is not None or second_file is not None:
        return (
            first_file is not None
            and second_file is not None
            and os.path.realpath(first_file) == os.path.realpath(second_file)
        )
    return parse_sql_url(first, "storage").set(drivername="x") == parse_sql_url(
        second, "tracking_uri"
    ).set(drivername="x")
