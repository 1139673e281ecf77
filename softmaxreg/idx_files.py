"""IDX files (the MNIST family's raw format): writing them, checking their structure and MD5s,
reading them as tensors. Every check raises `DataError` naming the file and what was expected.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch

from softmaxreg.data_cache import file_mode_from_umask
from softmaxreg.datasets import RAW_FILES, DataError, DatasetSpec

IMAGE_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABEL_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def read_idx(path: Path, *, images: bool) -> torch.Tensor:
    """A verified IDX file as a tensor: uint8 (N, 28, 28) images or int64 (N,) labels."""
    array = np.fromfile(path, dtype=np.uint8, offset=16 if images else 8)
    tensor = torch.from_numpy(array)
    return tensor.reshape(-1, 28, 28) if images else tensor.long()


def spec_count(raw_dir: Path) -> int:
    """Training examples in a verified folder (from its labels file's header)."""
    with (raw_dir / RAW_FILES[1]).open("rb") as handle:
        return struct.unpack(">II", handle.read(8))[1]
