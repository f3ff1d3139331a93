"""Models: LeNet-5 (1998 and modern), VGG-style, ResNets for small images, a small AlexNet,
a small CNN, torchvision's pretrained networks and the book's offline source model.

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
    "C3_TABLE": "lenet",
    "LeNet5": "lenet",
    "LeNet5Original": "lenet",
    "RBFOutput": "lenet",
    "ScaledTanh": "lenet",
    "SparseConv2d": "lenet",
    "Subsampling": "lenet",
    "pretrained": "weights",
    "source_model": "weights",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
