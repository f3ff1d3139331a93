"""Datasets: generated ones, the ones that ship with scikit-learn and scikit-image, and torchvision's.

Every image dataset comes as ``Split(train, test)`` of :class:`ImageData` (whole uint8
tensors); :class:`TensorLoader` batches and augments them on the training device.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "ImageData": "base",
    "Split": "base",
    "digits": "handwritten",
    "TensorLoader": "loader",
    "as_loader": "loader",
    "random_crop": "loader",
    "random_flip": "loader",
    "PHOTOS": "photos",
    "photo": "photos",
    "DATASETS": "registry",
    "load": "registry",
    "BACKGROUNDS": "geometric",
    "SHAPES": "geometric",
    "shapes": "geometric",
    "scenes": "scenery",
    "digit_scenes": "scenery",
    "SCENE_SHAPES": "scenery",
    "SOURCE_SHAPES": "scenery",
    "TARGET_SHAPES": "scenery",
    "SCENE_BACKGROUNDS": "scenery",
    "SCENE_FILLS": "scenery",
    "BACKGROUND_PHOTOS": "scenery",
    "SeparableData": "synthetic",
    "linearly_separable": "synthetic",
    "xor": "synthetic",
    "cifar10": "torchvision_sets",
    "fashion_mnist": "torchvision_sets",
    "mnist": "torchvision_sets",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
