"""The verified-splits cache: used only while it matches the raw files, rebuilt otherwise.

Each test writes a small synthetic MNIST folder (genuine IDX files), loads it once to build the
cache, then changes one thing (a raw file, the cache file, the folder's permissions) and loads
again: the result must always equal what the raw files decode to, and a note must say when and
why the cache was rebuilt.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from softmaxreg.data import DataError, load_splits
from softmaxreg.data_cache import CACHE_FOLDER
from softmaxreg.synthetic import write_synthetic_idx

VAL_SIZE = 50


@pytest.fixture
def folder(tmp_path):
    raw_dir, spec = write_synthetic_idx(tmp_path / "data", n_train=300, n_test=60)
    return tmp_path / "data", raw_dir, spec


def load(spec, root, notes: list[str] | None = None, **kwargs):
    log = notes.append if notes is not None else None
    return load_splits(spec, root, val_size=VAL_SIZE, sources=("local",), log=log, **kwargs)


def cache_files(raw_dir: Path) -> list[Path]:
    return sorted((raw_dir.parent / CACHE_FOLDER).glob("*.pt"))


def mapped_files(tensor: torch.Tensor) -> set[str]:
    """Files whose mapping holds the tensor's first byte (from /proc/self/maps)."""
    address = tensor.untyped_storage().data_ptr()
    found = set()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        low, high = (int(part, 16) for part in fields[0].split("-"))
        if low <= address < high and len(fields) == 6:
            found.add(fields[5])
    return found


def replace_file(path: Path, data: bytes) -> None:
    """Damage a cache at rest: a new file in its place. Rewriting it in place would pull the
    pages from under the earlier load's mapping (SIGBUS), which no process of ours does."""
    fresh = path.with_suffix(".new")
    fresh.write_bytes(data)
    os.replace(fresh, path)


def assert_same_splits(first, second) -> None:
    for name in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name
    assert first.checksum == second.checksum


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_a_second_load_maps_the_cache_and_equals_the_first(folder):
    root, raw_dir, spec = folder
    notes: list[str] = []
    first = load(spec, root, notes)
    [cache] = cache_files(raw_dir)
    again = load(spec, root, notes)

    assert_same_splits(first, again)
    assert notes == []  # built silently the first time, used silently the second
    assert str(cache) in mapped_files(again.train_x)


def test_another_val_size_reuses_the_cache_and_another_seed_gets_its_own(folder):
    root, raw_dir, spec = folder
    load(spec, root)
    wider = load_splits(spec, root, val_size=80, sources=("local",))
    assert len(wider.val_y) == 80 and len(wider.train_y) == 220
    assert len(cache_files(raw_dir)) == 1
    seeded = load(spec, root, split_seed=3)
    assert len(cache_files(raw_dir)) == 2
    assert not torch.equal(seeded.val_y, load(spec, root).val_y)


def test_a_touched_raw_file_rebuilds_the_cache(folder):
    root, raw_dir, spec = folder
    first = load(spec, root)
    labels = raw_dir / "train-labels-idx1-ubyte"
    stat = labels.stat()
    os.utime(labels, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    notes: list[str] = []
    assert_same_splits(first, load(spec, root, notes))
    assert len(notes) == 1 and "the raw files changed" in notes[0]


def test_a_raw_file_damaged_after_caching_is_refused_not_served_from_the_cache(folder):
    root, raw_dir, spec = folder
    load(spec, root)
    images = raw_dir / "t10k-images-idx3-ubyte"
    damaged = bytearray(images.read_bytes())
    damaged[100] ^= 0xFF
    images.write_bytes(bytes(damaged))
    with pytest.raises(DataError, match="MD5") as raised:
        load(spec, root)
    assert str(images) in str(raised.value)


def test_a_truncated_cache_is_rebuilt(folder):
    root, raw_dir, spec = folder
    first = load(spec, root)
    [cache] = cache_files(raw_dir)
    replace_file(cache, cache.read_bytes()[: cache.stat().st_size // 2])
    notes: list[str] = []
    assert_same_splits(first, load(spec, root, notes))
    assert len(notes) == 1 and "unreadable" in notes[0] and str(cache) in notes[0]


def test_a_cache_holding_other_images_is_detected_and_rebuilt(folder):
    """Same metadata, other pixels (as if another folder's cache were copied in): the sampled
    rows no longer match the raw files."""
    root, raw_dir, spec = folder
    first = load(spec, root)
    [cache] = cache_files(raw_dir)
    saved = torch.load(cache, weights_only=True)
    saved["train_x"] = saved["train_x"].flip(0).clone()
    saved["test_x"] = saved["test_x"] + 1.0
    torch.save(saved, cache.with_suffix(".new"))
    os.replace(cache.with_suffix(".new"), cache)
    notes: list[str] = []
    assert_same_splits(first, load(spec, root, notes))
    assert len(notes) == 1 and "differ from the raw files" in notes[0]


def test_a_read_only_data_folder_caches_under_the_user_cache(folder, tmp_path, monkeypatch):
    root, raw_dir, spec = folder
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    raw_dir.parent.chmod(0o555)
    try:
        first = load(spec, root)
        again = load(spec, root)
    finally:
        raw_dir.parent.chmod(0o755)
    assert_same_splits(first, again)
    assert not (raw_dir.parent / CACHE_FOLDER).exists()
    assert list((tmp_path / "user-cache" / "softmaxreg").rglob("*.pt"))


def test_the_cache_file_honours_the_umask(folder):
    """Under umask 022 a colleague on a shared machine can read the cache, as any file open()
    makes (mkstemp alone would leave it 0600)."""
    root, raw_dir, spec = folder
    previous = os.umask(0o022)
    try:
        load(spec, root)
    finally:
        os.umask(previous)
    (cache,) = cache_files(raw_dir)
    assert cache.stat().st_mode & 0o777 == 0o644
