"""LeNet-5 in its modern form (ReLU, max pooling, a fully connected C3, a linear output).

The 1998 network (trainable subsampling, the C3 connection table, the RBF output, the
scaled tanh) is not here on purpose: Chapter 5 builds it layer by layer in the book, and
its assignment asks students to write it, so the library must not hold it.
"""

from __future__ import annotations

import torch.nn as nn

__all__ = ["LeNet5"]


class LeNet5(nn.Module):
    """The modern LeNet-5: ReLU, 2x2 max pooling, a fully connected C3, a linear output.

    For ``in_size=32`` (or 28, where C1 pads by 2 so that the maps keep the 32x32 sizes):

    ======  ==============================  =================
    C1      conv in->6, 5x5                  (25*in+1)*6 =  156 for in=1
    C3      conv 6->16, 5x5, all inputs      (5*5*6+1)*16 = 2,416
    C5      conv 16->120, 5x5                (400+1)*120 = 48,120
    F6      linear 120->84                   (120+1)*84 = 10,164
    out     linear 84->classes               (84+1)*10 = 850
    ======  ==============================  =================

    Total for one input channel and 10 classes: **61,706** parameters.
    """

    def __init__(self, num_classes: int = 10, *, in_channels: int = 1, in_size: int = 32):
        super().__init__()
        if in_size not in (28, 32):
            raise ValueError(f"LeNet5: in_size must be 28 or 32, got {in_size!r}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2 if in_size == 28 else 0),  # C1
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # S2
            nn.Conv2d(6, 16, 5),  # C3
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # S4
            nn.Conv2d(16, 120, 5),  # C5
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(120, 84), nn.ReLU(inplace=True), nn.Linear(84, num_classes)
        )

    def forward(self, x):
        return self.classifier(self.features(x))
