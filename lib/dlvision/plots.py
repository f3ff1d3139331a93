"""Figures for the book: image grids, filter banks, feature maps, decision regions, training curves.

Each function returns a matplotlib ``Figure`` (closed in pyplot, so a notebook shows it
once: as the cell's value, or with ``display(fig)``).
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from .errors import DLVisionError

__all__ = ["image_grid", "filter_bank", "feature_maps", "decision_regions", "training_curves", "overlay_maps", "cell_grid"]


def _figure(nrows, ncols, cell=1.3, extra_h=0.0, **kw):
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(max(2.0, ncols * cell), nrows * cell + extra_h), squeeze=False, layout="constrained", **kw
    )
    plt.close(fig)  # not shown again by pyplot at the end of the cell
    return fig, axes


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy() if x.dtype != torch.uint8 else x.detach().cpu().numpy()
    return np.asarray(x)


def _to_display(img: np.ndarray) -> tuple[np.ndarray, str | None]:
    """(C, H, W) -> (H, W[, 3]) in 0..1 and a colormap for grey."""
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255
    if img.shape[0] == 1:
        return img[0], "gray"
    return np.clip(np.moveaxis(img[:3], 0, -1), 0, 1), None


def image_grid(
    images,
    labels=None,
    *,
    classes=None,
    predictions=None,
    ncols: int = 8,
    max_images: int = 64,
    mean=None,
    std=None,
    title: str | None = None,
    cell: float = 1.2,
):
    """A grid of images, each titled with its label (and prediction: green if right, red if wrong).

    ``images``: an :class:`~dlvision.data.ImageData`, or a tensor/array (N, C, H, W) (uint8
    0..255, or float 0..1; give ``mean`` and ``std`` to undo a normalisation), or (N, H, W).
    ``classes`` names the label indices.
    """
    from .data.base import ImageData

    if isinstance(images, ImageData):
        labels = images.y if labels is None else labels
        classes = images.classes if classes is None else classes
        images = images.x
    x = _np(images)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise DLVisionError(f"image_grid: images must have shape (N, C, H, W) or (N, H, W), got {x.shape}")
    if x.shape[1] not in (1, 3, 4) and x.shape[-1] in (1, 3, 4):
        x = np.moveaxis(x, -1, 1)
    if len(x) == 0:
        raise DLVisionError("image_grid: no images to show")
    x = x[:max_images]
    if mean is not None:
        x = x.astype(np.float32) * np.asarray(std, np.float32).reshape(1, -1, 1, 1) + np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    n = len(x)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    titled = labels is not None or predictions is not None
    fig, axes = _figure(nrows, ncols, cell, extra_h=0.4 if title else 0.0)
    lab = None if labels is None else _np(labels)
    pred = None if predictions is None else _np(predictions)

    def name(i):
        return str(classes[int(i)]) if classes is not None else str(int(i))

    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        img, cmap = _to_display(x[k])
        ax.imshow(img, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        if titled:
            if pred is not None:
                ok = lab is None or pred[k] == lab[k]
                text = name(pred[k]) if lab is None or ok else f"{name(pred[k])} ({name(lab[k])})"
                ax.set_title(text, fontsize=8, color="tab:green" if ok else "tab:red")
            else:
                ax.set_title(name(lab[k]), fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def filter_bank(weights, *, ncols: int = 8, max_filters: int = 64, title: str | None = None):
    """Convolution filters as images: RGB for 3 input channels, grey for 1, otherwise one row
    per filter with its first input channels (blue negative, red positive).

    ``weights``: a Conv2d module or a tensor (out, in, k, k).
    """
    if isinstance(weights, torch.nn.Module):
        if not hasattr(weights, "weight"):
            raise DLVisionError(f"filter_bank: {type(weights).__name__} has no weight; pass a Conv2d or a tensor")
        weights = weights.weight
    w = _np(weights).astype(np.float32)
    if w.ndim != 4:
        raise DLVisionError(f"filter_bank: weights must have shape (out, in, k, k), got {w.shape}")
    w = w[:max_filters]
    out, cin = w.shape[:2]
    if cin in (1, 3):
        lo = w.min(axis=(1, 2, 3), keepdims=True)
        hi = w.max(axis=(1, 2, 3), keepdims=True)
        wn = (w - lo) / np.maximum(hi - lo, 1e-8)  # each filter stretched to 0..1
        ncols = min(ncols, out)
        fig, axes = _figure(math.ceil(out / ncols), ncols, 0.9, extra_h=0.4 if title else 0.0)
        for k, ax in enumerate(axes.flat):
            ax.axis("off")
            if k < out:
                img, cmap = _to_display(wn[k])
                ax.imshow(img, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    else:
        shown = min(cin, 12)
        fig, axes = _figure(out, shown, 0.7, extra_h=0.4 if title else 0.0)
        lim = float(np.abs(w[:, :shown]).max()) or 1.0
        for i in range(out):
            for j in range(shown):
                ax = axes[i, j]
                ax.axis("off")
                ax.imshow(w[i, j], cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    if title:
        fig.suptitle(title)
    return fig


def feature_maps(maps, *, ncols: int = 8, max_maps: int = 32, cmap: str = "viridis", title: str | None = None):
    """The channels of one feature map tensor (C, H, W) or (1, C, H, W), each with its own scale."""
    m = _np(maps).astype(np.float32)
    if m.ndim == 4:
        if m.shape[0] != 1:
            raise DLVisionError(f"feature_maps: give the maps of one image, (C, H, W) or (1, C, H, W); got {m.shape}")
        m = m[0]
    if m.ndim != 3:
        raise DLVisionError(f"feature_maps: maps must have shape (C, H, W), got {m.shape}")
    m = m[:max_maps]
    c = len(m)
    ncols = min(ncols, c)
    fig, axes = _figure(math.ceil(c / ncols), ncols, 1.1, extra_h=0.4 if title else 0.0)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < c:
            ax.imshow(m[k], cmap=cmap, interpolation="nearest")
            ax.set_title(str(k), fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


def _predict(model, pts: np.ndarray) -> np.ndarray:
    if isinstance(model, torch.nn.Module):
        p = next(iter(model.parameters()), None)
        device = p.device if p is not None else torch.device("cpu")
        was = model.training
        model.eval()
        with torch.no_grad():
            out = model(torch.as_tensor(pts, dtype=torch.float32, device=device))
        model.train(was)
        out = out.float().cpu().numpy()
    else:
        out = np.asarray(model(pts))
    if out.ndim == 2 and out.shape[1] > 1:
        return out.argmax(1)
    out = out.reshape(len(pts))
    if out.dtype.kind == "f" and not np.all(np.isin(out, (-1, 0, 1))):
        return (out > 0).astype(int)  # one score per point: its sign is the class
    return out.astype(int)


def decision_regions(model, X, y=None, *, resolution: int = 200, margin: float = 0.25, title: str | None = None, ax=None):
    """The decision regions of a 2-D classifier, with the data points on top.

    ``model``: a torch module (logits (N, K), or one score (N,)/(N, 1) whose sign is the
    class) or a function numpy (N, 2) -> labels or scores. ``X``: (N, 2); ``y`` labels.
    """
    X = _np(X).astype(np.float64)
    if X.ndim != 2 or X.shape[1] != 2:
        raise DLVisionError(f"decision_regions: X must have shape (N, 2), got {X.shape}")
    lo, hi = X.min(0), X.max(0)
    pad = margin * np.maximum(hi - lo, 1e-6)
    gx, gy = np.meshgrid(np.linspace(lo[0] - pad[0], hi[0] + pad[0], resolution), np.linspace(lo[1] - pad[1], hi[1] + pad[1], resolution))
    z = _predict(model, np.c_[gx.ravel(), gy.ravel()]).reshape(gx.shape)
    if ax is None:
        fig, axes = _figure(1, 1, 4.2)
        ax = axes[0, 0]
    else:
        fig = ax.figure
    values = np.unique(np.concatenate([np.unique(z), np.unique(_np(y))])) if y is not None else np.unique(z)
    cmap = plt.get_cmap("tab10")
    colors = {v: cmap(i % 10) for i, v in enumerate(values)}
    zi = np.searchsorted(values, z)
    from matplotlib.colors import ListedColormap

    ax.contourf(gx, gy, zi, levels=np.arange(len(values) + 1) - 0.5, cmap=ListedColormap([colors[v] for v in values]), alpha=0.25)
    ax.contour(gx, gy, zi, levels=np.arange(len(values)) + 0.5, colors="k", linewidths=0.8)
    if y is None:
        ax.scatter(X[:, 0], X[:, 1], s=12, c="k")
    else:
        yy = _np(y)
        for v in np.unique(yy):
            sel = yy == v
            ax.scatter(X[sel, 0], X[sel, 1], s=14, color=colors[v], edgecolors="k", linewidths=0.4, label=str(v))
        ax.legend(title="class", fontsize=8, loc="best")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_aspect("equal", adjustable="datalim")
    if title:
        ax.set_title(title)
    return fig


def training_curves(history, *, title: str | None = None):
    """Loss and accuracy per epoch, training and validation, from a History (or its dict)."""
    h = history.as_dict() if hasattr(history, "as_dict") else dict(history)
    missing = [k for k in ("train_loss", "train_acc") if k not in h]
    if missing:
        raise DLVisionError(f"training_curves: the history has no {', '.join(missing)}")
    epochs = np.arange(1, len(h["train_loss"]) + 1)
    fig, axes = _figure(1, 2, 1.0, extra_h=0.0)
    fig.set_size_inches(8.5, 3.2)
    for ax, key, label in ((axes[0, 0], "loss", "loss"), (axes[0, 1], "acc", "accuracy (%)")):
        scale = 100 if key == "acc" else 1
        ax.plot(epochs, np.asarray(h[f"train_{key}"], float) * scale, "o-", ms=3, label="train")
        val = np.asarray(h.get(f"val_{key}", []), float)
        if len(val) and not np.all(np.isnan(val)):
            ax.plot(epochs, val * scale, "s-", ms=3, label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        if len(epochs) < 12:
            ax.set_xticks(epochs)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def overlay_maps(
    images,
    maps,
    *,
    titles=None,
    ncols: int = 6,
    cmap: str = "inferno",
    alpha: float = 0.55,
    cell: float = 1.6,
    title: str | None = None,
):
    """Heat maps (saliency, occlusion, Grad-CAM, ...) drawn over their images.

    ``images``: (N, C, H, W) or (C, H, W), float in 0..1 or uint8, C = 1 or 3. ``maps``:
    (N, h, w) or (h, w), one map per image, any size (each is resized to H x W with bilinear
    interpolation for display, and stretched to its own 0..1 range). ``titles``: one string
    per image. A map that is all one value is drawn as zeros.
    """
    x = _np(images)
    m = _np(maps).astype(np.float32)
    if x.ndim == 3:
        x = x[None]
    if m.ndim == 2:
        m = m[None]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise DLVisionError(f"overlay_maps: images must have shape (N, C, H, W) with C = 1 or 3, got {x.shape}")
    if m.ndim != 3 or len(m) != len(x):
        raise DLVisionError(
            f"overlay_maps: maps must have shape (N, h, w) with one map per image ({len(x)}), got {m.shape}"
        )
    if len(x) == 0:
        raise DLVisionError("overlay_maps: no images to show")
    if titles is not None and len(titles) != len(x):
        raise DLVisionError(f"overlay_maps: {len(titles)} titles for {len(x)} images")
    if not 0 <= alpha <= 1:
        raise DLVisionError(f"overlay_maps: alpha must be in [0, 1], got {alpha!r}")
    h, w = x.shape[2:]
    up = torch.nn.functional.interpolate(torch.from_numpy(m)[:, None], size=(h, w), mode="bilinear", align_corners=False)
    up = up[:, 0].numpy()
    lo, hi = up.min(axis=(1, 2), keepdims=True), up.max(axis=(1, 2), keepdims=True)
    up = np.where(hi > lo, (up - lo) / np.where(hi > lo, hi - lo, 1), 0.0)
    n = len(x)
    ncols = min(ncols, n)
    fig, axes = _figure(math.ceil(n / ncols), ncols, cell, extra_h=0.4 if title else 0.0)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        img, grey = _to_display(x[k])
        ax.imshow(img, cmap=grey, vmin=0, vmax=1, interpolation="nearest")
        ax.imshow(up[k], cmap=cmap, vmin=0, vmax=1, alpha=alpha, interpolation="nearest")
        if titles is not None:
            ax.set_title(str(titles[k]), fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def _grid_of(name, values, shape):
    """``values`` as a (rows, cols) nested list, or None; a clear error when its shape is wrong."""
    if values is None:
        return None
    rows = [list(row) for row in (values.tolist() if hasattr(values, "tolist") else values)]
    if len(rows) != shape[0] or any(len(row) != shape[1] for row in rows):
        got = (len(rows), *sorted({len(row) for row in rows}))
        raise DLVisionError(f"cell_grid: {name} must have one entry per cell, shape {shape}; got rows x lengths {got}")
    return rows


def cell_grid(
    shape,
    *,
    texts=None,
    subtexts=None,
    facecolors=None,
    boxes=(),
    marks=(),
    fontsize: float = 12,
    subfontsize: float = 9,
    title: str | None = None,
    ax=None,
):
    """A grid of square cells, one per entry of an array of ``shape`` (rows, cols), drawn row 0 at the top.

    The chapters draw their convolution and pooling explorers with it. ``texts`` and
    ``subtexts`` (nested lists or arrays of ``shape``; an entry may be None or "") are written
    in each cell, the second smaller, below the first. ``facecolors`` gives each cell a
    matplotlib colour (white by default). ``boxes`` are outlined rectangles
    ``(row, col, height, width, colour)``, for windows; ``marks`` are small filled squares
    ``(row, col, colour)``, for kernel taps. Draws on ``ax`` when given, else on a new
    figure sized to the grid; returns the Figure.
    """
    if len(shape) != 2 or any(not isinstance(n, (int, np.integer)) or n < 1 for n in shape):
        raise DLVisionError(f"cell_grid: shape must be two positive integers (rows, cols), got {shape!r}")
    rows, cols = int(shape[0]), int(shape[1])
    texts, subtexts, facecolors = (_grid_of(n, v, (rows, cols)) for n, v in
                                   (("texts", texts), ("subtexts", subtexts), ("facecolors", facecolors)))
    if ax is None:
        fig, axes = _figure(1, 1, 1.0)
        fig.set_size_inches(max(2.0, 0.55 * cols), max(2.0, 0.55 * rows + (0.4 if title else 0.0)))
        ax = axes[0, 0]
    from matplotlib.patches import Rectangle

    for r in range(rows):
        for c in range(cols):
            colour = facecolors[r][c] if facecolors is not None else "white"
            ax.add_patch(Rectangle((c, r), 1, 1, facecolor=colour, edgecolor="0.5", lw=0.6))
            main = texts[r][c] if texts is not None else None
            sub = subtexts[r][c] if subtexts is not None else None
            if main not in (None, ""):
                ax.text(c + 0.5, r + (0.4 if sub not in (None, "") else 0.5), str(main), ha="center", va="center", fontsize=fontsize)
            if sub not in (None, ""):
                ax.text(c + 0.5, r + 0.78, str(sub), ha="center", va="center", fontsize=subfontsize, color="0.25")
    for r, c, colour in marks:
        ax.add_patch(Rectangle((c + 0.15, r + 0.15), 0.7, 0.7, facecolor=colour, alpha=0.75))
    for r, c, h, w, colour in boxes:
        ax.add_patch(Rectangle((c + 0.05, r + 0.05), w - 0.1, h - 0.1, fill=False, edgecolor=colour, lw=2.5))
    ax.set_xlim(0, cols)
    ax.set_ylim(rows, 0)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=max(fontsize - 1, 8))
    return ax.figure

