"""The forked refit's cases in a fresh process: `python tests/refit_probe.py FOLDER` prints JSON.

Run by tests/test_refit_process.py in a process that, like the sweep command that forks the
refit child, never ran torch on more than one thread: in the pytest process other tests have
started torch's OpenMP pool, and a process forked after that hangs in its first parallel op.
Each case sweeps a small synthetic study of its own (real SQLite stores, no refit stored yet),
then refits its best trial in a child (`RefitApart`) and here, and reports what it saw.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)  # first, as the sweep command does before it forks anything

import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

import experiments.refit  # noqa: E402
from experiments.config import SweepConfig  # noqa: E402
from experiments.model_registry import REFIT_ATTR, best_trial_with_weights  # noqa: E402
from experiments.refit import refit_trial, store_refit  # noqa: E402
from experiments.refit_process import RefitApart  # noqa: E402
from experiments.worker import run_sweep  # noqa: E402
from softmaxreg.config import DataConfig, TrainConfig  # noqa: E402
from softmaxreg.synthetic import make_synthetic_splits  # noqa: E402

TRAIN = TrainConfig(epochs=2, device="cpu", threads=1)
DATA = make_synthetic_splits(n_train=2000, n_val=500, n_test=500, seed=0)


def swept(folder: Path) -> tuple[optuna.Study, str]:
    folder.mkdir()
    url = f"sqlite:///{folder / 'optuna.db'}"
    config = SweepConfig(study_name="refit-study", n_trials=3, batch_sizes=(32, 128),
                         lr_range=(0.05, 1.0), refit=False, quiet=True, storage=url,
                         tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")  # fmt: skip
    run_sweep(config, TRAIN, DataConfig(), DATA, log=lambda _: None)
    return optuna.load_study(study_name="refit-study", storage=url), url


def trained_here(*_args, **_kwargs):
    raise AssertionError("refit trained in the parent, not taken from the child")


def stored(study: optuna.Study) -> dict:
    return optuna.load_study(study_name=study.study_name, storage=study._storage).user_attrs.get(
        REFIT_ATTR
    )


def case_child(folder: Path) -> dict:
    study, url = swept(folder)
    best = best_trial_with_weights(study)
    refit = RefitApart.start(study, DATA, TRAIN, url, log=lambda _: None)
    forked = refit.pid is not None and refit.pid != os.getpid()
    experiments.refit.refit_trial = trained_here  # the record must be the child's
    try:
        record = refit.result()
    finally:
        experiments.refit.refit_trial = refit_trial
    here = refit_trial(best, DATA, TRAIN, lambda _: None)
    return {"forked": forked, "reaped": refit.pid is None, "trial": record["trial"],
            "best": best.number, "same_weights": record["weights"] == here["weights"],
            "same_accuracy": record["test_accuracy"] == here["test_accuracy"],
            "stored": stored(study) == record}  # fmt: skip


def case_already(folder: Path) -> dict:
    study, url = swept(folder)
    kept = store_refit(study, refit_trial(best_trial_with_weights(study), DATA, TRAIN,
                                          lambda _: None), url)  # fmt: skip
    refit = RefitApart.start(study, DATA, TRAIN, url, log=lambda _: None)
    return {"forked": refit.pid is not None, "same": refit.result() == kept}


def case_killed(folder: Path) -> dict:
    study, url = swept(folder)
    refit = RefitApart.start(study, DATA, TRAIN, url, log=lambda _: None)
    os.kill(refit.pid, signal.SIGKILL)
    record = refit.result()
    return {"trial": record["trial"], "best": best_trial_with_weights(study).number,
            "stored": stored(study) == record}  # fmt: skip


def case_overtaken(folder: Path) -> dict:
    study, url = swept(folder)
    first = best_trial_with_weights(study)
    refit = RefitApart.start(study, DATA, TRAIN, url, log=lambda _: None)
    # A last pass's trial beats it while the child trains.
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.COMPLETE, value=1.0, params=first.params,
        distributions=first.distributions,
        user_attrs={**first.user_attrs, "best_val_accuracy": 1.0},
    ))  # fmt: skip
    newest = best_trial_with_weights(study)
    record = refit.result()
    return {"first": first.number, "newest": newest.number, "trial": record["trial"],
            "stored_trial": stored(study)["trial"]}  # fmt: skip


if __name__ == "__main__":
    root = Path(sys.argv[1])
    cases = {"child": case_child, "already": case_already, "killed": case_killed,
             "overtaken": case_overtaken}  # fmt: skip
    print(json.dumps({name: case(root / name) for name, case in cases.items()}))
