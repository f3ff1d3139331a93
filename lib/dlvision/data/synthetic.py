"""Generated 2-D (or n-D) datasets: linearly separable sets with an exact margin, and XOR."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["SeparableData", "linearly_separable", "xor"]


class SeparableData(NamedTuple):
    """A linearly separable dataset and the separator it was drawn around.

    ``X`` has shape (n, dim) and dtype float64; ``y`` has shape (n,), dtype int64,
    values -1 and +1. ``w`` is a unit vector and ``b`` a number such that
    ``min_i y_i (w @ x_i + b) == margin`` exactly (up to float rounding), and every
    ``||x_i|| <= radius``.
    """

    X: np.ndarray
    y: np.ndarray
    w: np.ndarray
    b: float
    margin: float


def linearly_separable(
    n: int = 100,
    margin: float = 0.1,
    *,
    dim: int = 2,
    radius: float = 1.0,
    bias: bool = False,
    seed: int = 0,
) -> SeparableData:
    """Draw ``n`` points in the ball of radius ``radius``, separated with a chosen margin.

    Points are drawn uniformly in the ball, labelled by the side of a random
    hyperplane ``w @ x + b = 0`` (``b = 0`` unless ``bias=True``), and those closer
    to it than ``margin`` are redrawn. One point is then moved, along ``w``, onto
    the margin, so the geometric margin of ``(w, b)`` on the data is exactly
    ``margin``. Both classes are always present.
    """
    if not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n must be an integer >= 2 (both classes need a point), got {n!r}")
    if not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if not radius > 0:
        raise ValueError(f"radius must be positive, got {radius!r}")
    rng = np.random.default_rng(seed)
    w = rng.normal(size=dim)
    w /= np.linalg.norm(w)
    b = float(rng.uniform(-0.3, 0.3) * radius) if bias else 0.0
    # Each side of the hyperplane must leave room for points beyond the margin.
    room = radius - abs(b)
    if not 0 < margin < room:
        raise ValueError(
            f"margin must be in (0, {room:.4g}) for radius={radius} and b={b:.4g}, got {margin!r}; "
            "use a smaller margin or a larger radius"
        )

    def draw(k):
        direction = rng.normal(size=(k, dim))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        r = radius * rng.uniform(size=(k, 1)) ** (1.0 / dim)
        return direction * r

    kept = []
    count = 0
    for _ in range(10_000):
        x = draw(max(4 * n, 64))
        x = x[np.abs(x @ w + b) >= margin]
        kept.append(x)
        count += len(x)
        if count >= n:
            break
    X = np.concatenate(kept)[:n]
    if len(X) < n:  # pragma: no cover - only for margins extremely close to the radius
        raise RuntimeError("could not draw enough points outside the margin; use a smaller margin")
    y = np.where(X @ w + b > 0, 1, -1).astype(np.int64)
    # Both classes: the first point goes to the positive side, the second to the negative side
    # (reflected through the hyperplane when needed), then one point is put exactly on the margin.
    for i, side in ((0, 1), (1, -1)):
        if y[i] != side:
            s = X[i] @ w + b
            X[i] = X[i] - 2 * s * w
            y[i] = side
            if np.linalg.norm(X[i]) > radius:  # reflecting can leave the ball when b != 0
                X[i] = (side * (margin + (room - margin) / 2) - b) * w
    s = X[0] @ w + b
    X[0] = X[0] - (s - margin) * w  # now w @ X[0] + b == margin: the closest point
    along = X[0] @ w
    if np.linalg.norm(X[0]) > radius:  # shrink the part parallel to the hyperplane to stay in the ball
        perp = X[0] - along * w
        X[0] = along * w + perp * np.sqrt(max(radius**2 - along**2, 0.0)) / np.linalg.norm(perp)
    return SeparableData(X=X, y=y, w=w, b=b, margin=float(margin))


def xor(n: int = 4, *, noise: float = 0.0, seed: int = 0):
    """The XOR problem: points around the four corners (+-1, +-1), labelled 1 where x1*x2 < 0.

    ``n`` points are assigned to the corners in turn and blurred with Gaussian noise
    of standard deviation ``noise`` (the labels follow the corner, not the noisy
    point). ``xor(4)`` gives the four classic points. Returns ``(X, y)`` with
    ``X`` float64 of shape (n, 2) and ``y`` int64 of shape (n,) in {0, 1}.
    """
    if not isinstance(n, (int, np.integer)) or n < 4:
        raise ValueError(f"n must be an integer >= 4 (one point per corner), got {n!r}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    corners = np.array([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
    labels = np.array([0, 1, 1, 0], dtype=np.int64)
    idx = np.arange(n) % 4
    rng = np.random.default_rng(seed)
    X = corners[idx] + noise * rng.normal(size=(n, 2))
    return X, labels[idx]
