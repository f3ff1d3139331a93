"""MNIST, Fashion-MNIST and CIFAR-10 through torchvision's own loaders, cached in one place.

A download goes to a temporary folder inside the cache and is moved into place only
when it succeeded, so an interrupted or failed download never leaves half a dataset.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import torch

from ..cache import atomic_dir, cache_dir
from ..errors import DatasetUnavailableError, DLVisionError
from .base import ImageData, Split

__all__ = ["mnist", "fashion_mnist", "cifar10", "TORCHVISION_DATASETS"]

# name -> (torchvision class name, folder torchvision creates under root, classes, offline substitute)
TORCHVISION_DATASETS = {
    "mnist": ("MNIST", "MNIST", tuple(str(i) for i in range(10)), "dlvision.data.load('digits', size=28)"),
    "fashion_mnist": (
        "FashionMNIST",
        "FashionMNIST",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        "dlvision.data.load('shapes', size=28, channels=1)",
    ),
    "cifar10": (
        "CIFAR10",
        "cifar-10-batches-py",
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        "dlvision.data.load('shapes', size=32)",
    ),
}


def _tv_class(name):
    import torchvision.datasets

    return getattr(torchvision.datasets, TORCHVISION_DATASETS[name][0])


def _open(name, root, download):
    cls = _tv_class(name)
    return cls(str(root), train=True, download=download), cls(str(root), train=False, download=download)


def _why(exc) -> str:
    why = " ".join(str(exc).split()) or "no message"
    return f"{type(exc).__name__}: " + (why if len(why) < 240 else why[:240] + " ...")


def _unavailable(name, root, exc, tried: bool = True, unreadable=None, downloaded: bool = False):
    """The error that says what is missing (or unreadable), where, and what to do."""
    tv_name, folder, _, instead = TORCHVISION_DATASETS[name]
    cls = _tv_class(name)
    urls = [m for m in getattr(cls, "mirrors", [])][:1]
    files = [f for f, *_ in getattr(cls, "resources", [])] or [getattr(cls, "filename", "")]
    where = f"{urls[0]}" if urls else getattr(cls, "url", "the dataset's web site")
    if unreadable is not None:
        state = f"its copy in the cache could not be read ({_why(unreadable)})"
    else:
        state = "it is not in the cache"
    failed = f"the download failed ({_why(exc)})" if tried else "download=False was given"
    if downloaded:
        state, failed = "it was downloaded", f"the downloaded files could not be read ({_why(exc)})"
    return DatasetUnavailableError(
        f"could not get the {tv_name} dataset: {state} and {failed}.\n"
        f"  cache: {root}  (set DLVISION_CACHE to use another folder)\n"
        f"  by hand: on a machine with internet, run torchvision.datasets.{tv_name}(root, download=True) "
        f"(files {', '.join(files)} from {where}) and copy the folder '{folder}' it creates into {root}\n"
        f"  offline instead: {instead}"
    )


def _load(name: str, root=None, download: bool = True):
    root = cache_dir() if root is None else root
    if os.path.exists(root) and not os.path.isdir(root):
        raise DLVisionError(f"{TORCHVISION_DATASETS[name][0]}: the root {str(root)!r} is not a folder; give a folder")
    os.makedirs(root, exist_ok=True)
    folder = TORCHVISION_DATASETS[name][1]
    present = os.path.exists(os.path.join(root, folder))
    try:
        return _open(name, root, download=False)  # already in the cache: no network needed
    except Exception as exc:  # missing (RuntimeError), or present but corrupt: torchvision raises many kinds
        unreadable = exc if present else None
    if not download:
        raise _unavailable(name, root, unreadable, tried=False, unreadable=unreadable) from None
    try:
        with atomic_dir(root) as tmp:
            _open(name, tmp, download=True)
            if os.path.exists(os.path.join(root, folder)):
                shutil.rmtree(os.path.join(root, folder))  # an incomplete earlier copy
            os.replace(os.path.join(tmp, folder), os.path.join(root, folder))
    except Exception as exc:  # URLError, HTTPError, RuntimeError("Error downloading ..."), OSError, ...
        raise _unavailable(name, root, exc, unreadable=unreadable) from None
    try:
        return _open(name, root, download=False)
    except Exception as exc:  # downloaded, yet unreadable
        raise _unavailable(name, root, exc, downloaded=True) from None


def _to_imagedata(name, ds, classes, mean=None, std=None) -> ImageData:
    data = ds.data
    x = torch.from_numpy(np.asarray(data)) if not isinstance(data, torch.Tensor) else data
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    y = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
    if mean is None:
        return ImageData(x.contiguous(), y, classes, name)
    return ImageData(x.contiguous(), y, classes, name, mean, std)


def _dataset(name, root=None, download=True) -> Split:
    train_ds, test_ds = _load(name, root, download)
    classes = TORCHVISION_DATASETS[name][2]
    train = _to_imagedata(name, train_ds, classes)
    return Split(train, _to_imagedata(name, test_ds, classes, train.mean, train.std))


def mnist(root=None, *, download: bool = True) -> Split:
    """MNIST (60,000 + 10,000 grey 28x28 digits) as uint8 tensors, via torchvision, cached."""
    return _dataset("mnist", root, download)


def fashion_mnist(root=None, *, download: bool = True) -> Split:
    """Fashion-MNIST (60,000 + 10,000 grey 28x28 clothes) as uint8 tensors, via torchvision, cached."""
    return _dataset("fashion_mnist", root, download)


def cifar10(root=None, *, download: bool = True) -> Split:
    """CIFAR-10 (50,000 + 10,000 colour 32x32 images) as uint8 tensors, via torchvision, cached."""
    return _dataset("cifar10", root, download)
