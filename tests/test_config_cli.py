"""Config validation, and the command line derived from the config dataclasses.

Every invalid value must raise `ConfigError` naming the field; the CLI must show each field's
docstring and true default in `--help`, and turn a bad or unknown flag into exit status 2 with a
message naming the flag (here in-process through `experiments.train.main`; the real
`python -m experiments.train` process is exercised in test_train_cli.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re

import pytest

from experiments import train as train_entry
from softmaxreg.cli import add_dataclass_arguments, dataclass_from_args, field_docstrings
from softmaxreg.config import ConfigError, DataConfig, TrainConfig

INVALID_TRAIN_VALUES = [
    ("batch_size", 0),
    ("batch_size", -1),
    ("batch_size", 1.5),
    ("batch_size", True),
    ("batch_size", "100"),
    ("lr", 0),
    ("lr", -1),
    ("lr", math.nan),
    ("lr", math.inf),
    ("lr", True),
    ("lr", 1e39),  # beyond float32: torch could not apply the step
    ("epochs", 0),
    ("epochs", 2.0),
    ("momentum", 1.0),
    ("momentum", -0.1),
    ("momentum", math.nan),
    ("momentum", True),
    ("weight_decay", -1),
    ("weight_decay", math.nan),
    ("weight_decay", math.inf),
    ("weight_decay", True),
    ("seed", -1),
    ("seed", 2**64),  # beyond torch's seed range: would fail only once training starts
    ("seed", 1.0),
    ("device", "tpu"),
    ("device", "cuda:0"),
    ("target_accuracy", 0),
    ("target_accuracy", 1.5),
    ("target_accuracy", math.nan),
    ("target_accuracy", True),
    ("model", "x"),
    ("lr_schedule", "step"),
    ("lr_schedule", "Cosine"),
    ("warmup_steps", -1),
    ("warmup_steps", 1.5),
    ("threads", -1),
    ("threads", True),
]

INVALID_DATA_VALUES = [
    ("dataset", "cifar"),
    ("dataset", "MNIST"),
    ("val_size", 0),
    ("val_size", -5),
    ("val_size", 10.0),
    ("split_seed", -1),
    ("split_seed", 2**64),
    ("data_root", None),
]


@pytest.mark.parametrize(("field", "value"), INVALID_TRAIN_VALUES, ids=repr)
def test_invalid_train_config_value_raises_config_error_naming_the_field(field, value):
    with pytest.raises(ConfigError) as raised:
        TrainConfig(**{field: value})
    assert str(raised.value).startswith(f"{field}={value!r} is invalid: expected ")


@pytest.mark.parametrize(("field", "value"), INVALID_DATA_VALUES, ids=repr)
def test_invalid_data_config_value_raises_config_error_naming_the_field(field, value):
    with pytest.raises(ConfigError) as raised:
        DataConfig(**{field: value})
    assert str(raised.value).startswith(f"{field}={value!r} is invalid: expected ")


@pytest.mark.parametrize(
    "overrides",
    [
        {"batch_size": 1, "lr": 1e-9, "epochs": 1},
        {"momentum": 0.0, "weight_decay": 0.0, "seed": 0},
        {"momentum": 0.99, "weight_decay": 5, "seed": 2**64 - 1},
        {"target_accuracy": 1.0, "lr": 3, "device": "cpu", "model": "tutorial_double_softmax"},
    ],
)
def test_valid_edge_values_are_accepted(overrides):
    config = TrainConfig(**overrides)
    for field, value in overrides.items():
        assert getattr(config, field) == value


def test_defaults_are_the_tutorials_and_configs_are_frozen():
    config = TrainConfig()
    assert (config.batch_size, config.lr, config.epochs) == (100, 0.1, 10)
    assert (config.momentum, config.weight_decay, config.model) == (0.0, 0.0, "logits")
    assert config.device == "auto"
    assert DataConfig().val_size == 5000 and DataConfig().dataset == "mnist"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("cls", [TrainConfig, DataConfig])
def test_every_field_has_a_docstring(cls):
    docs = field_docstrings(cls)
    for field in dataclasses.fields(cls):
        assert len(docs.get(field.name, "")) > 10, f"{cls.__name__}.{field.name} has no docstring"


@pytest.fixture
def help_text(monkeypatch, capsys) -> str:
    """`python -m experiments.train --help`, one line per flag (wide terminal, no wrapping)."""
    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit) as exited:
        train_entry.main(["--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def help_by_flag(help_text: str) -> dict[str, str]:
    """Each option's entry in --help (its line plus argparse's indented continuation lines)."""
    entries: dict[str, str] = {}
    flag = None
    for line in help_text.splitlines():
        if line.startswith("  -"):
            flag = line.split()[0].rstrip(",")
            entries[flag] = line.strip()
        elif flag is not None and line.startswith("    "):
            entries[flag] += " " + line.strip()
        else:
            flag = None
    return entries


@pytest.mark.parametrize("cls", [TrainConfig, DataConfig])
def test_help_shows_every_field_docstring_and_its_true_default(help_text, cls):
    docs = field_docstrings(cls)
    entries = help_by_flag(help_text)
    for field in dataclasses.fields(cls):
        flag = "--" + field.name.replace("_", "-")
        assert flag in entries, f"{flag} not in --help"
        assert docs[field.name] in entries[flag], f"{flag}: docstring missing from --help"
        shown = re.search(r"\(default: ([^)]*)\)$", entries[flag])
        if field.default in ("", ()):  # no "(default: )": the docstring says what empty means
            assert shown is None, f"{flag}: --help shows an empty default"
            assert "mpty" in docs[field.name], f"{flag}: its docstring does not explain empty"
            continue
        assert shown is not None, f"{flag}: no default shown"
        assert shown.group(1) == str(field.default), f"{flag}: --help shows another default"


def parse(cls, argv: list[str]):
    parser = argparse.ArgumentParser(prog="test")
    add_dataclass_arguments(parser, cls)
    return dataclass_from_args(parser, cls, parser.parse_args(argv))


def test_no_flags_give_the_dataclass_defaults_and_flags_set_fields():
    assert parse(TrainConfig, []) == TrainConfig()
    assert parse(DataConfig, []) == DataConfig()
    flags = {
        "--batch-size": "250",
        "--lr": "0.05",
        "--epochs": "3",
        "--momentum": "0.9",
        "--weight-decay": "1e-4",
        "--seed": "7",
        "--device": "cpu",
        "--target-accuracy": "0.9",
        "--model": "tutorial_double_softmax",
    }
    config = parse(TrainConfig, [token for pair in flags.items() for token in pair])
    assert config == TrainConfig(
        batch_size=250,
        lr=0.05,
        epochs=3,
        momentum=0.9,
        weight_decay=1e-4,
        seed=7,
        device="cpu",
        target_accuracy=0.9,
        model="tutorial_double_softmax",
    )
    data = parse(DataConfig, ["--dataset", "kmnist", "--data-root", "/x", "--val-size", "10"])
    assert data == DataConfig(dataset="kmnist", data_root="/x", val_size=10)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--batch-size", "0"], "--batch-size 0 is invalid: expected an integer >= 1"),
        (["--batch-size", "1.5"], "argument --batch-size: invalid int value: '1.5'"),
        (["--lr", "nan"], "--lr nan is invalid: expected a finite number > 0"),
        (["--lr", "-0.1"], "--lr -0.1 is invalid"),
        (["--momentum", "1"], "--momentum 1.0 is invalid: expected a number in [0, 1)"),
        (["--epochs", "0"], "--epochs 0 is invalid"),
        (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
        (["--lr-schedule", "step"], "argument --lr-schedule: invalid choice: 'step'"),
        (["--warmup-steps", "-1"], "--warmup-steps -1 is invalid: expected an integer >= 0"),
        (["--threads", "-2"], "--threads -2 is invalid: expected an integer >= 0"),
        (["--dataset", "cifar"], "argument --dataset: invalid choice: 'cifar'"),
        (["--val-size", "0"], "--val-size 0 is invalid"),
        (["--target-accuracy", "2"], "--target-accuracy 2.0 is invalid"),
        (["--no-such-flag", "3"], "unrecognized arguments: --no-such-flag 3"),
        (["--lr"], "argument --lr: expected one argument"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(capsys, argv, expected, tmp_path):
    # The data root holds one corrupt file: had a bad value slipped through parsing, loading
    # would stop at once with status 1 (and no download), so status 2 shows the flag was
    # rejected before any work started.
    raw_dir = tmp_path / "MNIST" / "raw"
    raw_dir.mkdir(parents=True)
    (raw_dir / "train-images-idx3-ubyte").write_bytes(b"not an IDX file")
    with pytest.raises(SystemExit) as exited:
        train_entry.main([*argv, "--data-root", str(tmp_path)])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert expected in captured.err
    assert captured.out == ""
    assert [p.name for p in raw_dir.iterdir()] == ["train-images-idx3-ubyte"]


@dataclasses.dataclass(frozen=True)
class PercentConfig:
    """A config whose docstrings use the percent sign, which argparse treats as formatting."""

    keep_share: float = 0.5
    """Share of trials to keep, e.g. 50% of them."""

    label: str = "100%"
    """A default that itself has a percent sign."""


def test_percent_signs_in_docstrings_and_defaults_show_literally_in_help():
    parser = argparse.ArgumentParser(prog="test", formatter_class=wide_help)
    add_dataclass_arguments(parser, PercentConfig)
    entries = help_by_flag(parser.format_help())
    assert entries["--keep-share"].endswith("e.g. 50% of them. (default: 0.5)")
    assert entries["--label"].endswith("percent sign. (default: 100%)")
    assert parse(PercentConfig, ["--keep-share", "0.25"]) == PercentConfig(keep_share=0.25)


def wide_help(prog: str) -> argparse.HelpFormatter:
    return argparse.HelpFormatter(prog, width=1000, max_help_position=1000)
