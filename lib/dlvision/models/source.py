"""The book's source network: its architecture, its training recipe and its checkpoint.

:class:`SourceNet` is a small VGG-style network with batch norm, split as torchvision's
ResNets are: a convolutional body ``features`` (feature maps), ``avgpool`` (global average
pooling), a flatten, and the head ``fc`` (one linear layer). Code written for it (replace
``fc``, freeze everything but ``fc``, read the vector that goes into ``fc``) runs unchanged on
torchvision's ``resnet18``.

:func:`train_source_model` trains it with :data:`SOURCE_RECIPE` on :func:`~dlvision.data.scenes`
(12 kinds of objects on plain, gradient, noise, texture and photo backgrounds). The script
``tools/train_source_model.py`` ran it once and saved the result as ``source_model.pt`` next to
this file; :func:`dlvision.models.source_model` loads that file.
"""

from __future__ import annotations

import importlib
import time

import torch
import torch.nn as nn

__all__ = ["SourceNet", "SOURCE_RECIPE", "train_source_model", "source_data", "source_test_data"]


class SourceNet(nn.Module):
    """A VGG-style network with batch norm, for 32x32 colour images.

    ``features``: per width, a 3x3 convolution (no bias), batch norm and ReLU, with 2x2 max
    pooling between stages (after all but the last): 32x32 inputs give maps of
    ``widths[-1]`` channels at 4x4. ``avgpool``: global average pooling; then a flatten and
    ``fc``, the head (``widths[-1]`` features in, ``num_classes`` out).

    Default widths (16, 32, 64, 128), 3 input channels, 12 classes: **99,228** parameters
    (convolutions 432 + 4,608 + 18,432 + 73,728 = 97,200; batch norm 2*(16+32+64+128) = 480;
    head 128*12+12 = 1,548), about 4.0 million multiply-adds per 32x32 image.
    """

    def __init__(self, num_classes: int = 12, *, in_channels: int = 3, widths=(16, 32, 64, 128)):
        super().__init__()
        layers, c = [], in_channels
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            c = w
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


# Everything that decides the checkpoint. Changing it means running tools/train_source_model.py
# again (the test suite checks that the shipped file matches this recipe).
SOURCE_RECIPE = dict(
    n=30_000,  # images of 32x32 in all; 20 % of them are the test split
    size=32,
    seed=2014,
    widths=(16, 32, 64, 128),
    epochs=15,
    batch_size=128,
    lr=4e-3,
    weight_decay=5e-4,
    optimizer="adamw",
    schedule="onecycle",
    crop=2,
    flip=True,
    threads=1,  # one CPU thread: as fast per core, and the same summation order on any core count
)


def source_data(recipe: dict | None = None):
    """The source task's data, ``Split(train, test)``, exactly as the recipe makes it."""
    from ..data.scenery import scenes

    r = dict(SOURCE_RECIPE, **(recipe or {}))
    return scenes(r["n"], r["size"], seed=r["seed"])


def source_test_data(recipe: dict | None = None, *, mean=None, std=None):
    """Only the test split of :func:`source_data` (the same images, without rendering the
    training images), normalised with ``mean`` and ``std`` when given."""
    from ..data.scenery import scenes

    r = dict(SOURCE_RECIPE, **(recipe or {}))
    return scenes(r["n"], r["size"], seed=r["seed"], _test_only=True, _stats=(mean, std))


def train_source_model(recipe: dict | None = None, *, verbose: bool = True) -> tuple[SourceNet, dict]:
    """Train a :class:`SourceNet` with ``recipe`` (default :data:`SOURCE_RECIPE`; a dict of
    overrides is merged into it), seeded, on the CPU (so that a machine with a GPU makes the same
    weights as one without). Returns the model (eval mode) and its metadata: ``classes``, ``mean``, ``std``,
    ``test_accuracy`` (on the recipe's test split), ``train_seconds`` and the ``recipe``.
    The caller's random state is left as it was."""
    import random

    import numpy as np

    from ..data.loader import TensorLoader
    from ..device import seed_everything
    from ..train.loop import evaluate, fit

    r = dict(SOURCE_RECIPE, **(recipe or {}))
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            data = source_data(r)
            seed_everything(r["seed"])
            model = SourceNet(len(data.train.classes), widths=tuple(r["widths"]))
            train = TensorLoader(data.train, batch_size=r["batch_size"], shuffle=True, crop=r["crop"],
                                 flip=r["flip"], seed=r["seed"])  # fmt: skip
            loop = importlib.import_module("dlvision.train.loop")
            warned, loop._cpu_warned = loop._cpu_warned, True  # the caller's own first fit still warns
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                fit(model, train, epochs=r["epochs"], lr=r["lr"], weight_decay=r["weight_decay"],
                    optimizer=r["optimizer"], schedule=r["schedule"], device="cpu", channels_last=True,
                    threads=r["threads"], progress="plain" if verbose else False)  # fmt: skip
            finally:
                loop._cpu_warned = warned
            seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
            acc = evaluate(model, data.test).accuracy
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    meta = {
        "classes": list(data.train.classes),
        "mean": list(data.train.mean),
        "std": list(data.train.std),
        "test_accuracy": acc,
        "test_size": len(data.test),
        "train_size": len(data.train),
        "train_seconds": round(seconds, 1),
        "train_cpu_seconds": round(cpu_seconds, 1),
        "torch": str(torch.__version__),  # a plain str: TorchVersion does not load with weights_only
        "recipe": {k: list(v) if isinstance(v, tuple) else v for k, v in r.items()},
    }
    return model.eval(), meta
