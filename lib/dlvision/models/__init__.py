"""Models: LeNet-5 (modern only), VGG-style, ResNets for small images, a small AlexNet,
a small CNN, torchvision's pretrained networks and the book's offline source model
(``SourceNet``, trained by ``tools/train_source_model.py``; ``source_model()`` loads it).

Each docstring states the exact parameter count (tests check it against
``sum(p.numel() for p in model.parameters())``).
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "VGG": "convnets",
    "AlexNetSmall": "convnets",
    "ResNet": "convnets",
    "SmallCNN": "convnets",
    "resnet8": "convnets",
    "resnet20": "convnets",
    "LeNet5": "lenet",
    "SourceNet": "source",
    "pretrained": "weights",
    "source_model": "weights",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
