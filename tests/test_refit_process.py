"""The best trial's refit trained in a forked child (`experiments.refit_process`) is the refit
this process trains: the same record, weights to the bit, stored on a real SQLite study. A
child killed half-way, or overtaken by a later best trial, costs a refit here and nothing else.
The cases run in a fresh process (tests/refit_probe.py), as the sweep command forks the child:
one that never ran torch on more than one thread.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PROBE = Path(__file__).with_name("refit_probe.py")

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the refit child is forked")


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("refit-probe")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(PROBE), str(folder)], capture_output=True,
                          text=True, env=env, cwd=folder, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_child_refits_as_this_process_would_and_the_record_is_stored(cases):
    child = cases["child"]
    assert child["forked"] and child["reaped"]
    assert child["trial"] == child["best"]
    assert child["same_weights"] and child["same_accuracy"]  # trained the same, to the bit
    assert child["stored"]


def test_nothing_is_forked_when_the_best_trial_has_its_refit(cases):
    assert not cases["already"]["forked"]
    assert cases["already"]["same"]


def test_a_killed_child_costs_a_refit_here(cases):
    killed = cases["killed"]
    assert killed["trial"] == killed["best"] and killed["stored"]


def test_a_trial_that_became_best_meanwhile_is_refit_instead(cases):
    overtaken = cases["overtaken"]
    assert overtaken["newest"] != overtaken["first"]
    assert overtaken["trial"] == overtaken["stored_trial"] == overtaken["newest"]
