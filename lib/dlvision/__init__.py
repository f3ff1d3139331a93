"""dlvision: the helper library of the Deep Learning for Visual Recognition course.

It gives the book and the exercises tools (devices, data, a fast training loop,
models, plots, checks), never an exercise's answer. Names are loaded on first use,
so ``import dlvision`` does not import torch until something needs it.
"""

from ._lazy import lazy_exports

__version__ = "0.2.0"

_SUBMODULES = ("data", "errors", "models", "plots", "testing", "train", "device", "cache")
_EXPORTS = {
    # devices, profiles, seeding
    "get_device": "device",
    "describe_device": "device",
    "precision_for": "device",
    "profile": "device",
    "set_profile": "device",
    "by_profile": "device",
    "PROFILES": "device",
    "seed_everything": "device",
    "CPUTrainingWarning": "device",
    "cache_dir": "cache",
    # training
    "fit": "train.loop",
    "evaluate": "train.loop",
    "Evaluation": "train.loop",
    "History": "train.history",
    "save_checkpoint": "train.checkpoint",
    "load_checkpoint": "train.checkpoint",
    # errors
    "DLVisionError": "errors",
    "DatasetUnavailableError": "errors",
    "WeightsUnavailableError": "errors",
}

__all__ = [*_SUBMODULES, *_EXPORTS, "__version__"]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, _SUBMODULES)
