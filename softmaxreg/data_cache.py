"""A cache of verified, normalised splits, memory-mapped so every process shares its pages.

    cache = SplitCache.for_raw_dir(raw_dir, key={"dataset": "mnist", ...}, split_seed=0)
    tensors = cache.load(raw_files)          # None: missing, stale or damaged (cache.reason)
    cache.store(tensors, raw_files, checksum, log=print)   # after verifying the raw files

Verifying MNIST means hashing 55 MB and decoding it; normalising and splitting it copies 400 MB.
A second run should pay none of that, so `softmaxreg.data.load_splits` keeps the result here:
one file per dataset and split seed holding the training images already permuted by the split
(validation rows first, so both the validation and the training split are contiguous slices
whatever --val-size), the test images, and the labels, as float32/int64 tensors saved with
`torch.save` and loaded with `torch.load(mmap=True)`. Loading maps the file: no copy, and the
pages are the page cache's, shared by every worker and every other run on the machine.

The raw files stay the verified source. The cache records each raw file's size, mtime and
inode as they were when the files were verified, the dataset's checksum and what the spec
expects (name, MD5s, counts, normalisation); it is used only if all of that still matches, its
tensors have the recorded shapes and dtypes, and a sample of its rows equals the same rows
decoded afresh from the raw files. Anything else (a raw file touched or replaced, a truncated
or foreign cache file, another version of this format) rebuilds it from the raw files after
verifying them again. It lives beside the raw files (`<data root>/<Dataset>/softmaxreg-cache/`),
or under `$XDG_CACHE_HOME/softmaxreg` (default `~/.cache`) when the data folder is read-only;
when neither can be written, or the disk is full, the data is used without a cache and one line
says why (`disk full: data cache … not written; running without it …`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from softmaxreg.disk_full import is_disk_full

FORMAT_VERSION = 1
CACHE_FOLDER = "softmaxreg-cache"
TENSORS = ("train_x", "train_y", "test_x", "test_y")
"""train_* hold the whole training file permuted by the split: validation rows first."""


def file_stamp(path: Path) -> list[int]:
    """What changes when a file is rewritten or replaced: size, mtime (ns) and inode."""
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns, stat.st_ino]


def file_mode_from_umask() -> int:
    """0666 less the process's umask: the mode `open()` gives a new file."""
    mask = os.umask(0o022)  # the only portable way to read it is to set it
    os.umask(mask)
    return 0o666 & ~mask


def user_cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "softmaxreg"


def writable_folder(folder: Path) -> bool:
    """Can and may we write in `folder` (created if missing)? A parent without write bits counts
    as read-only even for root, who could write there: such a data folder is shared on purpose."""
    parent = folder if folder.exists() else folder.parent
    if not parent.is_dir() or not parent.stat().st_mode & 0o222 or not os.access(parent, os.W_OK):
        return False
    try:
        folder.mkdir(exist_ok=True)
    except OSError:
        return False
    return True


class SplitCache:
    """One dataset's normalised, split-permuted tensors for one split seed, in one file."""

    def __init__(self, path: Path, key: Mapping[str, object]) -> None:
        self.path = path
        self.key = dict(key)
        self.reason = ""
        """Why the last `load` found nothing usable (for the log line of a rebuild)."""

    @classmethod
    def for_raw_dir(cls, raw_dir: Path, key: Mapping[str, object], split_seed: int) -> SplitCache:
        """The cache beside `raw_dir`, or in the user's cache folder if that is read-only."""
        name = f"{key['dataset']}-split{split_seed}-v{FORMAT_VERSION}.pt"
        beside = raw_dir.parent / CACHE_FOLDER
        if writable_folder(beside):
            return cls(beside / name, {**key, "split_seed": split_seed})
        where = hashlib.sha1(str(raw_dir.resolve()).encode()).hexdigest()[:16]
        return cls(user_cache_root() / where / name, {**key, "split_seed": split_seed})

    def load(self, raw_files: Mapping[str, Path]) -> tuple[dict[str, torch.Tensor], str] | None:
        """(tensors, dataset checksum) if the cache matches the raw files as verified; else None
        with `reason` set. Never raises for a bad cache: a bad cache is only a cache miss."""
        if not self.path.is_file():
            self.reason = "none yet"
            return None
        try:
            stamps = {name: file_stamp(path) for name, path in raw_files.items()}
            saved = torch.load(self.path, mmap=True, weights_only=True, map_location="cpu")
            meta = json.loads(saved["meta"])
        except Exception as error:  # a truncated or foreign file: torch, zip, json errors
            self.reason = f"unreadable ({type(error).__name__})"
            return None
        if meta.get("key") != self.key:
            self.reason = "made for other settings"
        elif meta.get("stamps") != stamps:
            self.reason = "the raw files changed since it was made"
        elif not self._shapes_match(saved, meta):
            self.reason = "its tensors are not the recorded shapes"
        else:
            return {name: saved[name] for name in TENSORS}, meta["checksum"]
        return None

    @staticmethod
    def _shapes_match(saved: Mapping[str, object], meta: Mapping[str, object]) -> bool:
        shapes = meta.get("shapes", {})
        return all(
            isinstance(saved.get(name), torch.Tensor)
            and list(saved[name].shape) == shapes.get(name)
            and str(saved[name].dtype) == meta.get("dtypes", {}).get(name)
            for name in TENSORS
        )

    def store(
        self,
        tensors: Mapping[str, torch.Tensor],
        stamps: Mapping[str, list[int]],
        checksum: str,
        log: Callable[[str], None] | None,
    ) -> dict[str, torch.Tensor]:
        """Write the cache atomically and return its tensors memory-mapped (the in-memory copies
        can then be freed); if it cannot be written, say why once and return `tensors`."""
        meta = {
            "key": self.key,
            "stamps": dict(stamps),
            "checksum": checksum,
            "shapes": {name: list(tensors[name].shape) for name in TENSORS},
            "dtypes": {name: str(tensors[name].dtype) for name in TENSORS},
        }
        try:
            self._write(meta, tensors)
        except (OSError, RuntimeError) as error:  # torch.save's RuntimeError wraps an OSError
            if not isinstance(error, OSError) and not is_disk_full(error):
                raise
            if log is not None:
                log(f"note: {cache_not_written(self.path, error)}")
            return dict(tensors)
        loaded = self.load_unchecked()
        return loaded if loaded is not None else dict(tensors)

    def _write(self, meta: Mapping[str, object], tensors: Mapping[str, torch.Tensor]) -> None:
        """Save to a temporary file beside the cache, then move it into place: cut off (a full
        disk), nothing is left but the old cache, if any."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        os.fchmod(handle, file_mode_from_umask())  # mkstemp's 0600 would hide it from others
        try:
            # Through our own file object: a full disk then surfaces as the OSError (ENOSPC)
            # behind torch's RuntimeError, which a file name would hide inside torch's C++.
            with os.fdopen(handle, "wb") as file:
                torch.save({"meta": json.dumps(meta), **tensors}, file)
            os.replace(temporary, self.path)
        finally:
            Path(temporary).unlink(missing_ok=True)

    def load_unchecked(self) -> dict[str, torch.Tensor] | None:
        try:
            saved = torch.load(self.path, mmap=True, weights_only=True, map_location="cpu")
        except Exception:
            return None
        return {name: saved[name] for name in TENSORS}


def cache_not_written(path: Path, error: BaseException) -> str:
    """Why the cache was not written, in one line. A full disk is worth running on without the
    cache: the data is verified and in memory, and the only cost is the next run's
    verification (seconds); stopping would throw a sweep away for an optimisation."""
    if is_disk_full(error):
        return (
            f"disk full: data cache {path} not written; running without it (free space there "
            "and the next run writes it)"
        )
    reason = error.strerror if isinstance(error, OSError) and error.strerror else error
    return f"data cache not written ({path}: {reason})"
