"""The stores' code, imported once by a command before it freezes its heap and forks workers.

    preload_store_code(stores)   # in the command, after the data, before gc.freeze() and forks

Why: a worker's first open of the study and its mirror imports the code behind both stores
(SQLAlchemy's ORM, alembic, MLflow's SQL store and what they pull in: about 280 modules) and
configures the ORM's mappers: 0.7-0.9 s here, of which the SQL work is about 0.1 s. Forked
workers paid it each, after the fork, one after another under the study lock, so the second
worker's first trial began about 0.8 s after the first's, and the command paid it once more
when it opened the mirror for the study's end. Imported in the command, it is paid once and
shared by every worker's pages. `--workers 1` would import the same modules when it opens the
study; loaded before the command freezes its heap (`experiments.sweep.main`), they are among
what the collector's full collections no longer walk.

Only code is loaded here: no engine, connection, client or thread is made, so a forked child
inherits nothing that holds a connection.
"""

from __future__ import annotations

import importlib

from experiments.store_urls import Stores

OPTUNA_STORAGE_CODE = (
    "optuna.storages._rdb.models",  # SQLAlchemy's ORM, Optuna's tables
    "alembic.command",  # the schema checks of both stores (alembic.config pulls in email)
    "alembic.config",
    "alembic.migration",
    "alembic.script",
)
MLFLOW_SQL_STORE_CODE = (
    "mlflow.store.tracking.sqlalchemy_store",  # MLflow's tables, alembic, cryptography
    "mlflow.store.tracking.sqlalchemy_workspace_store",
    "mlflow.store.model_registry.sqlalchemy_store",  # the best model's registration
)
MLFLOW_SERVER_CODE = (
    "mlflow.store.tracking.rest_store",
    "mlflow.store.model_registry.rest_store",
)


def store_modules(stores: Stores) -> tuple[str, ...]:
    """The modules a first open of `stores` would import (Optuna's storage is always SQL)."""
    mlflow_code = MLFLOW_SERVER_CODE if stores.tracking_is_server else MLFLOW_SQL_STORE_CODE
    return OPTUNA_STORAGE_CODE + mlflow_code


def preload_store_code(stores: Stores) -> None:
    """Import what opening `stores` needs and configure the ORM's mappers, in this process."""
    for name in store_modules(stores):
        importlib.import_module(name)
    from sqlalchemy.orm import configure_mappers

    configure_mappers()
