"""Training: ``fit``, ``evaluate``, the ``History`` they record, and checkpoints."""

from .._lazy import lazy_exports

_EXPORTS = {
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "Evaluation": "loop",
    "evaluate": "loop",
    "fit": "loop",
    "History": "history",
    "in_notebook": "report",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
