"""The one cache directory for datasets, weights and the book's source model, and atomic writes."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["cache_dir", "atomic_path", "atomic_dir"]


def cache_dir(*parts: str, create: bool = True) -> Path:
    """The cache directory: ``$DLVISION_CACHE`` if set, else ``~/.cache/dlvision``.

    Extra ``parts`` name a sub-folder (e.g. ``cache_dir("weights")``).
    """
    root = os.environ.get("DLVISION_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "dlvision")
    path = Path(root).expanduser().joinpath(*parts)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_path(target):
    """Yield a temporary file path next to ``target``; on success it is renamed to ``target``.

    A crash or an error leaves no half-written ``target`` behind (the rename is atomic
    on one file system).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_dir(parent):
    """Yield a fresh temporary folder inside ``parent``, removed afterwards whatever happens.

    Download into it, then move what succeeded into place (``os.replace``).
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
