"""scikit-image's sample photographs as tensors (the ones that ship with the package)."""

from __future__ import annotations

import torch

from ..errors import DatasetUnavailableError, DLVisionError

__all__ = ["photo", "PHOTOS"]

# Shipped inside scikit-image's wheel: they load with no network.
PHOTOS = (
    "astronaut",
    "camera",
    "cat",
    "chelsea",
    "coffee",
    "rocket",
    "coins",
    "moon",
    "page",
    "clock",
    "text",
    "brick",
    "grass",
    "gravel",
    "colorwheel",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "microaneurysms",
    "logo",
)
# Fetched from the network by scikit-image (pooch) on first use.
_FETCHED = ("eagle", "brain", "cells3d", "kidney", "lily", "skin", "human_mitosis", "lfw_subset", "vortex", "nickel_solidification", "protein_transport")


def photo(name: str = "astronaut", *, size: int | None = None, grey: bool = False) -> torch.Tensor:
    """A sample photograph as a float32 tensor (C, H, W) in 0..1.

    ``name`` is one of :data:`PHOTOS` (they ship with scikit-image). ``size`` resizes
    the shorter side to ``size`` pixels; ``grey=True`` gives one channel. An alpha
    channel is dropped.
    """
    import difflib

    import skimage.data

    if name not in PHOTOS:
        if name in _FETCHED:
            raise DatasetUnavailableError(
                f"photo({name!r}): scikit-image does not ship this image; it downloads it on first use "
                "(with the optional package 'pooch'), which needs the network. Use one that ships: "
                + ", ".join(PHOTOS)
            )
        close = difflib.get_close_matches(str(name), PHOTOS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise DLVisionError(f"unknown photo {name!r}.{hint} The photos are: {', '.join(PHOTOS)}")
    try:
        img = getattr(skimage.data, name)()
    except Exception as exc:  # e.g. an older scikit-image without this image
        raise DatasetUnavailableError(
            f"photo({name!r}) could not be loaded by scikit-image {skimage.__version__}: {exc}. "
            "Try 'astronaut', 'camera', 'chelsea' or 'coffee'."
        ) from exc
    x = torch.from_numpy(img.copy())
    x = x.float() if x.dtype == torch.bool else x.float() / 255
    x = x.unsqueeze(0) if x.ndim == 2 else x[..., :3].permute(2, 0, 1)
    if grey and x.shape[0] == 3:
        x = (0.2125 * x[0] + 0.7154 * x[1] + 0.0721 * x[2]).unsqueeze(0)
    if size is not None:
        h, w = x.shape[1:]
        scale = size / min(h, w)
        x = torch.nn.functional.interpolate(
            x[None], size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="bilinear", antialias=True
        )[0].clamp(0, 1)
    return x.contiguous()
