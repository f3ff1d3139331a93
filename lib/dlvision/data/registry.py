"""``load(name, ...)``: every image dataset by name."""

from __future__ import annotations

import difflib

from ..errors import DLVisionError
from .base import Split
from .geometric import shapes
from .handwritten import digits
from .torchvision_sets import cifar10, fashion_mnist, mnist

__all__ = ["load", "DATASETS"]

DATASETS = {
    "digits": digits,  # offline: scikit-learn's 1,797 real 8x8 digits
    "shapes": shapes,  # offline: generated coloured shapes
    "mnist": mnist,  # torchvision (needs the network once)
    "fashion_mnist": fashion_mnist,
    "cifar10": cifar10,
}
_ALIASES = {"fashion-mnist": "fashion_mnist", "fashionmnist": "fashion_mnist", "cifar-10": "cifar10", "cifar": "cifar10"}


def load(name: str, **kwargs) -> Split:
    """Load an image dataset by name as ``Split(train, test)`` of :class:`ImageData`.

    Names: ``digits`` and ``shapes`` (offline), ``mnist``, ``fashion_mnist`` and
    ``cifar10`` (torchvision, cached). Keyword arguments go to the dataset's function.
    """
    if not isinstance(name, str):
        raise DLVisionError(f"load: the dataset name must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        close = difflib.get_close_matches(key, list(DATASETS) + list(_ALIASES), n=1, cutoff=0.5)
        hint = f" Did you mean {_ALIASES.get(close[0], close[0])!r}?" if close else ""
        raise DLVisionError(f"unknown dataset {name!r}.{hint} The datasets are: {', '.join(DATASETS)}")
    return DATASETS[key](**kwargs)
