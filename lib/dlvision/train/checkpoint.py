"""Saving and loading training checkpoints, written atomically."""

from __future__ import annotations

from pathlib import Path

import torch

from ..cache import atomic_path
from ..errors import DLVisionError

__all__ = ["save_checkpoint", "load_checkpoint"]


def _unwrap(model):
    return getattr(model, "_orig_mod", model)  # a torch.compile'd model keeps the original here


def save_checkpoint(path, model, optimizer=None, **extra) -> Path:
    """Save ``model``'s state (and ``optimizer``'s, and any ``extra`` values) to ``path``.

    The file is written to a temporary name and renamed, so a crash never leaves a
    half-written checkpoint. Returns the path.
    """
    state = {"model": _unwrap(model).state_dict(), "extra": extra}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path, model=None, optimizer=None, *, map_location="cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`; fills ``model`` and ``optimizer``
    when given, and returns the whole dict (``model``, ``optimizer``, ``extra``)."""
    path = Path(path)
    if not path.is_file():
        raise DLVisionError(f"no checkpoint at {path}: check the path, or train first with fit(..., checkpoint=path)")
    state = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(state, dict) or "model" not in state:
        raise DLVisionError(f"{path} is not a dlvision checkpoint (no 'model' entry); it was not written by save_checkpoint")
    if model is not None:
        try:
            _unwrap(model).load_state_dict(state["model"])
        except RuntimeError as exc:
            raise DLVisionError(
                f"the checkpoint {path} does not fit this model (another architecture or size): {exc}"
            ) from None
    if optimizer is not None and "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    return state
