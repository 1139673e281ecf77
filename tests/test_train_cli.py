"""`python -m experiments.train`: exit codes, messages, and one real run.

Bad flags exit 2 naming the flag; a bad data folder exits 1 naming the bad file, fast and without
any download (a present file that fails verification is reported before any source is tried).
The three real processes start together, because each spends seconds importing torch and
torchvision; the other cases call `main()` in-process, which runs the same code after imports.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments import train as train_entry
from softmaxreg.data import DATA_ENV_VAR

REPO_ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_SECONDS = 120
GZIP_BYTES = gzip.compress(b"a gzip left under the uncompressed name")


def start(argv: list[str], **env: str) -> subprocess.Popen[str]:
    environment = {k: v for k, v in os.environ.items() if k != DATA_ENV_VAR}
    environment.update(env)
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.train", *argv],
        cwd=REPO_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def bad_data_root(root: Path) -> Path:
    """A data folder whose only MNIST file is a gzip under the uncompressed name."""
    raw_dir = root / "MNIST" / "raw"
    raw_dir.mkdir(parents=True)
    bad_file = raw_dir / "train-images-idx3-ubyte"
    bad_file.write_bytes(GZIP_BYTES)
    return bad_file


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[subprocess.Popen[str], Path | None]]:
    """Every process of this module, started at once; each test waits for its own."""
    root = tmp_path_factory.mktemp("bad-root")
    bad_file = bad_data_root(root)
    data_root = ["--data-root", str(root)]
    return {
        "invalid_value": (start(["--batch-size", "0", *data_root]), bad_file),
        "unknown_flag": (start(["--no-such-flag", "1", *data_root]), bad_file),
        "bad_data_folder": (start(["--epochs", "1", *data_root]), bad_file),
    }


def finish(runs, name: str) -> tuple[int, str, str, Path | None]:
    process, bad_file = runs[name]
    out, err = process.communicate(timeout=TIMEOUT_SECONDS)
    return process.returncode, out, err, bad_file


def test_invalid_flag_value_exits_2_naming_the_flag(runs):
    code, out, err, bad_file = finish(runs, "invalid_value")
    assert code == 2
    assert "error: --batch-size 0 is invalid: expected an integer >= 1" in err
    assert "usage: python -m experiments.train" in err
    assert out == "" and bad_file.read_bytes() == GZIP_BYTES


def test_unknown_flag_exits_2_naming_the_flag(runs):
    code, out, err, _ = finish(runs, "unknown_flag")
    assert code == 2
    assert "error: unrecognized arguments: --no-such-flag 1" in err
    assert out == ""


def test_a_bad_data_folder_exits_1_naming_the_file_before_training(runs):
    code, out, err, bad_file = finish(runs, "bad_data_folder")
    assert code == 1
    assert f"error: {bad_file}: wrong magic number 0x1f8b08" in err
    assert "expected 0x00000803" in err
    assert "fetching" not in err, "a bad present file must be reported, not fetched over"
    assert out == ""  # no training, no table
    assert bad_file.read_bytes() == GZIP_BYTES, "the user's file must be left as it was"
    assert sorted(p.name for p in bad_file.parent.iterdir()) == [bad_file.name]


def test_the_data_folder_comes_from_the_environment(monkeypatch, capsys, tmp_path):
    bad_file = bad_data_root(tmp_path)
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path))
    with pytest.raises(SystemExit) as exited:
        train_entry.main(["--epochs", "1"])
    assert exited.value.code == 1
    captured = capsys.readouterr()
    assert f"error: {bad_file}: wrong magic number" in captured.err
    assert captured.out == "" and bad_file.read_bytes() == GZIP_BYTES


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA exists on this machine")
def test_a_missing_device_exits_2_with_a_clear_message(capsys, tmp_path):
    bad_file = bad_data_root(tmp_path)
    with pytest.raises(SystemExit) as exited:
        train_entry.main(["--device", "cuda", "--data-root", str(tmp_path)])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert "error: device 'cuda' was requested but CUDA is not available" in captured.err
    assert "--device cpu" in captured.err
    assert captured.out == "" and bad_file.read_bytes() == GZIP_BYTES


@pytest.mark.real_data
def test_one_epoch_on_real_mnist_prints_the_table(real_mnist_root, capsys):
    code = train_entry.main(["--epochs", "1", "--data-root", str(real_mnist_root)])
    assert code == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].startswith("device ") and ", dataset mnist, checksum " in lines[0]
    assert lines[1].split() == ["epoch", "train", "loss", "val", "acc", "test", "acc", "epoch", "s"]
    epoch, train_loss, val_accuracy, test_accuracy, seconds = lines[2].split()[:5]
    assert epoch == "1" and lines[2].endswith("(warm-up)")
    assert 0.2 < float(train_loss) < 0.6  # one epoch of the tutorial's settings
    assert 0.88 < float(val_accuracy) <= 1 and 0.88 < float(test_accuracy) <= 1
    assert float(seconds) > 0
    assert lines[3].startswith("final test accuracy ")
    assert "epochs" in captured.err  # the progress bar goes to stderr


def test_help_groups_are_titled_as_in_the_sweep(capsys):
    """train's --help groups read like the sweep's ("training", "data"), not class names."""
    from experiments import sweep as sweep_entry

    titles = {}
    for name, entry in (("train", train_entry), ("sweep", sweep_entry)):
        with pytest.raises(SystemExit):
            entry.main(["--help"])
        titles[name] = {line for line in capsys.readouterr().out.splitlines() if line[:1].isalpha()}
    assert {"training:", "data:"} <= titles["train"]
    assert "data:" in titles["sweep"]
    assert not any("Config" in title for title in titles["train"] | titles["sweep"])
