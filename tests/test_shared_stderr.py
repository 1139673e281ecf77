"""Forked workers share their command's stderr: each line they say must reach it whole.

A real process run as `python -u` (as PYTHONUNBUFFERED=1 makes every run here and in CI) forks
two children that say long lines at once into one pipe, as `--workers 2` does when both meet a
storage outage; `print` writes a text and its newline apart, and then two lines splice into one.
"""

from __future__ import annotations

import subprocess
import sys

from tests.test_workers import REPO_ROOT

LINES_EACH = 5000
SPEAKERS = """
import os, sys
from experiments.common import say
children = []
for name in "ab":
    pid = os.fork()
    if pid == 0:
        for i in range({lines}):
            say(f"{{name}} {{i}} " + name * 200)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
"""


def test_two_forked_workers_saying_lines_at_once_never_splice_them():
    done = subprocess.run(
        [sys.executable, "-u", "-c", SPEAKERS.format(lines=LINES_EACH)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    lines = done.stderr.splitlines()
    spliced = [line for line in lines if line.split(" ")[2:] not in (["a" * 200], ["b" * 200])]
    assert spliced == []
    assert len(lines) == 2 * LINES_EACH
    for name in "ab":
        numbers = [int(line.split(" ")[1]) for line in lines if line.startswith(name)]
        assert numbers == list(range(LINES_EACH))
