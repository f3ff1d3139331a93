"""Coloured geometric shapes: a generated image-classification dataset of any size, offline."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import DLVisionError, check_positive_int
from .base import ImageData, Split

__all__ = ["shapes", "SHAPES", "BACKGROUNDS"]

SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")
BACKGROUNDS = ("black", "plain", "gradient", "noise")


def _hsv_to_rgb(h, s, v):
    """Vectorised HSV -> RGB, each argument of shape (n,), values in 0..1."""
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack([np.stack(c, 1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    return table[i, np.arange(len(h))]


def _masks(kind, u, v, theta):
    """Coverage masks (n, H, W) of one shape kind, in coordinates scaled by the radius."""
    c, s = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    ur, vr = c * u + s * v, -s * u + c * v
    if kind == "circle":
        return u * u + v * v <= 1.0
    if kind == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.5**2)
    if kind == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if kind == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if kind == "cross":
        a, b = np.abs(ur), np.abs(vr)
        return ((a <= 0.3) & (b <= 1.0)) | ((b <= 0.3) & (a <= 1.0))
    if kind == "triangle":  # equilateral, circumradius 1: inside three half-planes at distance 0.5
        inside = np.ones(u.shape, dtype=bool)
        for k in range(3):
            ang = np.pi / 2 + 2 * np.pi * k / 3
            inside &= ur * np.cos(ang) + vr * np.sin(ang) <= 0.5
        return inside
    raise AssertionError(kind)


def _render(labels, kinds, size, channels, background, noise, rng, supersample):
    n = len(labels)
    big = size * supersample
    # Geometry in pixels of the final image: radius, centre (the shape stays inside), rotation.
    r = rng.uniform(0.18, 0.42, n) * size
    cx = rng.uniform(r, size - r)
    cy = rng.uniform(r, size - r)
    theta = rng.uniform(-np.pi, np.pi, n)
    theta = np.where(np.isin(np.asarray(kinds)[labels], ["square", "diamond"]), 0.0, theta)
    theta = np.where(np.asarray(kinds)[labels] == "cross", theta / 7, theta)  # a cross stays upright-ish
    grid = (np.arange(big) + 0.5) / supersample
    u = (grid[None, None, :] - cx[:, None, None]) / r[:, None, None]
    v = (grid[None, :, None] - cy[:, None, None]) / r[:, None, None]
    u, v = np.broadcast_to(u, (n, big, big)), np.broadcast_to(v, (n, big, big))
    mask = np.zeros((n, big, big), dtype=bool)
    for k, kind in enumerate(kinds):
        sel = labels == k
        if sel.any():
            mask[sel] = _masks(kind, u[sel], v[sel], theta[sel])
    cover = mask.reshape(n, size, supersample, size, supersample).mean(axis=(2, 4), dtype=np.float32)

    if channels == 3:
        fg = _hsv_to_rgb(rng.uniform(0, 1, n), rng.uniform(0.55, 1, n), rng.uniform(0.7, 1, n))
        bg_col = _hsv_to_rgb(rng.uniform(0, 1, n), rng.uniform(0, 0.6, n), rng.uniform(0.05, 0.35, n))
    else:
        fg = rng.uniform(0.6, 1, (n, 1))
        bg_col = rng.uniform(0.0, 0.3, (n, 1))
    fg = fg.astype(np.float32)[:, :, None, None]
    if background == "black":
        bg = np.zeros((n, channels, size, size), np.float32)
    elif background == "plain":
        bg = np.broadcast_to(bg_col.astype(np.float32)[:, :, None, None], (n, channels, size, size))
    elif background == "gradient":
        ang = rng.uniform(0, 2 * np.pi, n)
        t = np.linspace(0, 1, size, dtype=np.float32)
        ramp = np.cos(ang)[:, None, None] * t[None, None, :] + np.sin(ang)[:, None, None] * t[None, :, None]
        ramp = (ramp - ramp.min(axis=(1, 2), keepdims=True)) / (np.ptp(ramp, axis=(1, 2), keepdims=True) + 1e-6)
        bg = bg_col.astype(np.float32)[:, :, None, None] * (0.4 + 0.9 * ramp[:, None].astype(np.float32))
    else:  # "noise": smooth-ish coloured noise
        coarse = rng.uniform(0, 0.45, (n, channels, max(2, size // 4), max(2, size // 4))).astype(np.float32)
        bg = torch.nn.functional.interpolate(torch.from_numpy(coarse), size=(size, size), mode="bilinear").numpy()
    img = bg + cover[:, None] * (fg - bg)
    if noise:
        img = img + rng.normal(0, noise, img.shape).astype(np.float32)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def shapes(
    n: int = 1000,
    size: int = 32,
    *,
    classes=SHAPES,
    channels: int = 3,
    background: str = "black",
    noise: float = 0.03,
    test_fraction: float = 0.2,
    supersample: int = 2,
    seed: int = 0,
) -> Split:
    """Images of coloured geometric shapes, one shape per image, labelled by its kind.

    ``n`` images in all (``test_fraction`` of them in the test split), classes
    balanced. Each shape has a random position, size (radius 18 %-42 % of the side),
    colour and, for triangles and crosses, rotation; ``background`` is one of
    ``"black"``, ``"plain"`` (a random dark colour), ``"gradient"`` or ``"noise"``;
    Gaussian pixel noise of std ``noise`` is added. Edges are antialiased by
    ``supersample`` x ``supersample`` sampling. Images are uint8 tensors
    (N, ``channels``, size, size), ``channels`` 1 or 3. Seeded: the same arguments
    give the same images.
    """
    n = check_positive_int("n", n)
    size = check_positive_int("size", size)
    if size < 8:
        raise DLVisionError(f"shapes: size must be at least 8 pixels, got {size}")
    classes = tuple(classes)
    bad = [c for c in classes if c not in SHAPES]
    if bad or len(classes) < 2 or len(set(classes)) != len(classes):
        raise DLVisionError(f"shapes: classes must be at least two distinct names from {SHAPES}, got {classes}")
    if channels not in (1, 3):
        raise DLVisionError(f"shapes: channels must be 1 or 3, got {channels!r}")
    if background not in BACKGROUNDS:
        raise DLVisionError(f"shapes: background must be one of {BACKGROUNDS}, got {background!r}")
    if not 0 < test_fraction < 1:
        raise DLVisionError(f"shapes: test_fraction must be in (0, 1), got {test_fraction!r}")
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(classes)
    rng.shuffle(labels)
    chunk = max(1, 4_000_000 // (size * supersample) ** 2)
    x = np.concatenate(
        [
            _render(labels[i : i + chunk], classes, size, channels, background, noise, rng, supersample)
            for i in range(0, n, chunk)
        ]
    )
    n_test = max(1, int(round(n * test_fraction)))
    x, y = torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64))
    train = ImageData(x[n_test:], y[n_test:], classes, "shapes")
    test = ImageData(x[:n_test], y[:n_test], classes, "shapes", train.mean, train.std)
    return Split(train, test)
