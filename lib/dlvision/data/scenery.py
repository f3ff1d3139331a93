"""Scenery: one object on a background, generated offline, for pretraining and transfer.

Each image shows one object, labelled by its kind (a shape, or a handwritten digit in
:func:`digit_scenes`), with a random position, size, rotation, colour and fill pattern, on a
random background: plain, a gradient, smooth noise, a two-colour texture, or a crop of one of
the photographs that ship with scikit-image and scikit-learn. The book's source model is
trained on :data:`SOURCE_SHAPES`; :data:`TARGET_SHAPES` are kinds it never saw (the target
task of chapter 7). The arguments restrict the world (only some backgrounds, fills, sizes or
colours), which is how the book makes a shifted domain.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DLVisionError, check_positive_int
from .base import ImageData, Split
from .geometric import _hsv_to_rgb

__all__ = [
    "scenes",
    "digit_scenes",
    "SCENE_SHAPES",
    "SOURCE_SHAPES",
    "TARGET_SHAPES",
    "SCENE_BACKGROUNDS",
    "SCENE_FILLS",
    "BACKGROUND_PHOTOS",
]

SOURCE_SHAPES = (
    "circle", "ring", "square", "triangle", "hexagon", "star",
    "plus", "heart", "crescent", "ellipse", "arrow", "frame",
)  # fmt: skip
TARGET_SHAPES = ("diamond", "pentagon", "semicircle", "ell", "tee", "sparkle")
SCENE_SHAPES = SOURCE_SHAPES + TARGET_SHAPES
SCENE_BACKGROUNDS = ("plain", "gradient", "noise", "texture", "photo")
SCENE_FILLS = ("solid", "stripes", "checker", "dots", "gradient")
# Photographs that ship inside scikit-image's and scikit-learn's wheels ("sklearn:" prefix).
# astronaut, chelsea, coffee and rocket are left out on purpose: the book keeps them as
# photographs the source model never saw.
BACKGROUND_PHOTOS = (
    "brick", "grass", "gravel", "camera", "moon", "coins", "clock", "page", "text",
    "immunohistochemistry", "hubble_deep_field", "retina", "colorwheel",
    "sklearn:china.jpg", "sklearn:flower.jpg",
)  # fmt: skip

# Largest rotation (radians) per kind: a kind whose identity depends on its orientation
# (a square is a diamond turned by 45 degrees) turns a little; the others turn freely.
_SMALL = np.deg2rad(15)
_ROTATION = {"square": _SMALL, "plus": _SMALL, "heart": np.deg2rad(20), "frame": _SMALL, "diamond": _SMALL,
             "sparkle": _SMALL, "digit": _SMALL}  # fmt: skip


def _star_polygon(a, b, points, inner):
    """Inside a star polygon (``inner`` = cos(pi/points) gives the regular polygon) of circumradius 1."""
    r = np.hypot(a, b)
    sector = 2 * np.pi / points
    t = np.mod(np.arctan2(b, a), sector)
    t = np.minimum(t, sector - t)  # fold onto [0, pi/points] by symmetry
    x, y = r * np.cos(t), r * np.sin(t)
    # The edge from the vertex (1, 0) to the inner vertex at angle pi/points: the origin's side.
    dx, dy = inner * np.cos(np.pi / points) - 1.0, inner * np.sin(np.pi / points)
    return (dx * y - dy * (x - 1.0)) * dy >= 0


def _shape_mask(kind, a, b):
    """Coverage (bool) of one kind, in object coordinates (a right, b down; radius 1)."""
    aa, ab = np.abs(a), np.abs(b)
    if kind == "circle":
        return a * a + b * b <= 1.0
    if kind == "ring":
        r2 = a * a + b * b
        return (r2 <= 1.0) & (r2 >= 0.55**2)
    if kind == "square":
        return np.maximum(aa, ab) <= 0.8
    if kind == "frame":
        m = np.maximum(aa, ab)
        return (m <= 0.85) & (m >= 0.5)
    if kind == "diamond":
        return aa + ab <= 1.0
    if kind == "triangle":
        return _star_polygon(a, b, 3, np.cos(np.pi / 3))
    if kind == "pentagon":
        return _star_polygon(a, b, 5, np.cos(np.pi / 5))
    if kind == "hexagon":
        return _star_polygon(a, b, 6, np.cos(np.pi / 6))
    if kind == "star":
        return _star_polygon(a, b, 5, 0.45)
    if kind == "sparkle":
        return _star_polygon(a, b, 4, 0.35)
    if kind == "plus":
        return ((aa <= 0.3) & (ab <= 1.0)) | ((ab <= 0.3) & (aa <= 1.0))
    if kind == "heart":  # (x^2 + y^2 - 1)^3 <= x^2 y^3, y up
        x, y = 1.15 * a, -1.15 * b + 0.15
        return (x * x + y * y - 1) ** 3 - x * x * y**3 <= 0
    if kind == "crescent":
        return (a * a + b * b <= 1.0) & ((a - 0.5) ** 2 + b * b >= 0.85**2)
    if kind == "ellipse":
        return a * a + (b / 0.5) ** 2 <= 1.0
    if kind == "arrow":
        shaft = (a >= -1.0) & (a <= 0.05) & (ab <= 0.22)
        head = (a >= 0.0) & (a <= 1.0) & (ab <= 0.8 * (1.0 - a))
        return shaft | head
    if kind == "semicircle":
        return (b <= 0.4) & (a * a + (b - 0.4) ** 2 <= 1.0)
    if kind == "ell":
        return ((a >= -0.8) & (a <= -0.3) & (ab <= 0.85)) | ((aa <= 0.8) & (b >= 0.35) & (b <= 0.85))
    if kind == "tee":
        return ((aa <= 0.85) & (b >= -0.85) & (b <= -0.4)) | ((aa <= 0.25) & (ab <= 0.85))
    raise AssertionError(kind)


_PHOTO_CACHE: dict = {}


def _load_photo(name: str) -> torch.Tensor:
    """A background photograph as float32 (3, H, W) in 0..1, longest side at most 256 pixels."""
    if name not in _PHOTO_CACHE:
        if name.startswith("sklearn:"):
            from sklearn.datasets import load_sample_image

            img = load_sample_image(name.split(":", 1)[1])
        else:
            import skimage.data

            img = getattr(skimage.data, name)()
        x = torch.from_numpy(np.array(img)).float() / 255  # a writable copy
        x = x[None].expand(3, -1, -1) if x.ndim == 2 else x[..., :3].permute(2, 0, 1)
        h, w = x.shape[1:]
        scale = min(1.0, 256 / max(h, w))
        if scale < 1:
            x = F.interpolate(x[None], size=(round(h * scale), round(w * scale)), mode="area")[0]
        _PHOTO_CACHE[name] = x.contiguous()
    return _PHOTO_CACHE[name]


def _photo_crops(photos, n, size, rng):
    """``n`` random square crops (side 15 %-60 % of the photo's shorter side) resized to ``size``."""
    which = rng.integers(0, len(photos), n)
    side = rng.uniform(0.15, 0.6, n)
    fx, fy = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    flip = rng.uniform(0, 1, n) < 0.5
    out = torch.empty(n, 3, size, size)
    for k, name in enumerate(photos):
        sel = np.flatnonzero(which == k)
        if not len(sel):
            continue
        img = _load_photo(name)
        h, w = img.shape[1:]
        s = side[sel] * min(h, w)  # crop side in pixels
        # affine_grid works in [-1, 1]: a crop of side s centred at (x0, y0).
        sx, sy = s / w, s / h
        x0 = -1 + sx + fx[sel] * (2 - 2 * sx)
        y0 = -1 + sy + fy[sel] * (2 - 2 * sy)
        theta = np.zeros((len(sel), 2, 3), np.float32)
        theta[:, 0, 0] = np.where(flip[sel], -sx, sx)
        theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = x0, sy, y0
        grid = F.affine_grid(torch.from_numpy(theta), (len(sel), 3, size, size), align_corners=False)
        out[torch.from_numpy(sel)] = F.grid_sample(
            img[None].expand(len(sel), -1, -1, -1), grid, mode="bilinear", align_corners=False
        )
    return out.numpy()


def _pattern(kind, x, y, r, rng):
    """Two-colour pattern weights (n, H, W) in 0..1 at pixel offsets x, y from the object's centre."""
    n = len(x)
    if kind == "solid":
        return np.zeros(x.shape, np.float32)
    psi = rng.uniform(0, np.pi, n)[:, None, None]
    xr = x * np.cos(psi) + y * np.sin(psi)
    yr = -x * np.sin(psi) + y * np.cos(psi)
    if kind == "gradient":
        return np.clip(0.5 + xr / (2 * r[:, None, None]), 0, 1)
    period = rng.uniform(3.0, 7.0, n)[:, None, None]
    if kind == "stripes":
        return (np.mod(xr / period, 1.0) < 0.5).astype(np.float32)
    if kind == "checker":
        return (np.mod(np.floor(xr / period) + np.floor(yr / period), 2) == 1).astype(np.float32)
    if kind == "dots":
        dx, dy = np.mod(xr / period, 1.0) - 0.5, np.mod(yr / period, 1.0) - 0.5
        return (dx * dx + dy * dy <= 0.3**2).astype(np.float32)
    raise AssertionError(kind)


def _colours(n, rng, bright, hue):
    """``n`` RGB colours: bright (value 0.6-1) or dark (0.05-0.4), with hue in the range ``hue``."""
    h = np.mod(rng.uniform(hue[0], hue[1], n), 1.0)
    s = rng.uniform(0.3, 1.0, n)
    v = np.where(bright, rng.uniform(0.6, 1.0, n), rng.uniform(0.05, 0.4, n))
    return _hsv_to_rgb(h, s, v).astype(np.float32)


def _render(labels, kinds, coverage_fn, cfg, rng):
    """Render one chunk of images: uint8 (n, 3, size, size)."""
    n, size, ss = len(labels), cfg["size"], cfg["supersample"]
    names = np.asarray(kinds)[labels]
    # Geometry (in final pixels): radius, centre (the object stays inside), rotation.
    r = rng.uniform(cfg["scale"][0], cfg["scale"][1], n) * size
    cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
    limit = np.array([_ROTATION.get("digit" if cfg["digits"] is not None else k, np.pi) for k in names])
    theta = rng.uniform(-1, 1, n) * limit

    # Coverage: supersampled, then averaged down (antialiased edges).
    big = size * ss
    grid = (np.arange(big, dtype=np.float32) + 0.5) / ss
    u = (grid[None, None, :] - cx[:, None, None]) / r[:, None, None]
    v = (grid[None, :, None] - cy[:, None, None]) / r[:, None, None]
    c, s = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    a, b = (c * u + s * v).astype(np.float32), (-s * u + c * v).astype(np.float32)
    cover = coverage_fn(labels, a, b)
    cover = cover.reshape(n, size, ss, size, ss).mean(axis=(2, 4), dtype=np.float32)

    # Object and background colours: one bright and one dark (either way round).
    bright_fg = rng.uniform(0, 1, n) < 0.5
    fg1 = _colours(n, rng, bright_fg, cfg["hue"])
    fg2 = _colours(n, rng, bright_fg, cfg["hue"]) * rng.uniform(0.5, 0.9, (n, 1)).astype(np.float32)
    bg1 = _colours(n, rng, ~bright_fg, (0.0, 1.0))
    bg2 = _colours(n, rng, ~bright_fg, (0.0, 1.0))

    # Fill pattern at the final resolution, turning with the object.
    px = (np.arange(size, dtype=np.float32) + 0.5)[None, None, :] - cx[:, None, None]
    py = (np.arange(size, dtype=np.float32) + 0.5)[None, :, None] - cy[:, None, None]
    px, py = np.broadcast_to(px, (n, size, size)), np.broadcast_to(py, (n, size, size))
    fill_kind = rng.integers(0, len(cfg["fills"]), n)
    w = np.zeros((n, size, size), np.float32)
    for k, kind in enumerate(cfg["fills"]):
        sel = fill_kind == k
        if sel.any():
            w[sel] = _pattern(kind, px[sel], py[sel], r[sel], rng)
    fg = fg1[:, :, None, None] + w[:, None] * (fg2 - fg1)[:, :, None, None]

    bg_kind = rng.integers(0, len(cfg["backgrounds"]), n)
    bg = np.empty((n, 3, size, size), np.float32)
    for k, kind in enumerate(cfg["backgrounds"]):
        sel = np.flatnonzero(bg_kind == k)
        if not len(sel):
            continue
        m, c1, c2 = len(sel), bg1[sel][:, :, None, None], bg2[sel][:, :, None, None]
        if kind == "plain":
            bg[sel] = np.broadcast_to(c1, (m, 3, size, size))
        elif kind == "gradient":
            ramp = _pattern("gradient", px[sel], py[sel], np.full(m, size / 2.0), rng)
            bg[sel] = c1 + ramp[:, None] * (c2 - c1)
        elif kind == "noise":
            coarse = rng.uniform(-0.25, 0.25, (m, 3, 5, 5)).astype(np.float32)
            smooth = F.interpolate(torch.from_numpy(coarse), size=(size, size), mode="bicubic", align_corners=False)
            bg[sel] = c1 + smooth.numpy()
        elif kind == "texture":
            pat = rng.choice(["stripes", "checker", "dots"], m)
            t = np.zeros((m, size, size), np.float32)
            for p in ("stripes", "checker", "dots"):
                q = pat == p
                if q.any():
                    t[q] = _pattern(p, px[sel][q], py[sel][q], np.ones(q.sum()), rng)
            bg[sel] = c1 + t[:, None] * (0.5 * (c2 - c1))
        else:  # "photo": darkened or brightened so that the object keeps its contrast
            crops = _photo_crops(cfg["photos"], m, size, rng)
            bright = ~bright_fg[sel][:, None, None, None]
            bg[sel] = np.where(bright, 0.45 + 0.55 * crops, 0.5 * crops)
    img = bg + cover[:, None] * (fg - bg)
    if cfg["noise"]:
        img = img + rng.normal(0, cfg["noise"], img.shape).astype(np.float32)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def _check_subset(what, values, allowed):
    values = (values,) if isinstance(values, str) else tuple(values)
    bad = [v for v in values if v not in allowed]
    if bad or not values or len(set(values)) != len(values):
        raise DLVisionError(f"{what} must be distinct names from {allowed}, got {values}")
    return values


def _check_range(what, rng_, low, high):
    try:
        lo, hi = (float(v) for v in rng_)
    except (TypeError, ValueError):
        raise DLVisionError(f"{what} must be a pair (low, high), got {rng_!r}") from None
    if not low <= lo <= hi <= high:
        raise DLVisionError(f"{what} must be a pair with {low} <= low <= high <= {high}, got {rng_!r}")
    return lo, hi


def _generate(n, size, classes, coverage_fn, name, *, backgrounds, fills, scale, hue, photos, noise,
              test_fraction, supersample, seed, digits=None, test_only=False, stats=(None, None)):  # fmt: skip
    n = check_positive_int("n", n)
    size = check_positive_int("size", size)
    if size < 16:
        raise DLVisionError(f"{name}: size must be at least 16 pixels, got {size}")
    if not 0 < test_fraction < 1:
        raise DLVisionError(f"{name}: test_fraction must be in (0, 1), got {test_fraction!r}")
    if not (isinstance(noise, (int, float)) and 0 <= noise <= 0.5):
        raise DLVisionError(f"{name}: noise must be a number in [0, 0.5], got {noise!r}")
    cfg = dict(
        size=size,
        supersample=check_positive_int("supersample", supersample),
        backgrounds=_check_subset("backgrounds", backgrounds, SCENE_BACKGROUNDS),
        fills=_check_subset("fills", fills, SCENE_FILLS),
        scale=_check_range("scale", scale, 0.1, 0.5),
        hue=_check_range("hue", hue, 0.0, 1.0),
        photos=tuple(photos),
        noise=float(noise),
        digits=digits,
    )
    if "photo" in cfg["backgrounds"]:
        _check_subset("photos", cfg["photos"], BACKGROUND_PHOTOS + ("astronaut", "chelsea", "coffee", "rocket"))
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(classes)
    rng.shuffle(labels)
    chunk = max(1, 2_000_000 // (size * supersample) ** 2)
    n_test = max(1, int(round(n * test_fraction)))
    # The test split is the first n_test images: test_only stops once they are drawn.
    stop = n_test if test_only else n
    x = np.concatenate(
        [_render(labels[i : i + chunk], classes, coverage_fn, cfg, rng) for i in range(0, stop, chunk)]
    )
    x, y = torch.from_numpy(x), torch.from_numpy(labels[: len(x)].astype(np.int64))
    if test_only:
        mean, std = stats
        return ImageData(x[:n_test], y[:n_test], classes, name, tuple(mean or ()), tuple(std or ()))
    train = ImageData(x[n_test:], y[n_test:], classes, name)
    test = ImageData(x[:n_test], y[:n_test], classes, name, train.mean, train.std)
    return Split(train, test)


def scenes(
    n: int = 1000,
    size: int = 32,
    *,
    classes=SOURCE_SHAPES,
    backgrounds=SCENE_BACKGROUNDS,
    fills=SCENE_FILLS,
    scale=(0.2, 0.45),
    hue=(0.0, 1.0),
    photos=BACKGROUND_PHOTOS,
    noise: float = 0.02,
    test_fraction: float = 0.2,
    supersample: int = 2,
    seed: int = 0,
    _test_only: bool = False,
    _stats=(None, None),
) -> Split:
    """Colour images of one object on a background, labelled by the object's kind.

    ``n`` images in all (``test_fraction`` of them, the first ones drawn, in the test split),
    classes balanced, as uint8 tensors (N, 3, ``size``, ``size``). ``classes`` are names from
    :data:`SCENE_SHAPES` (default :data:`SOURCE_SHAPES`, the book's source task;
    :data:`TARGET_SHAPES` are six more). Each object has a random radius (``scale``: a pair,
    as fractions of the side, within 0.1..0.5), position (inside the image), rotation (free,
    or at most 15-20 degrees for kinds that a rotation would turn into another), colour
    (foreground hue drawn in ``hue``, a sub-range of 0..1, wrapping; one of object and
    background is bright, the other dark) and fill (``fills``: solid, stripes, checker, dots,
    gradient). ``backgrounds`` are drawn from plain, gradient, smooth noise, a two-colour
    texture, or a crop of one of ``photos`` (names from :data:`BACKGROUND_PHOTOS`, or
    ``"astronaut"``, ``"chelsea"``, ``"coffee"``, ``"rocket"``). Gaussian noise of std
    ``noise`` is added; edges are antialiased by ``supersample``-fold sampling. Seeded.
    """
    classes = _check_subset("classes", classes, SCENE_SHAPES)
    if len(classes) < 2:
        raise DLVisionError(f"scenes: at least two classes are needed, got {classes}")

    def coverage(labels, a, b):
        cover = np.zeros(a.shape, dtype=bool)
        for k, kind in enumerate(classes):
            sel = labels == k
            if sel.any():
                cover[sel] = _shape_mask(kind, a[sel], b[sel])
        return cover

    return _generate(n, size, classes, coverage, "scenes", backgrounds=backgrounds, fills=fills, scale=scale,
                     hue=hue, photos=photos, noise=noise, test_fraction=test_fraction, supersample=supersample,
                     seed=seed, test_only=_test_only, stats=_stats)  # fmt: skip


def digit_scenes(
    n: int = 1000,
    size: int = 32,
    *,
    backgrounds=SCENE_BACKGROUNDS,
    fills=SCENE_FILLS,
    scale=(0.3, 0.45),
    hue=(0.0, 1.0),
    photos=BACKGROUND_PHOTOS,
    noise: float = 0.02,
    test_fraction: float = 0.2,
    supersample: int = 2,
    seed: int = 0,
) -> Split:
    """scikit-learn's real handwritten digits drawn as objects in the scenes' world.

    Like :func:`scenes`, but each object is one of the 1,797 8x8 handwritten digits (upsampled,
    its ink used as the object's shape), labelled ``"0"`` to ``"9"``. The training images use
    only the first 75 % of scikit-learn's digits and the test images only the rest, so that no
    handwritten sample appears in both splits. Rotations are at most 15 degrees.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    ink = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)  # (1797, 8, 8) in 0..1
    target = bunch.target
    cut = int(0.75 * len(target))
    pools = [(np.flatnonzero(target[:cut] == d), cut + np.flatnonzero(target[cut:] == d)) for d in range(10)]
    n_total = check_positive_int("n", n)
    n_test = max(1, int(round(n_total * test_fraction))) if 0 < test_fraction < 1 else 1
    counter = {"done": 0}
    pick_rng = np.random.default_rng([seed, 8])

    def coverage(labels, a, b):
        start = counter["done"]
        counter["done"] += len(labels)
        is_test = np.arange(start, start + len(labels)) < n_test  # the first n_test images are the test split
        sample = np.array([pick_rng.choice(pools[d][1] if t else pools[d][0]) for d, t in zip(labels, is_test, strict=True)])
        # Sample each digit's ink at (a, b) in [-1, 1]^2 (bilinear), then sharpen it to a mask.
        grid = torch.from_numpy(np.stack([a, b], axis=-1) / 0.9)
        val = F.grid_sample(ink[torch.from_numpy(sample)][:, None], grid, mode="bilinear", align_corners=False)[:, 0]
        return np.clip((val.numpy() - 0.25) * 4, 0, 1)

    classes = tuple(str(d) for d in range(10))
    return _generate(n_total, size, classes, coverage, "digit_scenes", backgrounds=backgrounds, fills=fills,
                     scale=scale, hue=hue, photos=photos, noise=noise, test_fraction=test_fraction,
                     supersample=supersample, seed=seed, digits=True)  # fmt: skip
