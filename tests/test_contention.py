"""The contention benchmark's parts: the spinner, repeated trials, and slowdowns paired by round.

Nothing here times anything against a target: the spinner's session, the repeat-until rule and
the pairing of busy and quiet measurements are behaviour, checked on synthetic data.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import pandas as pd
import torch

from benchmarks.contention import busy_core, seconds_per_trial, slowdowns


def test_busy_core_runs_a_spinner_in_its_own_session_and_kills_it():
    with busy_core(False) as nothing:
        assert nothing is None
    with busy_core(True) as spinner:
        assert spinner.poll() is None, "the spinner runs during the block"
        # Its own session: Linux's autogroup then gives it its own CPU share, not half of ours.
        assert os.getsid(spinner.pid) == spinner.pid != os.getsid(0)
    assert spinner.returncode is not None, "and is gone after it"


def contention_context(min_seconds: float) -> SimpleNamespace:
    """The parts of a benchmark `Context` that a contention measurement reads."""
    settings = SimpleNamespace(contention_epochs=1, contention_min_seconds=min_seconds)
    return SimpleNamespace(settings=settings, device=torch.device("cpu"))


def test_a_contention_measurement_repeats_its_trial_for_the_minimum_time(synthetic_splits):
    reference = "1-thread reference"
    seconds, trials = seconds_per_trial(
        reference, contention_context(0.0), synthetic_splits, 256, None
    )
    assert trials == 1 and seconds > 0
    seconds, trials = seconds_per_trial(
        reference, contention_context(0.2), synthetic_splits, 256, None
    )
    assert trials > 1 and seconds * trials >= 0.2


def test_contention_slowdowns_pair_busy_and_quiet_by_round():
    frame = pd.DataFrame(
        {
            # Busy rows out of round order: pairs are matched by round, not by position.
            "round": [2, 1, 1, 2, 3, 3],
            "condition": ["busy", "quiet", "busy", "quiet", "quiet", "busy"],
            "batch_size": [16] * 6,
            "pipeline": ["ours"] * 6,
            "train_seconds": [4.0, 1.0, 1.5, 2.0, 3.0, 3.0],
            "load_average": [2.0, 1.0, 2.0, 1.0, 1.0, 2.0],
        }
    )
    row = slowdowns(frame).iloc[0]
    assert (row.quiet_seconds, row.busy_seconds) == (2.0, 3.0)
    assert row.slowdown == 1.5
    assert (row.round_slowdown_min, row.round_slowdown_max) == (1.0, 2.0)
    assert (row.load_average_quiet, row.load_average_busy) == (1.0, 2.0)
