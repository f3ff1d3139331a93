"""How ``fit`` shows progress: a tqdm bar, and a live plot in a notebook or one line per epoch elsewhere."""

from __future__ import annotations

import os
import sys

__all__ = ["in_notebook", "Reporter"]


def in_notebook() -> bool:
    """True inside a Jupyter kernel (JupyterLab, Colab, VS Code, a book build)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and ("IPKernelApp" in getattr(ip, "config", {}) or "google.colab" in sys.modules)


def has_frontend() -> bool:
    """True where a person watches the notebook (Jupyter server, Colab, VS Code), False in a
    headless execution such as a book build, where a progress widget would only leave a
    frozen bar (and a CDN dependency) in the page."""
    return bool(
        os.environ.get("JPY_SESSION_NAME")
        or "google.colab" in sys.modules
        or os.environ.get("VSCODE_PID")
        or os.environ.get("VSCODE_CWD")
    )


class Reporter:
    """``mode``: ``"auto"`` (a live plot in a notebook, one plain line per epoch elsewhere,
    and a tqdm batch progress bar where someone watches: a notebook with a frontend or a
    terminal, not a book build or a CI log), ``"plain"`` (lines
    only), ``"plot"``, ``"bar"`` or ``None``/``False`` (silent). The environment variable
    ``DLVISION_PROGRESS`` overrides ``"auto"``."""

    def __init__(self, mode, epochs: int):
        if mode is True:
            mode = "auto"
        if mode == "auto":
            mode = os.environ.get("DLVISION_PROGRESS", "auto")
        if mode in (False, None, "none", "off"):
            mode = None
        if mode == "auto":
            notebook = in_notebook()
            self.lines = not notebook
            self.plot = notebook
            self.bar = has_frontend() if notebook else sys.stderr.isatty()
        else:
            self.lines = mode in ("plain", "bar")
            self.plot = mode == "plot"
            self.bar = mode in ("bar",)
        self.epochs = epochs
        self._handle = None
        self._pbar = None

    def batches(self, loader, epoch: int):
        """Wrap the epoch's batches in a progress bar (transient)."""
        if not self.bar:
            return loader
        from tqdm.auto import tqdm

        total = len(loader) if hasattr(loader, "__len__") else None
        self._pbar = tqdm(loader, total=total, desc=f"epoch {epoch}/{self.epochs}", leave=False, unit="batch")
        return self._pbar

    def epoch_end(self, history) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        if self.lines:
            print(history.line(-1), flush=True)
        if self.plot:
            self._update_plot(history)

    def _update_plot(self, history) -> None:
        from IPython.display import display

        from ..plots import training_curves

        fig = training_curves(history, title=history.line(-1).replace("  ", "   "))
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)
