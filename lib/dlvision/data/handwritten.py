"""scikit-learn's real handwritten digits (1,797 images of 8x8 pixels), offline."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import DLVisionError
from .base import ImageData, Split

__all__ = ["digits"]


def digits(size: int = 8, *, test_fraction: float = 0.25, seed: int = 0) -> Split:
    """The 1,797 real 8x8 handwritten digits of scikit-learn, as a seeded stratified split.

    ``size`` is 8 (the original), 28 or 32 (bilinear resize, antialiased). Images are
    uint8 tensors of shape (N, 1, size, size) with values 0..255 (the original 0..16
    scaled by 255/16); labels int64 0..9. Returns ``Split(train, test)``; both have the
    training split's mean and std.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if size not in (8, 28, 32):
        raise DLVisionError(f"digits: size must be 8, 28 or 32, got {size!r}")
    if not 0 < test_fraction < 1:
        raise DLVisionError(f"digits: test_fraction must be in (0, 1), got {test_fraction!r}")
    bunch = load_digits()
    images = np.round(bunch.images * (255 / 16)).astype(np.uint8)
    idx_train, idx_test = train_test_split(
        np.arange(len(images)), test_size=test_fraction, stratify=bunch.target, random_state=seed
    )
    x = torch.from_numpy(images).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    classes = tuple(str(i) for i in range(10))
    full = ImageData(x, y, classes, "digits", mean=(0.0,), std=(1.0,))
    if size != 8:
        full = full.resized(size)
    tr, te = torch.from_numpy(idx_train), torch.from_numpy(idx_test)
    train = ImageData(full.x[tr], full.y[tr], classes, "digits")
    test = ImageData(full.x[te], full.y[te], classes, "digits", train.mean, train.std)
    return Split(train, test)
