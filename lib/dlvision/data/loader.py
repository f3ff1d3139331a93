"""A tensor-resident loader: whole datasets held as tensors on the training device.

Shuffling and batching are done by index; augmentation (random crop with padding,
horizontal flip) and normalisation are done on the device, on a whole batch at once.
No per-item Python code runs, so a small CNN is no longer starved by its data
pipeline (the per-item ``Dataset`` + ``DataLoader`` pattern spends most of a CPU's
time in Python, PIL and collation).
"""

from __future__ import annotations

import math

import torch

from ..errors import DLVisionError, check_images, check_labels, check_positive_int
from .base import ImageData

__all__ = ["TensorLoader", "random_crop", "random_flip", "as_loader"]


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator | None = None, index=None) -> torch.Tensor:
    """Random crops of a batch (N, C, H, W), each image shifted by up to ``padding`` pixels.

    ``x`` may be the batch already zero-padded by ``padding`` on each side (pass ``index``
    to pick the batch's images out of a padded dataset in the same gather); otherwise
    it is padded here. Returns (N, H, W, C) data viewed as (N, C, H, W) (channels-last
    memory, which convolutions on a GPU like).
    """
    if index is None:
        x = torch.nn.functional.pad(x, (padding,) * 4)
        index = torch.arange(len(x), device=x.device)
    shift = torch.randint(0, 2 * padding + 1, (2, len(index)), generator=generator).to(x.device, non_blocking=True)
    return _crop_at(x, padding, index, shift)


def _crop_at(padded: torch.Tensor, padding: int, index: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """The windows of ``padded[index]`` that start at rows ``shift[0]`` and columns ``shift[1]``."""
    h, w = padded.shape[2] - 2 * padding, padded.shape[3] - 2 * padding
    rows = shift[0][:, None] + torch.arange(h, device=padded.device)  # (N, H)
    cols = shift[1][:, None] + torch.arange(w, device=padded.device)  # (N, W)
    # One gather for the whole batch (advanced indices around a slice put C last).
    out = padded[index[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2)


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each image of a batch (N, C, H, W) left-right with probability 1/2."""
    flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device, non_blocking=True)
    return _flip_where(x, flip)


def _flip_where(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on ``device``. To a GPU through pinned memory: a pinned copy is truly
    asynchronous, while one from pageable memory may wait until the GPU has caught up, and so
    stops the CPU from queueing the next steps while the GPU works."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


class TensorLoader:
    """Batches of a dataset held as tensors on one device.

    ``data`` is an :class:`ImageData` or a tensor ``x`` (with ``y``). Each epoch
    (each ``for xb, yb in loader``) visits every example once, in a new seeded order
    when ``shuffle``. Images stay uint8 on the device until the batch is made; then
    ``crop`` (padding in pixels, 0 for none) and ``flip`` augment the batch, and it is
    converted to float32 and normalised with the data's ``mean`` and ``std``.
    ``device=None`` keeps the data where it is until :func:`dlvision.fit` moves it.
    """

    def __init__(
        self,
        data,
        y=None,
        *,
        batch_size: int = 128,
        shuffle: bool = True,
        crop: int = 0,
        flip: bool = False,
        normalize: bool = True,
        device=None,
        drop_last: bool = False,
        channels_last: bool = False,
        seed: int | None = None,
    ):
        if isinstance(data, ImageData):
            if y is not None:
                raise DLVisionError("TensorLoader: give either an ImageData or (x, y), not both")
            x, y = data.x, data.y
            self.classes = data.classes
            mean, std = (data.mean, data.std) if normalize else ((), ())
        elif isinstance(data, torch.Tensor):
            if y is None:
                raise DLVisionError("TensorLoader(x, y): the labels y are missing")
            x, mean, std = data, (), ()
            self.classes = ()
        else:
            raise DLVisionError(
                f"TensorLoader needs an ImageData or a tensor x with labels y, got {type(data).__name__}"
            )
        if not isinstance(x, torch.Tensor):
            raise DLVisionError(f"TensorLoader: x must be a torch.Tensor, got {type(x).__name__}")
        if crop or flip or channels_last:
            check_images("x", x)
        if x.ndim == 0 or len(x) == 0:
            raise DLVisionError("TensorLoader: the dataset is empty")
        check_labels("y", y, len(x))
        if y.device != x.device:
            raise DLVisionError(f"TensorLoader: x is on {x.device} but y on {y.device}; put both on one device")
        self.batch_size = check_positive_int("batch_size", batch_size)
        if crop < 0 or int(crop) != crop:
            raise DLVisionError(f"TensorLoader: crop is a padding in pixels (an integer >= 0), got {crop!r}")
        self.x, self.y = x, y
        self.shuffle, self.crop, self.flip, self.drop_last = shuffle, int(crop), bool(flip), drop_last
        self.channels_last = channels_last
        self._mean, self._std = mean, std
        self.device_explicit = device is not None
        # The loader's own generator: its order and augmentations follow the seed given
        # here, or else the global torch seed at construction (see seed_everything).
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        self.generator = torch.Generator().manual_seed(seed)
        self._padded = None
        self._prepare(torch.device(device) if device is not None else x.device)

    def _prepare(self, device):
        self.device = torch.device(device)
        self.x = self.x.to(self.device)  # the whole dataset moves once; batches never cross devices
        self.y = self.y.to(self.device)
        self._padded = None
        if self.x.dtype == torch.uint8:  # 8-bit data: fold the /255 into the normalisation
            scale = 255.0
        else:
            scale = 1.0
        c = self.x.shape[1] if self.x.ndim == 4 else 1
        mean = torch.tensor(self._mean or (0.0,) * c, dtype=torch.float32) * scale
        std = torch.tensor(self._std or (1.0,) * c, dtype=torch.float32) * scale
        shape = (1, -1, 1, 1) if self.x.ndim == 4 else (1,) * self.x.ndim
        if self.x.ndim != 4:
            mean, std = mean[:1], std[:1]
        self._shift = mean.view(shape).to(self.device)
        self._inv_scale = (1.0 / std).view(shape).to(self.device)

    def to(self, device) -> TensorLoader:
        """Move the whole dataset to ``device`` (once); returns the loader."""
        if torch.device(device) != self.device:
            self._prepare(device)
        return self

    @property
    def num_samples(self) -> int:
        return len(self.x)

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _epoch_draws(self, n: int):
        """The epoch's random numbers, drawn from the loader's generator in one go at the start
        of the epoch and moved to the device once: the order, then for each batch its crop shifts
        and its flips (the same numbers, in the same sequence, as drawing them batch by batch,
        so an epoch is the same on every device). No copy from the CPU inside the epoch, so no
        wait for the GPU between steps."""
        g, bs = self.generator, self.batch_size
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        shifts, flips = [], []
        if self.crop or self.flip:
            for i in range(len(self)):
                nb = len(range(i * bs, min((i + 1) * bs, n)))
                if self.crop:
                    shifts.append(torch.randint(0, 2 * self.crop + 1, (2, nb), generator=g))
                if self.flip:
                    flips.append(torch.rand(nb, generator=g) < 0.5)
        parts = [order] + ([torch.cat(shifts, 1)] if shifts else []) + ([torch.cat(flips)] if flips else [])
        if self.device.type == "cuda":  # one transfer for the three of them
            sizes = [p.numel() for p in parts]
            flat = _to_device(torch.cat([p.reshape(-1).long() for p in parts]), self.device).split(sizes)
            parts = [f.view(p.shape).to(p.dtype) for f, p in zip(flat, parts, strict=True)]
        else:
            parts = [p.to(self.device) for p in parts]
        order = parts.pop(0)
        shift = parts.pop(0) if shifts else None
        flip = parts.pop(0) if flips else None
        return order, shift, flip

    def __iter__(self):
        n, bs = len(self.x), self.batch_size
        order, shift, flip = self._epoch_draws(n)
        if self.crop and self._padded is None:
            # Pad the whole dataset once (uint8: 4x less memory and bandwidth than float).
            self._padded = torch.nn.functional.pad(self.x, (self.crop,) * 4)
        for i in range(len(self)):
            lo, hi = i * bs, min((i + 1) * bs, n)
            idx = order[lo:hi]  # a view: no work
            if self.crop:
                xb = _crop_at(self._padded, self.crop, idx, shift[:, lo:hi])
            else:
                xb = self.x[idx]
            if self.flip:
                xb = _flip_where(xb, flip[lo:hi])
            # Augment in uint8, convert once; normalisation is one fused multiply-add.
            xb = (xb.float() - self._shift) * self._inv_scale
            if self.channels_last and xb.ndim == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)
            else:
                xb = xb.contiguous()
            yield xb, self.y[idx]

    def __repr__(self) -> str:
        aug = [f"crop={self.crop}"] * bool(self.crop) + ["flip"] * self.flip
        return (
            f"TensorLoader({len(self.x)} examples {tuple(self.x.shape[1:])} {self.x.dtype} on {self.device}, "
            f"batch_size={self.batch_size}, shuffle={self.shuffle}" + "".join(", " + a for a in aug) + ")"
        )


def as_loader(data, *, batch_size: int = 128, shuffle: bool = False, name: str = "data", **kw):
    """A loader for ``data``: a TensorLoader, an ImageData, an ``(x, y)`` pair of tensors,
    or any iterable of ``(x, y)`` batches (a ``torch.utils.data.DataLoader``), returned as is."""
    if isinstance(data, TensorLoader):
        return data
    if isinstance(data, ImageData):
        return TensorLoader(data, batch_size=batch_size, shuffle=shuffle, **kw)
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return TensorLoader(data[0], data[1], batch_size=batch_size, shuffle=shuffle, **kw)
    if isinstance(data, torch.utils.data.Dataset) and not hasattr(data, "__iter__"):
        raise DLVisionError(
            f"{name} is a Dataset; wrap it in a torch.utils.data.DataLoader, or pass an ImageData or (x, y) tensors"
        )
    if hasattr(data, "__iter__") and not isinstance(data, (str, bytes, dict, torch.Tensor)):
        return data
    raise DLVisionError(
        f"{name} must be an ImageData, a pair (x, y) of tensors, a TensorLoader or a DataLoader; "
        f"got {type(data).__name__}"
    )
