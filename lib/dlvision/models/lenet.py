"""LeNet-5: the 1998 network of LeCun et al., and the modern variant."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["LeNet5", "LeNet5Original", "ScaledTanh", "Subsampling", "SparseConv2d", "RBFOutput", "C3_TABLE"]

# LeCun et al. (1998), Table I: which S2 maps (0..5) each C3 map (0..15) reads.
C3_TABLE = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),  # 6 maps: 3 contiguous inputs
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5),  # 4 contiguous
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),  # 3 maps: 4 discontinuous inputs
    (0, 1, 2, 3, 4, 5),  # 1 map: all six
)  # fmt: skip


class ScaledTanh(nn.Module):
    """The 1998 squashing function f(a) = 1.7159 tanh(2a/3) (f(1) = 1, f(-1) = -1)."""

    def forward(self, x):
        return 1.7159 * torch.tanh(x * (2.0 / 3.0))


class Subsampling(nn.Module):
    """The 1998 S2/S4 layer: the sum of each 2x2 block, times one trainable coefficient per
    map, plus one trainable bias per map (2 parameters per map)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), 0.25))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        s = F.avg_pool2d(x, 2) * 4  # sum over non-overlapping 2x2 blocks
        return s * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class SparseConv2d(nn.Module):
    """A convolution whose output maps read only some input maps (a connection table).

    Only the weights of existing connections are parameters: ``weight`` has one
    (k x k) kernel per connection, ``bias`` one value per output map.
    """

    def __init__(self, in_channels: int, table, kernel_size: int = 5):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, len(table), kernel_size
        flat = [o * in_channels + i for o, inputs in enumerate(table) for i in inputs]
        self.register_buffer("index", torch.tensor(flat), persistent=False)
        fan_in = torch.tensor([len(inputs) * kernel_size**2 for o, inputs in enumerate(table) for _ in inputs])
        bound = (1.0 / fan_in.float()).sqrt()[:, None, None]
        self.weight = nn.Parameter((torch.rand(len(flat), kernel_size, kernel_size) * 2 - 1) * bound)
        self.bias = nn.Parameter(torch.zeros(len(table)))

    def full_weight(self) -> torch.Tensor:
        """The equivalent dense (out, in, k, k) weight, zero where there is no connection."""
        k = self.kernel_size
        w = self.weight.new_zeros(self.out_channels * self.in_channels, k, k).index_copy(0, self.index, self.weight)
        return w.view(self.out_channels, self.in_channels, k, k)

    def forward(self, x):
        return F.conv2d(x, self.full_weight(), self.bias)


class RBFOutput(nn.Module):
    """The 1998 output layer: for each class, the squared distance between the input and
    a fixed code vector. Returns the negated distances, so the closest code scores highest
    (usable as logits). The codes are a buffer, not parameters (in 1998 they were fixed,
    hand-drawn 7x12 bitmaps of +-1; here, seeded random +-1 codes)."""

    def __init__(self, in_features: int = 84, num_classes: int = 10, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        codes = torch.randint(0, 2, (num_classes, in_features), generator=g).float() * 2 - 1
        self.register_buffer("centres", codes)

    def forward(self, x):
        return -((x[:, None, :] - self.centres[None]) ** 2).sum(-1)


class LeNet5Original(nn.Module):
    """LeNet-5 as in LeCun, Bottou, Bengio and Haffner (1998), for 32x32 grey images.

    ==========  ==========================================  ===========
    layer       what                                        parameters
    ==========  ==========================================  ===========
    C1          conv 1->6, 5x5                               (25+1)*6 =    156
    S2          2x2 sum x coefficient + bias, per map        2*6 =          12
    C3          conv 6->16, 5x5, the 1998 connection table   60*25+16 =  1,516
    S4          as S2, 16 maps                               2*16 =         32
    C5          conv 16->120, 5x5 (1x1 output)               (400+1)*120 = 48,120
    F6          linear 120->84                               (120+1)*84 = 10,164
    output      RBF: distance to 10 fixed +-1 codes          0 (a buffer)
    ==========  ==========================================  ===========

    Total: **60,000** trainable parameters. Every layer but the output is followed by
    the squashing function 1.7159 tanh(2a/3). The forward pass returns the negated RBF
    distances (shape (N, 10)), which work as logits for cross-entropy.
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5),  # C1
            ScaledTanh(),
            Subsampling(6),  # S2
            ScaledTanh(),
            SparseConv2d(6, C3_TABLE, 5),  # C3
            ScaledTanh(),
            Subsampling(16),  # S4
            ScaledTanh(),
            nn.Conv2d(16, 120, 5),  # C5
            ScaledTanh(),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(120, 84), ScaledTanh(), RBFOutput(84, num_classes))

    def forward(self, x):
        if x.ndim != 4 or x.shape[1:] != (1, 32, 32):
            raise ValueError(
                f"LeNet5Original expects images of shape (N, 1, 32, 32), got {tuple(x.shape)}; "
                "resize or pad 28x28 images to 32x32 (e.g. dlvision.data.digits(size=32))"
            )
        return self.classifier(self.features(x))


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
