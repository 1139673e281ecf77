"""The data loader on small IDX files written here, read through torchvision's real code.

Every test builds its own data folder with `write_synthetic_idx` (genuine IDX files in
torchvision's layout plus a `DatasetSpec` whose MD5s match them), so the whole path runs:
verification, `.gz` decompression, torchvision's MNIST class, split, normalisation. Corruption
tests damage one file and check three things: the error is a `DataError`, it names the file and
what was expected, and the user's bytes are still exactly what they were.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.server
import io
import os
import stat
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torchvision import transforms
from torchvision.datasets.mnist import read_image_file, read_label_file

from softmaxreg.data import (
    DATA_ENV_VAR,
    DATASETS,
    RAW_FILES,
    DataError,
    DatasetSpec,
    ensure_raw_files,
    load_splits,
)
from softmaxreg.data_cache import CACHE_FOLDER
from softmaxreg.data_sources import _csv_to_idx
from softmaxreg.datasets import resolve_data_root
from softmaxreg.idx_files import idx_bytes, md5_of, write_atomically, write_idx
from softmaxreg.synthetic import synthetic_images, write_synthetic_idx

N_TRAIN, N_TEST, VAL_SIZE = 300, 60, 50
TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS = RAW_FILES


@pytest.fixture
def synthetic_folder(tmp_path) -> tuple[Path, Path, DatasetSpec]:
    """(data root, raw folder, spec) of a small, valid synthetic MNIST folder."""
    raw_dir, spec = write_synthetic_idx(tmp_path / "data", n_train=N_TRAIN, n_test=N_TEST)
    return tmp_path / "data", raw_dir, spec


def reference_tensors(root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The tutorial's way: torchvision's MNIST with ToTensor + Normalize, one image at a time."""
    dataset = torchvision.datasets.MNIST(
        str(root),
        train=train,
        transform=transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]
        ),
    )
    images = torch.stack([dataset[i][0].flatten() for i in range(len(dataset))])
    labels = torch.tensor([dataset[i][1] for i in range(len(dataset))])
    return images, labels


def row_indices(rows: torch.Tensor, reference: torch.Tensor) -> list[int]:
    """Index in `reference` of each row of `rows` (exact match; synthetic images are unique)."""
    index_of = {row.numpy().tobytes(): i for i, row in enumerate(reference)}
    assert len(index_of) == len(reference), "synthetic images should be distinct"
    return [index_of[row.numpy().tobytes()] for row in rows]


def folder_bytes(raw_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(raw_dir.iterdir())}


# --------------------------------------------------------------------------------------------
# Loading valid files
# --------------------------------------------------------------------------------------------


def test_load_splits_shapes_dtypes_and_checksum(synthetic_folder):
    root, raw_dir, spec = synthetic_folder
    splits = load_splits(spec, root, val_size=VAL_SIZE, sources=("local",))

    assert splits.train_x.shape == (N_TRAIN - VAL_SIZE, 784)
    assert splits.val_x.shape == (VAL_SIZE, 784)
    assert splits.test_x.shape == (N_TEST, 784)
    for x in (splits.train_x, splits.val_x, splits.test_x):
        assert x.dtype == torch.float32 and x.device == torch.device("cpu")
    assert splits.train_y.shape == (N_TRAIN - VAL_SIZE,)
    assert splits.val_y.shape == (VAL_SIZE,)
    assert splits.test_y.shape == (N_TEST,)
    for y in (splits.train_y, splits.val_y, splits.test_y):
        assert y.dtype == torch.int64  # what F.cross_entropy wants
    assert splits.name == spec.name
    assert (splits.mean, splits.std) == (0.1307, 0.3081)
    # The checksum is the MD5 over the four raw files' MD5s, in RAW_FILES order.
    expected = hashlib.md5("".join(md5_of(raw_dir / n) for n in RAW_FILES).encode()).hexdigest()
    assert splits.checksum == expected


def test_normalisation_and_labels_equal_torchvision_transforms(synthetic_folder):
    """Every row equals ToTensor()+Normalize((0.1307,), (0.3081,)) applied by torchvision."""
    root, _, spec = synthetic_folder
    splits = load_splits(spec, root, val_size=VAL_SIZE, sources=("local",))

    test_images, test_labels = reference_tensors(root, train=False)
    torch.testing.assert_close(splits.test_x, test_images, rtol=0, atol=1e-6)
    assert torch.equal(splits.test_y, test_labels)

    train_images, train_labels = reference_tensors(root, train=True)
    for x, y in ((splits.train_x, splits.train_y), (splits.val_x, splits.val_y)):
        indices = row_indices(x, train_images)
        torch.testing.assert_close(x, train_images[indices], rtol=0, atol=1e-6)
        assert torch.equal(y, train_labels[indices])


def test_split_is_disjoint_complete_and_seeded(synthetic_folder):
    root, _, spec = synthetic_folder
    train_images, _ = reference_tensors(root, train=True)

    def split(seed: int, val_size: int = VAL_SIZE) -> tuple[list[int], list[int]]:
        splits = load_splits(spec, root, val_size=val_size, split_seed=seed, sources=("local",))
        return row_indices(splits.train_x, train_images), row_indices(splits.val_x, train_images)

    train_idx, val_idx = split(seed=0)
    assert len(val_idx) == VAL_SIZE and len(train_idx) == N_TRAIN - VAL_SIZE
    assert set(train_idx).isdisjoint(val_idx)
    assert set(train_idx) | set(val_idx) == set(range(N_TRAIN))
    # Not simply the last (or first) VAL_SIZE images: the split is shuffled.
    assert sorted(val_idx) != list(range(N_TRAIN - VAL_SIZE, N_TRAIN))
    assert sorted(val_idx) != list(range(VAL_SIZE))

    assert split(seed=0) == (train_idx, val_idx), "same split_seed must give the same split"
    _, other_val = split(seed=1)
    assert set(other_val) != set(val_idx), "a different split_seed must give another split"
    assert len(split(seed=0, val_size=120)[1]) == 120


@pytest.mark.parametrize("val_size", [0, N_TRAIN, N_TRAIN + 1])
def test_val_size_outside_the_training_set_is_rejected(synthetic_folder, val_size):
    root, _, spec = synthetic_folder
    with pytest.raises(DataError, match=f"val_size={val_size}"):
        load_splits(spec, root, val_size=val_size, sources=("local",))


def test_gz_files_are_decompressed_by_the_local_source(synthetic_folder, tmp_path):
    root, raw_dir, spec = synthetic_folder
    expected = load_splits(spec, root, val_size=VAL_SIZE, sources=("local",))

    gz_root = tmp_path / "gz-data"
    gz_raw = spec.raw_dir(gz_root)
    gz_raw.mkdir(parents=True)
    for name in RAW_FILES:
        (gz_raw / f"{name}.gz").write_bytes(gzip.compress((raw_dir / name).read_bytes()))
    gz_before = folder_bytes(gz_raw)

    splits = load_splits(spec, gz_root, val_size=VAL_SIZE, sources=("local",))

    for name in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert torch.equal(getattr(splits, name), getattr(expected, name)), name
    assert splits.checksum == expected.checksum
    for name in RAW_FILES:  # decompressed next to the .gz, byte for byte the original
        assert (gz_raw / name).read_bytes() == (raw_dir / name).read_bytes()
    assert {n: (gz_raw / n).read_bytes() for n in gz_before} == gz_before


def test_load_splits_moves_tensors_to_the_requested_device(synthetic_folder):
    root, _, spec = synthetic_folder
    splits = load_splits(spec, root, device="cpu", val_size=VAL_SIZE, sources=("local",))
    assert splits.device == torch.device("cpu")
    moved = splits.to(torch.device("cpu"))
    assert torch.equal(moved.train_x, splits.train_x) and moved.checksum == splits.checksum


def test_data_root_comes_from_the_environment_unless_given(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path / "from-env"))
    assert resolve_data_root(None) == tmp_path / "from-env"
    assert resolve_data_root("") == tmp_path / "from-env"
    assert resolve_data_root(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.delenv(DATA_ENV_VAR)
    assert resolve_data_root(None) == Path("./data")


def test_a_data_root_that_is_a_file_is_named_before_any_source_runs(tmp_path):
    """A file given as --data-root: one DataError naming the folder it cannot create, and the
    file is left as it was (every source, torchvision's download too, would fail on it)."""
    not_a_folder = tmp_path / "data"
    not_a_folder.write_text("my notes")
    with pytest.raises(DataError) as caught:
        ensure_raw_files("mnist", not_a_folder, sources=("local", "torchvision"))
    message = str(caught.value)
    assert f"cannot create the data folder {not_a_folder / 'MNIST' / 'raw'}" in message
    assert "Not a directory" in message and "--data-root" in message
    assert not_a_folder.read_text() == "my notes"


def test_legacy_processed_files_do_not_replace_the_verified_raw_files(synthetic_folder):
    """Old torchvision left MNIST/processed/{training,test}.pt; the verified raw files win."""
    root, raw_dir, spec = synthetic_folder
    processed = raw_dir.parent / "processed"
    processed.mkdir()
    junk = (torch.zeros(7, 28, 28, dtype=torch.uint8), torch.zeros(7, dtype=torch.int64))
    for name in ("training.pt", "test.pt"):
        torch.save(junk, processed / name)

    splits = load_splits(spec, root, val_size=VAL_SIZE, sources=("local",))

    assert splits.train_x.shape[0] + splits.val_x.shape[0] == N_TRAIN
    test_images, test_labels = reference_tensors_from_raw(raw_dir)
    torch.testing.assert_close(splits.test_x, test_images, rtol=0, atol=1e-6)
    assert torch.equal(splits.test_y, test_labels)


def reference_tensors_from_raw(raw_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Test split straight from the raw IDX files with torchvision's readers."""
    images = read_image_file(str(raw_dir / TEST_IMAGES)).reshape(-1, 784).float() / 255
    return (images - 0.1307) / 0.3081, read_label_file(str(raw_dir / TEST_LABELS))


# --------------------------------------------------------------------------------------------
# IDX writing and the PyPI mirror's CSV conversion
# --------------------------------------------------------------------------------------------


def test_idx_bytes_header_and_torchvision_round_trip(tmp_path):
    images, labels = synthetic_images(5, seed=3)
    data = idx_bytes(images)
    assert struct.unpack(">IIII", data[:16]) == (0x00000803, 5, 28, 28)
    assert len(data) == 16 + 5 * 28 * 28
    assert struct.unpack(">II", idx_bytes(labels)[:8]) == (0x00000801, 5)

    write_idx(tmp_path / "images", images)
    write_idx(tmp_path / "labels", labels)
    assert np.array_equal(read_image_file(str(tmp_path / "images")).numpy(), images)
    assert np.array_equal(read_label_file(str(tmp_path / "labels")).numpy(), labels)


def tiny_mirror_csv(images: np.ndarray, labels: np.ndarray) -> bytes:
    """A CSV laid out like the mirror wheel's: a header row, then label and 784 pixels."""
    header = ",".join(["label"] + [f"{r}x{c}" for r in range(1, 29) for c in range(1, 29)])
    rows = [
        ",".join(str(v) for v in [int(label), *image.reshape(-1).tolist()])
        for image, label in zip(images, labels, strict=True)
    ]
    return ("\n".join([header, *rows]) + "\n").encode()


def test_mirror_csv_to_idx_round_trips_exactly(tmp_path):
    images, labels = synthetic_images(7, seed=5)
    images[0, 0, 0], images[1, 27, 27] = 0, 255  # both ends of the byte range
    csv = tiny_mirror_csv(images, labels)

    csv_images, csv_labels = _csv_to_idx(io.BytesIO(csv), 7)

    assert csv_images.dtype == np.uint8 and csv_images.shape == (7, 28, 28)
    assert np.array_equal(csv_images, images) and np.array_equal(csv_labels, labels)
    assert idx_bytes(csv_images) == idx_bytes(images)
    assert idx_bytes(csv_labels) == idx_bytes(labels)
    (tmp_path / "images").write_bytes(idx_bytes(csv_images))
    assert np.array_equal(read_image_file(str(tmp_path / "images")).numpy(), images)


def test_mirror_csv_with_the_wrong_row_count_is_rejected():
    images, labels = synthetic_images(3, seed=5)
    with pytest.raises(DataError, match=r"shape \(3, 785\), expected \(4, 785\)"):
        _csv_to_idx(io.BytesIO(tiny_mirror_csv(images, labels)), 4)


# --------------------------------------------------------------------------------------------
# Checksums and corruption: clear errors, before training, user's bytes untouched
# --------------------------------------------------------------------------------------------


def flip_one_pixel(data: bytes) -> bytes:
    damaged = bytearray(data)
    damaged[100] ^= 0x01  # inside the pixel data: structure intact, content wrong
    return bytes(damaged)


def header_with(data: bytes, **fields: int) -> bytes:
    magic, n, rows, cols = struct.unpack(">IIII", data[:16])
    values = {"magic": magic, "n": n, "rows": rows, "cols": cols, **fields}
    return struct.pack(">IIII", *values.values()) + data[16:]


# (file, how it is damaged, phrases the message must contain: what is wrong and what was expected)
CORRUPTIONS = {
    "wrong_md5": (TRAIN_IMAGES, flip_one_pixel, ["MD5", "does not match the expected"]),
    "truncated": (
        TRAIN_IMAGES,
        lambda d: d[:-100],
        ["truncated", f"expected {16 + N_TRAIN * 784}"],
    ),
    "truncated_header": (TEST_LABELS, lambda d: d[:5], ["truncated", "shorter than its header"]),
    "gzip_under_the_uncompressed_name": (
        TRAIN_IMAGES,
        gzip.compress,
        ["wrong magic number 0x1f8b08", "expected 0x00000803"],
    ),
    "labels_file_in_place_of_images": (
        TEST_IMAGES,
        lambda d: struct.pack(">II", 0x801, N_TEST) + bytes(N_TEST),
        ["wrong magic number 0x00000801", "expected 0x00000803"],
    ),
    "trailing_bytes": (
        TEST_IMAGES,
        lambda d: d + b"\x00" * 10,
        ["trailing bytes", f"expected {16 + N_TEST * 784}"],
    ),
    "wrong_image_dims": (
        TRAIN_IMAGES,
        lambda d: header_with(d, rows=32, cols=32),
        ["images are 32x32", "expected 28x28"],
    ),
    "fewer_labels_than_images": (
        TRAIN_LABELS,
        lambda d: struct.pack(">II", 0x801, N_TRAIN - 1) + d[8:-1],
        [f"holds {N_TRAIN - 1} labels", f"expected {N_TRAIN}"],
    ),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_a_damaged_file_is_named_and_left_untouched(synthetic_folder, kind):
    root, raw_dir, spec = synthetic_folder
    name, damage, phrases = CORRUPTIONS[kind]
    path = raw_dir / name
    path.write_bytes(damage(path.read_bytes()))
    before = folder_bytes(raw_dir)

    with pytest.raises(DataError) as raised:
        load_splits(spec, root, val_size=VAL_SIZE, sources=("local",))

    message = str(raised.value)
    assert str(path) in message
    for phrase in phrases:
        assert phrase in message, f"{phrase!r} not in {message!r}"
    assert folder_bytes(raw_dir) == before, "the user's files must never be rewritten"


def test_image_and_label_counts_must_agree_without_known_counts(synthetic_folder):
    """Where no count or MD5 is known (as for KMNIST), the pair of files must still agree."""
    root, raw_dir, spec = synthetic_folder
    labels = read_label_file(str(raw_dir / TRAIN_LABELS)).numpy().astype(np.uint8)
    write_idx(raw_dir / TRAIN_LABELS, labels[:-1])
    unchecked = dataclasses.replace(spec, raw_md5=None, train_count=None, test_count=None)
    before = folder_bytes(raw_dir)

    with pytest.raises(DataError, match=f"{N_TRAIN} images but {N_TRAIN - 1} labels") as raised:
        load_splits(unchecked, root, val_size=VAL_SIZE, sources=("local",))
    assert str(raw_dir / TRAIN_LABELS) in str(raised.value)
    assert folder_bytes(raw_dir) == before


@pytest.mark.parametrize("name", [TRAIN_LABELS, TEST_LABELS])
def test_labels_above_nine_are_rejected_naming_the_file(synthetic_folder, name):
    root, raw_dir, spec = synthetic_folder
    labels = read_label_file(str(raw_dir / name)).numpy().astype(np.uint8)
    labels[3] = 12
    write_idx(raw_dir / name, labels)
    # Even with a checksum that matches the bad file, the labels themselves are checked.
    spec = dataclasses.replace(spec, raw_md5={**spec.raw_md5, name: md5_of(raw_dir / name)})
    before = folder_bytes(raw_dir)

    with pytest.raises(DataError, match="expected classes 0-9") as raised:
        load_splits(spec, root, val_size=VAL_SIZE, sources=("local",))
    assert str(raw_dir / name) in str(raised.value)
    assert folder_bytes(raw_dir) == before


def test_a_corrupt_gz_is_named_and_nothing_is_left_behind(synthetic_folder):
    root, raw_dir, spec = synthetic_folder
    gz_path = raw_dir / f"{TRAIN_IMAGES}.gz"
    compressed = bytearray(gzip.compress((raw_dir / TRAIN_IMAGES).read_bytes()))
    for i in range(100, 120):  # damage the deflate stream itself, not just the trailer
        compressed[i] ^= 0xFF
    gz_path.write_bytes(bytes(compressed))
    (raw_dir / TRAIN_IMAGES).unlink()
    before = folder_bytes(raw_dir)

    with pytest.raises(DataError) as raised:
        ensure_raw_files(spec, root, sources=("local",))

    assert str(gz_path) in str(raised.value)
    assert "gzip" in str(raised.value)
    assert folder_bytes(raw_dir) == before


def test_a_truncated_gz_is_named(synthetic_folder):
    root, raw_dir, spec = synthetic_folder
    gz_path = raw_dir / f"{TEST_LABELS}.gz"
    gz_path.write_bytes(gzip.compress((raw_dir / TEST_LABELS).read_bytes())[:-12])
    (raw_dir / TEST_LABELS).unlink()
    before = folder_bytes(raw_dir)

    with pytest.raises(DataError, match="not a readable gzip file") as raised:
        ensure_raw_files(spec, root, sources=("local",))
    assert str(gz_path) in str(raised.value)
    assert folder_bytes(raw_dir) == before


def test_a_gz_with_the_wrong_contents_leaves_no_unverified_file(synthetic_folder):
    """A readable .gz holding other images must not leave its bad contents under the real name.

    Otherwise that file would block every later source (they only fill in missing files) and
    the next run would blame a file the user never put there.
    """
    root, raw_dir, spec = synthetic_folder
    other_images, _ = synthetic_images(N_TRAIN, seed=99)
    gz_path = raw_dir / f"{TRAIN_IMAGES}.gz"
    gz_path.write_bytes(gzip.compress(idx_bytes(other_images)))
    (raw_dir / TRAIN_IMAGES).unlink()
    before = folder_bytes(raw_dir)

    with pytest.raises(DataError, match="MD5") as raised:
        ensure_raw_files(spec, root, sources=("local",))

    assert str(gz_path) in str(raised.value)
    assert folder_bytes(raw_dir) == before
    assert not (raw_dir / TRAIN_IMAGES).exists()


def test_a_partial_folder_with_one_bad_file_fails_before_any_source_runs(synthetic_folder):
    root, raw_dir, spec = synthetic_folder
    (raw_dir / TEST_IMAGES).unlink()
    (raw_dir / TEST_LABELS).unlink()
    bad = raw_dir / TRAIN_LABELS
    bad.write_bytes(flip_one_pixel(bad.read_bytes()))
    # The .gz of the missing files are there, so the local source *could* fill them in.
    for name in (TEST_IMAGES, TEST_LABELS):
        images_or_labels = synthetic_images(N_TEST, seed=1)[0 if "images" in name else 1]
        (raw_dir / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(images_or_labels)))
    before = folder_bytes(raw_dir)

    with pytest.raises(DataError, match="MD5") as raised:
        ensure_raw_files(spec, root, sources=("local",))

    assert str(bad) in str(raised.value)
    assert "tried" not in str(raised.value), "a bad present file is reported, not fetched over"
    assert folder_bytes(raw_dir) == before


def test_no_working_source_gives_one_error_listing_every_source(tmp_path):
    _, spec = write_synthetic_idx(tmp_path / "elsewhere", n_train=20, n_test=10)
    empty_root = tmp_path / "empty"

    with pytest.raises(DataError) as raised:
        ensure_raw_files(spec, empty_root, sources=("local", "pypi-mirror"))

    message = str(raised.value)
    raw_dir = spec.raw_dir(empty_root)
    assert f"could not get {spec.name} into {raw_dir}" in message
    assert "  - local: " in message and "(nor their .gz)" in message
    assert "  - pypi-mirror: no PyPI mirror is known" in message
    assert DATA_ENV_VAR in message and "--data-root" in message
    assert not raw_dir.exists() or not any(raw_dir.iterdir())


def test_a_fully_present_valid_folder_is_used_without_any_source(synthetic_folder):
    root, raw_dir, spec = synthetic_folder
    before = folder_bytes(raw_dir)
    got_dir, checksum = ensure_raw_files(spec, root, sources=())
    assert got_dir == raw_dir and len(checksum) == 32
    assert folder_bytes(raw_dir) == before


# --------------------------------------------------------------------------------------------
# torchvision's own download, from a local HTTP server holding the real MNIST .gz files
# --------------------------------------------------------------------------------------------


@pytest.fixture
def local_mnist_mirror(mnist_gz_folder, monkeypatch):
    """Point torchvision's MNIST download at a real HTTP server on 127.0.0.1 (no internet)."""
    handler = functools.partial(QuietHandler, directory=str(mnist_gz_folder))
    server = QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(
        torchvision.datasets.MNIST, "mirrors", [f"http://127.0.0.1:{server.server_port}/"]
    )
    # torchvision checks each .gz's MD5; these were compressed here (the raw files inside are
    # the originals, which the fetch then verifies), so it is told theirs.
    served = [(f"{name}.gz", md5_of(mnist_gz_folder / f"{name}.gz")) for name in RAW_FILES]
    monkeypatch.setattr(torchvision.datasets.MNIST, "resources", served)
    yield
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        pass  # torchvision closes some connections early (it probes for redirects)


@pytest.mark.real_data
def test_torchvision_source_downloads_and_verifies(local_mnist_mirror, tmp_path):
    raw_dir, checksum = ensure_raw_files("mnist", tmp_path, sources=("torchvision",))
    assert raw_dir == tmp_path / "MNIST" / "raw"
    assert checksum == ensure_raw_files("mnist", tmp_path, sources=())[1]
    for name in RAW_FILES:
        assert md5_of(raw_dir / name) == DATASETS["mnist"].raw_md5[name]


@pytest.mark.real_data
def test_a_first_download_caches_beside_the_files_it_fetched(local_mnist_mirror, tmp_path):
    """A data root that does not exist yet: the cache goes beside the raw files the fetch
    made (not the user's cache folder, chosen when there was no folder), with no note of a
    rebuild, and a second load takes it."""
    lines: list[str] = []
    splits = load_splits("mnist", tmp_path / "new", sources=("torchvision",), log=lines.append)
    cache = tmp_path / "new" / "MNIST" / CACHE_FOLDER / "mnist-split0-v1.pt"
    assert cache.is_file()
    assert not [line for line in lines if "data cache" in line], lines
    again = load_splits("mnist", tmp_path / "new", sources=(), log=lines.append)
    assert torch.equal(again.train_x, splits.train_x)


@pytest.mark.real_data
def test_torchvision_source_never_overwrites_the_users_files(local_mnist_mirror, tmp_path):
    """The user's bad .gz stays as it was; the download fills in only what is missing."""
    raw_dir = DATASETS["mnist"].raw_dir(tmp_path)
    raw_dir.mkdir(parents=True)
    users_gz = raw_dir / f"{TRAIN_IMAGES}.gz"
    users_gz.write_bytes(b"the user's own file, not a gzip")

    messages: list[str] = []
    _, checksum = ensure_raw_files(
        "mnist", tmp_path, sources=("local", "torchvision"), log=messages.append
    )

    # Each source's answer is said: why the first failed, that the next one got the files.
    assert messages[0] == f"fetching mnist into {raw_dir} (4 of 4 files missing)"
    assert messages[1].startswith(f"  local: failed: not in {raw_dir}: train-labels-idx1-ubyte")
    assert messages[1].endswith("; trying torchvision")
    assert messages[2] == "  torchvision: got the files; sizes and MD5s verified"
    assert users_gz.read_bytes() == b"the user's own file, not a gzip"
    for name in RAW_FILES:
        assert md5_of(raw_dir / name) == DATASETS["mnist"].raw_md5[name]
    assert checksum == ensure_raw_files("mnist", tmp_path, sources=())[1]


def test_written_files_get_the_mode_the_umask_gives(tmp_path):
    """mkstemp makes 0600 files: fetched and exported files must be readable by others too."""
    previous = os.umask(0o022)
    try:
        write_atomically(tmp_path / "shared.bin", b"data")
        os.umask(0o077)
        write_atomically(tmp_path / "private.bin", b"data")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "shared.bin").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "private.bin").stat().st_mode) == 0o600
