"""Configurable VGG-style networks, ResNets for small images, a small AlexNet, a small CNN.

What the chapter 6 assignment asks students to write is not here: the residual basic block
and the bottleneck block with identity and projection (1x1 convolution and batch norm)
shortcuts, and the VGG paper's stage (3x3 convolutions with biases and ReLU, then 2x2 max
pooling, no batch norm). :class:`ResNet` uses the parameter-free shortcut of He et al.'s
CIFAR networks (option A) and :class:`VGG` always has batch norm.
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

__all__ = ["VGG", "ResNet", "resnet8", "resnet20", "AlexNetSmall", "SmallCNN"]


class VGG(nn.Module):
    """A VGG-style network with batch norm: stages of 3x3 convolutions (padding 1, no bias),
    each followed by batch norm and ReLU; ``"M"`` in ``cfg`` is a 2x2 max pooling. The head
    is global average pooling and one linear layer.

    Default ``cfg=(32, 32, "M", 64, 64, "M", 128, 128, "M")``, 3 input channels, 10 classes:
    **288,746** parameters (3x3 convolutions without bias 286,560, batch norm 896 = 2 per
    channel, head 128*10+10 = 1,290).
    """

    def __init__(self, cfg=(32, 32, "M", 64, 64, "M", 128, 128, "M"), *, in_channels=3, num_classes=10):
        super().__init__()
        layers, c = [], in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            layers += [nn.Conv2d(c, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            c = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class _PaddedShortcutBlock(nn.Module):
    """Two 3x3 convolutions with batch norm, plus a parameter-free shortcut: the input itself,
    or, when the shape changes, the input subsampled and zero-padded with extra channels
    (He et al.'s option A for CIFAR)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.stride, self.extra = stride, out_channels - in_channels

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x[:, :, :: self.stride, :: self.stride] if self.stride != 1 else x
        if self.extra:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra))
        return F.relu(out + shortcut)


class ResNet(nn.Module):
    """A ResNet for small (32x32) images, after He et al. (2016), section 4.2.

    A 3x3 stem convolution to ``widths[0]`` channels, then one stage per entry of
    ``blocks`` (that many residual blocks of two 3x3 convolutions, the first of each stage
    after the first halving the size), global average pooling and a linear layer. Depth is
    2 * sum(blocks) + 2. The shortcuts are parameter-free (option A: identity, or subsample
    and zero-pad the channels where the shape changes). See :func:`resnet20` and
    :func:`resnet8` for the parameter counts.
    """

    def __init__(self, blocks=(3, 3, 3), widths=(16, 32, 64), *, in_channels=3, num_classes=10):
        super().__init__()
        if len(blocks) != len(widths):
            raise ValueError(f"ResNet: blocks {blocks} and widths {widths} must have the same length")
        stem = [nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)]
        layers, c = [], widths[0]
        for s, (n, w) in enumerate(zip(blocks, widths, strict=True)):
            for b in range(n):
                layers.append(_PaddedShortcutBlock(c, w, stride=2 if (s > 0 and b == 0) else 1))
                c = w
        self.features = nn.Sequential(*stem, *layers)
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


def resnet20(num_classes: int = 10, *, in_channels: int = 3) -> ResNet:
    """ResNet-20 for CIFAR-sized images (3 stages of 3 blocks, widths 16/32/64).

    With 3 input channels and 10 classes: **269,722** parameters (He et al. report 0.27M).
    """
    return ResNet((3, 3, 3), (16, 32, 64), in_channels=in_channels, num_classes=num_classes)


def resnet8(num_classes: int = 10, *, in_channels: int = 3) -> ResNet:
    """ResNet-8 (3 stages of 1 block, widths 16/32/64): **75,290** parameters for 3 input
    channels and 10 classes. Fast enough to train on a CPU."""
    return ResNet((1, 1, 1), (16, 32, 64), in_channels=in_channels, num_classes=num_classes)


class AlexNetSmall(nn.Module):
    """A small AlexNet-style network for 32x32 images: five convolutions (5x5, 5x5, 3x3,
    3x3, 3x3) with ReLU, local response normalisation after the first two (``lrn``),
    3x3/2 overlapping max pooling after conv 1, 2 and 5, then two dropout + linear +
    ReLU layers and a linear output.

    Default widths (48, 128, 192, 192, 128), hidden 512, 3 input channels, 10 classes:
    **1,790,154** parameters, of which the three linear layers hold 858,122.
    """

    def __init__(self, num_classes=10, *, in_channels=3, widths=(48, 128, 192, 192, 128), hidden=512, dropout=0.5, lrn=True):
        super().__init__()
        c1, c2, c3, c4, c5 = widths

        def norm():
            return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0) if lrn else nn.Identity()

        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, padding=2), nn.ReLU(inplace=True), norm(), nn.MaxPool2d(3, 2),
            nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(inplace=True), norm(), nn.MaxPool2d(3, 2),
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        )  # fmt: skip
        self.pool = nn.AdaptiveAvgPool2d(3)  # 3x3 maps for 32x32 inputs, whatever the input size
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout), nn.Linear(c5 * 9, hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )  # fmt: skip

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)))


class SmallCNN(nn.Module):
    """A small CNN: per width, a 3x3 convolution, batch norm, ReLU and 2x2 max pooling;
    then global average pooling and a linear layer. It is the book's source model.

    Default widths (16, 32, 64), 3 input channels, 6 classes: **24,086** parameters
    (convolutions 432 + 4,608 + 18,432, batch norm 2*(16+32+64) = 224, head 64*6+6 = 390).
    """

    def __init__(self, num_classes: int = 6, *, in_channels: int = 3, widths=(16, 32, 64)):
        super().__init__()
        layers, c = [], in_channels
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c = w
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))
