"""Values that cannot work are refused before anything is created or loaded: exit 2, the flag
named as the user typed it, the working folder left empty."""

from __future__ import annotations

import pytest

from experiments.config import check_train_config
from experiments.sweep import parse_args
from experiments.train import main as train_main
from softmaxreg.config import TRAIN_SET_SIZE
from softmaxreg.data import DATASETS
from tests.services import assert_sweep_refuses

BAD_VALUES = [
    (["--batch-sizes", "64", "100000"], "--batch-sizes (100000,) is invalid"),
    (["--batch-sizes", "55001"], "batch sizes up to 55000"),
    (["--val-size", "20000", "--batch-sizes", "40001"], "batch sizes up to 40000"),
    (["--val-size", "60000"], "--val-size 60000 is invalid"),
    (["--val-size", "0"], "--val-size 0 is invalid"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_the_sweep_refuses_values_the_data_cannot_take(
    argv, message, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert_sweep_refuses(argv, message, tmp_path, capsys)


def test_a_batch_as_large_as_the_training_split_is_accepted():
    _, sweep, train, data = parse_args(["--batch-sizes", "55000", "--population", "1"])
    check_train_config(sweep, train, data)  # full batch, exactly: allowed


def test_training_alone_refuses_a_validation_split_of_the_whole_set(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--val-size", "60000", "--data-root", str(tmp_path / "data")])
    assert exit_info.value.code == 2
    assert "--val-size 60000 is invalid" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_every_dataset_has_the_training_set_size_the_checks_assume():
    assert {spec.train_count for spec in DATASETS.values()} == {TRAIN_SET_SIZE}
