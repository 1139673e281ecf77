"""A new user's first hour, as they would live it: a plain shell, umask 022, a folder of their own.

The sweep runs from a shell whose PATH has no venv (`/usr/bin:/bin`), on real MNIST `.gz` files
its own fetch unpacks; then every command it prints at the end is run exactly as printed, in
the same kind of shell: the export (must exit 0 and write its tables) and the MLflow UI (must
answer on its port, which `mlflow ui` reads from `$MLFLOW_PORT`, so no other server is hit).
Every file the three wrote must be readable by group and others, and a git working copy holding
the project's .gitignore must see none of them. The same sweep's output is read as the user
reads it: the registered model announced once, in the report's words (MLflow's own
"Successfully registered model" and "Created version" lines kept off), and no warning raised by
a third-party package on stderr, the sweep's or the export's. And the stores it leaves are whole
in their `.db` files: a copy of each file alone holds every trial and run.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from softmaxreg.data import DATA_ENV_VAR, DATASETS
from tests.services import STARTUP_SECONDS, free_port

pytestmark = [pytest.mark.real_data, pytest.mark.slow, pytest.mark.timeout(900)]

REPO_ROOT = Path(__file__).resolve().parent.parent
PLAIN_PATH = "/usr/bin:/bin"
COMMAND_TIMEOUT = 600


def plain_env(**extra: str) -> dict[str, str]:
    """A shell without the venv. PYTHONPATH names this checkout: the venv's editable install may
    point at another one (a worktree), and the commands must run this code."""
    keep = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "TMPDIR", "USER")}
    return {**keep, "PATH": PLAIN_PATH, "PYTHONPATH": str(REPO_ROOT), **extra}


def in_plain_shell(command: str, cwd: Path, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        ["/bin/sh", "-c", f"umask 022 && {command}"],
        cwd=cwd,
        env=popen.pop("env", None) or plain_env(),
        text=True,
        **popen,
    )


def run_plain(command: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    process = in_plain_shell(
        command, cwd, env=plain_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = process.communicate(timeout=COMMAND_TIMEOUT)
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def printed(out: str, label: str) -> str:
    (line,) = [line for line in out.splitlines() if line.startswith(label)]
    return line.removeprefix(label).strip()


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def run_ui_until_it_answers(command: str, cwd: Path) -> None:
    port = free_port()
    process = in_plain_shell(
        command, cwd, env=plain_env(MLFLOW_PORT=str(port)),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not answers(port):
            assert process.poll() is None, f"{command!r} exited: {process.stderr.read()}"
            assert time.monotonic() < deadline, f"{command!r} not answering on {port}"
            time.sleep(0.5)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


EVERY_WARNING = {"PYTHONWARNINGS": "default"}
"""Python shows every warning once per place, those it hides by default too (as a developer's
shell may be set up): the output checks then see any warning our filters would let through."""
WARNING_LINE = re.compile(r"^(?P<file>.+?):\d+: (?P<category>\w+Warning): ", re.MULTILINE)
"""How Python's `warnings.showwarning` starts a warning on stderr: `file:line: Category: text`."""


def warning_lines(stderr: str) -> list[str]:
    """Warnings on stderr raised by code other than this project's."""
    return [
        match.group(0)
        for match in WARNING_LINE.finditer(stderr)
        if not Path(match.group("file")).resolve().is_relative_to(REPO_ROOT)
    ]


def unreadable_files(folder: Path) -> list[str]:
    return [
        f"{path.relative_to(folder)} {stat.filemode(path.stat().st_mode)}"
        for path in sorted(folder.rglob("*"))
        if path.is_file() and (path.stat().st_mode & 0o044) != 0o044
    ]


@pytest.fixture(scope="module")
def first_sweep(
    mnist_gz_folder, tmp_path_factory
) -> tuple[Path, subprocess.CompletedProcess, StoresCopiedAlone]:
    """A new user's first sweep, in a folder of their own holding only the `.gz` files."""
    folder = tmp_path_factory.mktemp("first-use")
    raw_dir = DATASETS["mnist"].raw_dir(folder / "data")
    raw_dir.mkdir(parents=True)
    for packed in mnist_gz_folder.iterdir():
        shutil.copyfile(packed, raw_dir / packed.name)
    assert DATA_ENV_VAR not in plain_env()  # the sweep's default data root: ./data
    sweep = run_plain(
        f"{sys.executable} -m experiments.sweep --n-trials 2 --epochs 1 --batch-sizes 256 "
        "--val-size 55000 --pruner none --device cpu --quiet",
        folder,
        **EVERY_WARNING,
    )
    assert sweep.returncode == 0, sweep.stderr
    assert len(list(raw_dir.glob("*-ubyte"))) == 4  # unpacked by the sweep's own fetch
    # What a user who copies the stores right after the sweep gets: each .db file alone.
    alone = tmp_path_factory.mktemp("stores-copied-alone")
    left_beside = sorted(p.name for p in folder.iterdir() if p.name.endswith(("-wal", "-shm")))
    for name in ("optuna.db", "mlflow.db"):
        shutil.copyfile(folder / name, alone / name)
    return folder, sweep, StoresCopiedAlone(alone, left_beside)


@dataclass
class StoresCopiedAlone:
    """optuna.db and mlflow.db copied without their folder right after the sweep exited, and the
    SQLite side files (write-ahead log, its index) the sweep left beside them."""

    folder: Path
    left_beside: list[str]


def test_the_stores_are_whole_in_their_db_files_when_the_sweep_has_exited(first_sweep):
    """The sweep leaves without the interpreter's teardown (experiments.process_exit): its
    engines must still be closed first, so SQLite has moved its write-ahead log into each .db
    and a copy of the .db alone holds every trial and run."""
    _, _, copied = first_sweep
    assert copied.left_beside == []
    with sqlite3.connect(copied.folder / "optuna.db") as optuna_db:
        states = optuna_db.execute("SELECT state, COUNT(*) FROM trials GROUP BY state").fetchall()
    assert states == [("COMPLETE", 2)]
    with sqlite3.connect(copied.folder / "mlflow.db") as mlflow_db:
        runs = mlflow_db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall()
    assert runs == [("FINISHED", 4)]  # the study's parent run, one run per trial, the refit's


def test_printed_commands_run_as_printed_and_what_they_write_is_readable_and_ignored(first_sweep):
    folder, sweep, _ = first_sweep
    export = run_plain(printed(sweep.stdout, "export the table:"), folder, **EVERY_WARNING)
    assert export.returncode == 0, export.stderr
    assert warning_lines(export.stderr) == []
    for suffix in (".csv", "_best_per_batch_size.csv", "_best_per_batch_size.md"):
        assert (folder / f"results{suffix}").stat().st_size > 0, suffix
    run_ui_until_it_answers(printed(sweep.stdout, "compare the runs:"), folder)

    assert unreadable_files(folder) == []
    shutil.copyfile(REPO_ROOT / ".gitignore", folder / ".gitignore")
    subprocess.run(["git", "init", "-q"], cwd=folder, check=True)
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=folder, capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert status == ["?? .gitignore"]


def test_the_registered_model_is_announced_once_in_our_words(first_sweep):
    """MLflow's own "Successfully registered model" and "Created version" lines repeat what the
    report's refit line says: neither reaches the user, and ours is there."""
    _, sweep, _ = first_sweep
    output = sweep.stdout + sweep.stderr
    assert "Successfully registered model" not in output
    assert "Created version" not in output
    (ours,) = [line for line in sweep.stdout.splitlines() if "registered as" in line]
    assert ours.endswith("registered as softmaxreg-mnist-best")


def test_no_third_party_warning_reaches_the_user(first_sweep):
    _, sweep, _ = first_sweep
    assert warning_lines(sweep.stderr) == []
