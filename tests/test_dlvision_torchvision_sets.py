"""dlvision.data's torchvision datasets (MNIST, Fashion-MNIST, CIFAR-10), offline.

The full profile of Chapters 5 and 6 trains on these datasets on a GPU. This machine has no
network, so each test writes a few images in torchvision's own on-disk formats into a
temporary root and loads them through the library's real code (which calls torchvision's
real dataset classes):

- MNIST and Fashion-MNIST: the four uncompressed IDX files that torchvision's download leaves
  in ``<root>/MNIST/raw`` (``<root>/FashionMNIST/raw``): a big-endian header (magic number,
  dimensions) followed by the uint8 pixels or labels;
- CIFAR-10: the python pickles of ``<root>/cifar-10-batches-py`` (five training batches, one
  test batch, ``batches.meta``), each batch a dict with ``data`` (N x 3072 uint8: the red
  plane, then green, then blue, each row-major) and ``labels``.

torchvision checks CIFAR-10's files against the MD5 sums of the real ones, which no tiny file
can match; the CIFAR-10 tests replace that one check by "the file exists" and leave the rest
(unpickling, reshaping, transposing, the library's conversion) as it is. Every test also
makes sure that nothing tries to reach the network.
"""

from __future__ import annotations

import os
import pickle
import struct
import urllib.error

import numpy as np
import pytest
import torch

import dlvision as dv
from dlvision.data import torchvision_sets
from dlvision.data.base import ImageData, Split

MNIST_FILES = {
    (True, "images"): "train-images-idx3-ubyte",
    (True, "labels"): "train-labels-idx1-ubyte",
    (False, "images"): "t10k-images-idx3-ubyte",
    (False, "labels"): "t10k-labels-idx1-ubyte",
}


# --------------------------------------------------------------------------- writing the formats


def write_idx(path, array: np.ndarray) -> None:
    """An IDX file: magic (0, 0, type 0x08 = uint8, number of dimensions), the sizes as
    big-endian int32, then the bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


def mnist_like(n_train: int, n_test: int, seed: int, size: int = 28):
    """Images whose pixels encode (image, row, column), so any mix-up shows; labels 0..9."""
    rng = np.random.default_rng(seed)
    out = {}
    for train, n in ((True, n_train), (False, n_test)):
        x = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
        x[:, 0, 0] = np.arange(n) % 256  # the image index in the top-left pixel
        x[:, 1, :] = np.arange(size)  # the column index along the second row
        y = (np.arange(n) * 7 + (0 if train else 3)) % 10
        out[train] = (x, y.astype(np.uint8))
    return out


def write_mnist(root, folder: str, data) -> None:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for train, (x, y) in data.items():
        write_idx(raw / MNIST_FILES[(train, "images")], x)
        write_idx(raw / MNIST_FILES[(train, "labels")], y)


def cifar_like(n_per_batch: int, n_test: int, seed: int):
    """Colour images with a known value per channel plane, row and column."""
    rng = np.random.default_rng(seed)

    def batch(n, offset):
        x = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        x[:, 0, 0, 0] = (np.arange(n) + offset) % 256  # red, top-left: the image's number
        x[:, 1, :, 0] = np.arange(32)  # green, first column: the row index
        x[:, 2, 0, :] = 255 - np.arange(32)  # blue, first row: 255 - the column index
        y = [int(v) for v in (np.arange(n) + offset) % 10]
        return x, y

    train = [batch(n_per_batch, i * n_per_batch) for i in range(5)]
    return train, batch(n_test, 1000)


def write_cifar(root, train_batches, test_batch, names) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def dump(path, x, y):
        entry = {"batch_label": path.name, "labels": y, "data": x.reshape(len(x), 3 * 32 * 32),
                 "filenames": [f"img{i}.png" for i in range(len(x))]}
        path.write_bytes(pickle.dumps(entry, protocol=2))

    for i, (x, y) in enumerate(train_batches, start=1):
        dump(folder / f"data_batch_{i}", x, y)
    dump(folder / "test_batch", *test_batch)
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list(names), "num_vis": 3072}, protocol=2))


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to download fails at once, as on a machine without a network."""

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("this test runs offline")

    import torchvision.datasets.utils as tv_utils

    monkeypatch.setattr(tv_utils, "_urlretrieve", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture
def md5_skipped(monkeypatch):
    """CIFAR-10's check against the real files' MD5 sums, replaced by 'the file exists'."""
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


# --------------------------------------------------------------------------- MNIST and Fashion-MNIST


@pytest.mark.parametrize(
    ("loader", "name", "folder"),
    [(torchvision_sets.mnist, "mnist", "MNIST"), (torchvision_sets.fashion_mnist, "fashion_mnist", "FashionMNIST")],
)
def test_idx_files_load_exactly(tmp_path, loader, name, folder):
    data = mnist_like(n_train=23, n_test=9, seed=1)
    write_mnist(tmp_path, folder, data)
    split = loader(tmp_path, download=False)
    assert isinstance(split, Split) and isinstance(split.train, ImageData) and isinstance(split.test, ImageData)
    for part, train in ((split.train, True), (split.test, False)):
        x, y = data[train]
        assert part.x.dtype == torch.uint8 and part.x.shape == (len(x), 1, 28, 28)
        assert part.y.dtype == torch.int64 and part.y.shape == (len(y),)
        assert np.array_equal(part.x[:, 0].numpy(), x)  # same pixels, same order, no transpose
        assert np.array_equal(part.y.numpy(), y.astype(np.int64))
        assert part.x.is_contiguous() and part.name == name
    assert split.train.classes == torchvision_sets.TORCHVISION_DATASETS[name][2] and len(split.train.classes) == 10
    # the test split is normalised with the training split's statistics
    xf = torch.from_numpy(data[True][0]).float() / 255
    assert split.train.mean == pytest.approx((float(xf.mean()),), abs=1e-4)
    assert split.train.std == pytest.approx((float(xf.std()),), abs=1e-4)
    assert split.test.mean == split.train.mean and split.test.std == split.train.std


def test_mnist_through_load_and_the_cache_folder(tmp_path, monkeypatch):
    """``load("mnist")`` with no root reads the cache folder ($DLVISION_CACHE), offline."""
    monkeypatch.setenv("DLVISION_CACHE", str(tmp_path))
    data = mnist_like(n_train=12, n_test=5, seed=2)
    write_mnist(tmp_path, "MNIST", data)
    split = dv.data.load("MNIST")  # download=True by default: the files are there, so no download
    assert len(split.train) == 12 and len(split.test) == 5
    assert np.array_equal(split.train.x[:, 0].numpy(), data[True][0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["MNIST"]  # nothing else written


def test_mnist_missing_offline_gives_a_clear_error(tmp_path):
    with pytest.raises(dv.DatasetUnavailableError) as info:
        torchvision_sets.mnist(tmp_path, download=False)
    msg = str(info.value)
    assert "MNIST" in msg and str(tmp_path) in msg and "download=False" in msg
    assert "dlvision.data.load('digits', size=28)" in msg  # what to use offline instead
    with pytest.raises(dv.DatasetUnavailableError) as info:
        torchvision_sets.mnist(tmp_path)  # download=True: the download fails
    msg = str(info.value)
    assert "download failed" in msg and "train-images-idx3-ubyte" in msg and "torchvision.datasets.MNIST" in msg
    # the failed download left no half dataset behind
    assert [p.name for p in tmp_path.iterdir()] == []


def test_mnist_corrupt_cache_gives_a_clear_error(tmp_path):
    data = mnist_like(n_train=10, n_test=4, seed=3)
    write_mnist(tmp_path, "MNIST", data)
    images = tmp_path / "MNIST" / "raw" / MNIST_FILES[(True, "images")]
    images.write_bytes(images.read_bytes()[:100])  # truncated: the header promises 10 images
    for download in (False, True):
        with pytest.raises(dv.DatasetUnavailableError) as info:
            torchvision_sets.mnist(tmp_path, download=download)
        assert "could not be read" in str(info.value) and "MNIST" in str(info.value)
    header = tmp_path / "MNIST" / "raw" / MNIST_FILES[(False, "labels")]
    header.write_bytes(b"\x00\x00\x08")  # not even a header
    with pytest.raises(dv.DatasetUnavailableError, match="could not be read"):
        torchvision_sets.mnist(tmp_path, download=False)


def test_mnist_labels_that_do_not_match_the_images_are_refused(tmp_path):
    data = mnist_like(n_train=10, n_test=4, seed=4)
    data[True] = (data[True][0], data[True][1][:7])
    write_mnist(tmp_path, "MNIST", data)
    with pytest.raises(dv.DLVisionError, match="10"):
        torchvision_sets.mnist(tmp_path, download=False)


def test_mnist_root_that_is_a_file(tmp_path):
    root = tmp_path / "not-a-folder"
    root.write_text("")
    with pytest.raises(dv.DLVisionError, match="not a folder"):
        torchvision_sets.mnist(root, download=False)


# --------------------------------------------------------------------------- CIFAR-10


def test_cifar10_pickles_load_exactly(tmp_path, md5_skipped):
    names = torchvision_sets.TORCHVISION_DATASETS["cifar10"][2]
    train, test = cifar_like(n_per_batch=4, n_test=6, seed=5)
    write_cifar(tmp_path, train, test, names)
    split = torchvision_sets.cifar10(tmp_path, download=False)
    x_train = np.concatenate([x for x, _ in train])
    y_train = sum((y for _, y in train), [])
    for part, x, y in ((split.train, x_train, y_train), (split.test, *test)):
        assert part.x.dtype == torch.uint8 and part.x.shape == (len(x), 3, 32, 32) and part.x.is_contiguous()
        assert np.array_equal(part.x.numpy(), x)  # channels first, red plane first, rows before columns
        assert part.y.dtype == torch.int64 and part.y.tolist() == y
    assert np.array_equal(split.train.x[:, 1, :, 0].numpy(), np.tile(np.arange(32), (20, 1)))  # green: rows
    assert np.array_equal(split.train.x[:, 2, 0, :].numpy(), np.tile(255 - np.arange(32), (20, 1)))  # blue: columns
    assert split.train.classes == names and split.train.name == "cifar10"
    mean = x_train.reshape(20, 3, -1).transpose(1, 0, 2).reshape(3, -1).mean(1) / 255
    assert split.train.mean == pytest.approx(tuple(mean), abs=1e-4) and len(split.train.std) == 3
    assert split.test.mean == split.train.mean


def test_cifar10_through_load_alias(tmp_path, md5_skipped):
    names = torchvision_sets.TORCHVISION_DATASETS["cifar10"][2]
    train, test = cifar_like(n_per_batch=2, n_test=3, seed=6)
    write_cifar(tmp_path, train, test, names)
    split = dv.data.load("cifar-10", root=tmp_path, download=False)
    assert len(split.train) == 10 and len(split.test) == 3


def test_cifar10_missing_batch_gives_a_clear_error(tmp_path, md5_skipped):
    names = torchvision_sets.TORCHVISION_DATASETS["cifar10"][2]
    train, test = cifar_like(n_per_batch=2, n_test=3, seed=7)
    write_cifar(tmp_path, train, test, names)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(dv.DatasetUnavailableError) as info:
        torchvision_sets.cifar10(tmp_path, download=True)
    msg = str(info.value)
    assert "CIFAR10" in msg and "cifar-10-batches-py" in msg and "download failed" in msg
    assert "dlvision.data.load('shapes', size=32)" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-batches-py"]  # no temporary folder left


def test_cifar10_real_checksums_refuse_tiny_files(tmp_path):
    """Without the test's patch, torchvision's MD5 check refuses the tiny files: an error, not a crash."""
    names = torchvision_sets.TORCHVISION_DATASETS["cifar10"][2]
    train, test = cifar_like(n_per_batch=1, n_test=1, seed=8)
    write_cifar(tmp_path, train, test, names)
    with pytest.raises(dv.DatasetUnavailableError, match="could not be read"):
        torchvision_sets.cifar10(tmp_path, download=False)


# --------------------------------------------------------------------------- the download path


def _fake_download(data, truncate: bool = False):
    """A stand-in for MNIST.download: writes the IDX files where torchvision's download puts them."""

    def download(self):
        from pathlib import Path

        raw = Path(self.raw_folder)
        raw.mkdir(parents=True, exist_ok=True)
        for train, (x, y) in data.items():
            write_idx(raw / MNIST_FILES[(train, "images")], x)
            write_idx(raw / MNIST_FILES[(train, "labels")], y)
        if truncate:
            path = raw / MNIST_FILES[(False, "images")]
            path.write_bytes(path.read_bytes()[:50])

    return download


def test_a_download_is_moved_into_place_whole(tmp_path, monkeypatch):
    import torchvision.datasets

    data = mnist_like(n_train=8, n_test=3, seed=9)
    (tmp_path / "MNIST").mkdir()  # an incomplete earlier copy: replaced
    (tmp_path / "MNIST" / "leftover").write_text("")
    monkeypatch.setattr(torchvision.datasets.MNIST, "download", _fake_download(data))
    split = torchvision_sets.mnist(tmp_path)
    assert np.array_equal(split.test.x[:, 0].numpy(), data[False][0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["MNIST"]  # the temporary folder is gone
    assert not (tmp_path / "MNIST" / "leftover").exists()
    assert sorted(p.name for p in (tmp_path / "MNIST" / "raw").iterdir()) == sorted(MNIST_FILES.values())


def test_a_download_that_cannot_be_read_is_reported(tmp_path, monkeypatch):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", _fake_download(mnist_like(4, 4, seed=10), True))
    with pytest.raises(dv.DatasetUnavailableError) as info:
        torchvision_sets.mnist(tmp_path)
    # torchvision reads the files at the end of its download, in the temporary folder: the reason is named
    assert "the download failed (RuntimeError" in str(info.value) and "is invalid" in str(info.value)
    assert [p.name for p in tmp_path.iterdir()] == []  # nothing half-written is left in the cache
