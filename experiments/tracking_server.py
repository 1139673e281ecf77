"""An MLflow tracking server as a store: it answers, and it accepts this process's login.

    check_server("http://127.0.0.1:5000", "--tracking-uri")   # raises StoreError / ServerRefused

A server run with MLflow's authentication (`mlflow server --app-name basic-auth`) answers
`/health` to anyone but every API call only with a valid login. Workers log in the way MLflow's
own client does, from `MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD` (MLflow also
reads `~/.mlflow/credentials`, and a bearer token from `MLFLOW_TRACKING_TOKEN`); never from a
flag, whose value lands in shell history and in every process listing (so a `--tracking-uri`
with credentials in it is refused, by `experiments.stores.validate_tracking_uri`). The login is
tried with the request MLflow's client makes first (a search of one experiment), before any
trial exists: a missing or wrong password is one line and exit 2, not a retry loop mid-sweep.
"""

from __future__ import annotations

import urllib.error
import urllib.request

from experiments.stores import (
    CONNECT_TIMEOUT_SECONDS,
    CREDENTIAL_VARIABLES,
    ServerRefused,
    StoreError,
    display_url,
)

LOGIN_PROBE = "/api/2.0/mlflow/experiments/search"
INVALID_HOST = "Invalid Host header"
"""How MLflow's host check (`mlflow server --allowed-hosts`) starts its 403 answer."""


def check_server(uri: str, flag: str) -> None:
    """Raise `StoreError` unless an MLflow server answers at `uri`, `ServerRefused` unless it
    accepts this process's login and address (a server without authentication takes any
    login; the host check is MLflow's `--allowed-hosts`)."""
    shown = display_url(uri)
    health = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=CONNECT_TIMEOUT_SECONDS) as response:
            if response.status != 200:
                raise StoreError(f"{flag} {shown}: /health answered HTTP {response.status}")
    except (urllib.error.URLError, OSError) as error:
        raise StoreError(
            f"{flag} {shown}: no MLflow server answers at {display_url(health)} ({error}); "
            "start one with `mlflow server --backend-store-uri sqlite:///mlflow.db`"
        ) from error
    check_login(uri, flag)


def check_login(uri: str, flag: str) -> None:
    """The request MLflow's client makes first, with the credentials it would send."""
    # Imported here: only a tracking server needs MLflow's HTTP client.
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    shown = display_url(uri)
    creds = get_default_host_creds(uri.rstrip("/"))
    try:
        response = http_request(
            creds, LOGIN_PROBE, "GET", max_retries=0, timeout=CONNECT_TIMEOUT_SECONDS,
            params={"max_results": 1},
        )  # fmt: skip
    except Exception as error:  # MLflow wraps every transport error in its own exception
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise StoreError(f"{flag} {shown}: the MLflow server did not answer ({reason})") from error
    if response.status_code == 401:
        raise ServerRefused(f"{flag} {shown}: {_refusal(creds)}")
    if response.status_code == 403 and response.text.startswith(INVALID_HOST):
        raise ServerRefused(
            f"{flag} {shown}: the MLflow server refuses this address as the Host header (HTTP "
            "403: not in its --allowed-hosts); use the address it allows, or add this one there"
        )
    if response.status_code == 403:
        raise ServerRefused(
            f"{flag} {shown}: the MLflow server refused user {creds.username!r} (HTTP 403 "
            "permission denied); an MLflow admin can grant it access to the experiments"
        )
    if response.status_code != 200:
        raise StoreError(f"{flag} {shown}: {LOGIN_PROBE} answered HTTP {response.status_code}")


def _refusal(creds) -> str:
    """Why a 401, from what this process sent (user names are not secret; passwords are)."""
    if creds.username and creds.password:
        return (
            f"the MLflow server refused the login of user {creds.username!r} (HTTP 401: wrong "
            f"user name or password); check {CREDENTIAL_VARIABLES}"
        )
    if creds.username or creds.password:
        missing = "MLFLOW_TRACKING_PASSWORD" if creds.username else "MLFLOW_TRACKING_USERNAME"
        return f"the MLflow server asks for a login (HTTP 401) and {missing} is not set"
    if creds.token:
        return "the MLflow server refused the token in MLFLOW_TRACKING_TOKEN (HTTP 401)"
    return (
        f"the MLflow server asks for a login (HTTP 401) and none was given; set "
        f"{CREDENTIAL_VARIABLES} in the environment of every worker (never as a flag)"
    )
