"""The library's errors, and the input checks that raise them with a message that says what to do."""

from __future__ import annotations

import torch

__all__ = [
    "DLVisionError",
    "DatasetUnavailableError",
    "WeightsUnavailableError",
    "check_images",
    "check_labels",
    "check_positive_int",
    "same_device",
]


class DLVisionError(ValueError):
    """Bad input to a dlvision function: the message says what was wrong and what to do."""


class DatasetUnavailableError(RuntimeError):
    """A dataset could not be downloaded or found in the cache."""


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be downloaded or found in the cache."""


def check_positive_int(name: str, value) -> int:
    """``value`` as an int, or a DLVisionError when it is not an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) and not (
        hasattr(value, "__index__") and not isinstance(value, float)
    ):
        raise DLVisionError(f"{name} must be a positive integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if value <= 0:
        raise DLVisionError(f"{name} must be a positive integer (>= 1), got {value}")
    return value


def check_images(name: str, x) -> torch.Tensor:
    """Check a batch of images: a 4-D tensor (N, C, H, W), uint8 or floating point."""
    if not isinstance(x, torch.Tensor):
        raise DLVisionError(
            f"{name} must be a torch.Tensor of shape (N, C, H, W), got {type(x).__name__}; "
            "convert a numpy array with torch.from_numpy(...)"
        )
    if x.ndim == 3:
        raise DLVisionError(
            f"{name} has shape {tuple(x.shape)} (3-D), but images must be 4-D (N, C, H, W); "
            f"for grey images add the channel axis: {name}.unsqueeze(1)"
        )
    if x.ndim != 4:
        raise DLVisionError(f"{name} must have shape (N, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] > 4 and x.shape[-1] in (1, 3, 4):
        raise DLVisionError(
            f"{name} has shape {tuple(x.shape)}, which looks channels-last (N, H, W, C); "
            f"images must be (N, C, H, W): use {name}.permute(0, 3, 1, 2)"
        )
    if not (x.dtype == torch.uint8 or x.is_floating_point()):
        raise DLVisionError(
            f"{name} must be uint8 (0..255) or floating point, got dtype {x.dtype}; "
            f"use {name}.float() or {name}.to(torch.uint8)"
        )
    return x


def check_labels(name: str, y, n: int | None = None) -> torch.Tensor:
    """Check class labels: a 1-D int64 tensor of length ``n`` with values >= 0."""
    if not isinstance(y, torch.Tensor):
        raise DLVisionError(f"{name} must be a torch.Tensor of class indices, got {type(y).__name__}")
    if y.ndim != 1:
        raise DLVisionError(f"{name} must be 1-D (one class index per image), got shape {tuple(y.shape)}")
    if y.dtype != torch.int64:
        raise DLVisionError(
            f"{name} must have dtype torch.int64 (class indices for cross-entropy), got {y.dtype}; "
            f"use {name}.long()"
        )
    if n is not None and len(y) != n:
        raise DLVisionError(f"{name} has {len(y)} labels but there are {n} images: they must match")
    if len(y) and y.device.type != "meta" and int(y.min()) < 0:
        raise DLVisionError(f"{name} has a negative label ({int(y.min())}); class indices start at 0")
    return y


def same_device(model: torch.nn.Module, tensor: torch.Tensor, what: str = "the data") -> None:
    """Raise a DLVisionError when ``model``'s parameters and ``tensor`` are on different devices."""
    p = next(iter(model.parameters()), None)
    if p is None:
        return
    if p.device != tensor.device:
        raise DLVisionError(
            f"the model is on {p.device} but {what} is on {tensor.device}: put both on one device, "
            f"e.g. model.to(device) and x.to(device) with device = dlvision.get_device()"
        )
