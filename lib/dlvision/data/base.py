"""The container every image dataset comes in: whole tensors, not per-item Python objects."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import DLVisionError, check_images, check_labels

__all__ = ["ImageData", "Split"]


@dataclass
class ImageData:
    """Images and labels held as whole tensors.

    ``x`` has shape (N, C, H, W): dtype uint8 (0..255) for 8-bit data, else float;
    ``y`` has shape (N,) and dtype int64; ``classes`` names each class index.
    ``mean`` and ``std`` (per channel, on the 0..1 scale) are the statistics used to
    normalise (computed from the training split).
    """

    x: torch.Tensor
    y: torch.Tensor
    classes: tuple = ()
    name: str = ""
    mean: tuple = field(default=())
    std: tuple = field(default=())

    def __post_init__(self):
        check_images(f"{self.name or 'ImageData'}.x", self.x)
        check_labels(f"{self.name or 'ImageData'}.y", self.y, len(self.x))
        if not self.classes and len(self.y) and self.y.device.type != "meta":
            self.classes = tuple(str(i) for i in range(int(self.y.max()) + 1))
        self.classes = tuple(self.classes)
        if not self.mean:
            self.mean, self.std = channel_stats(self.x)

    def __len__(self) -> int:
        return len(self.x)

    def __iter__(self):  # so that ``x, y = data`` works
        return iter((self.x, self.y))

    def __repr__(self) -> str:
        return (
            f"ImageData({self.name!r}: {len(self)} images {tuple(self.x.shape[1:])} {self.x.dtype}, "
            f"{len(self.classes)} classes, device {self.x.device})"
        )

    @property
    def shape(self) -> tuple:
        """(C, H, W) of one image."""
        return tuple(self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, n_or_index, *, seed: int = 0) -> ImageData:
        """The first ``n`` images of a seeded shuffle (a random subset), or those at an index tensor."""
        if isinstance(n_or_index, int):
            if not 0 < n_or_index <= len(self):
                raise DLVisionError(f"subset size must be in 1..{len(self)}, got {n_or_index}")
            g = torch.Generator().manual_seed(seed)
            idx = torch.randperm(len(self), generator=g)[:n_or_index].to(self.x.device)
        else:
            idx = torch.as_tensor(n_or_index, device=self.x.device)
        return ImageData(self.x[idx], self.y[idx], self.classes, self.name, self.mean, self.std)

    def to(self, device) -> ImageData:
        """The same data on ``device``."""
        return ImageData(self.x.to(device), self.y.to(device), self.classes, self.name, self.mean, self.std)

    def float(self) -> torch.Tensor:
        """The images as float32 in 0..1."""
        return self.x.float().div_(255) if self.x.dtype == torch.uint8 else self.x.float()

    def normalized(self) -> torch.Tensor:
        """The images as float32, normalised per channel with ``mean`` and ``std``."""
        m = torch.tensor(self.mean, device=self.x.device).view(1, -1, 1, 1)
        s = torch.tensor(self.std, device=self.x.device).view(1, -1, 1, 1)
        return (self.float() - m) / s

    def resized(self, size: int) -> ImageData:
        """The images resized to ``size`` x ``size`` (bilinear, antialiased), same dtype."""
        x = F.interpolate(self.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        if self.x.dtype == torch.uint8:
            x = x.mul_(255).round_().clamp_(0, 255).to(torch.uint8)
        return ImageData(x, self.y, self.classes, self.name, self.mean, self.std)


def channel_stats(x: torch.Tensor) -> tuple[tuple, tuple]:
    """Per-channel mean and standard deviation on the 0..1 scale."""
    xf = x[:10_000].float()
    if x.dtype == torch.uint8:
        xf = xf / 255
    mean = xf.mean(dim=(0, 2, 3))
    std = xf.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


class Split(tuple):
    """``(train, test)``, also reachable as ``.train`` and ``.test``."""

    def __new__(cls, train: ImageData, test: ImageData):
        return super().__new__(cls, (train, test))

    @property
    def train(self) -> ImageData:
        return self[0]

    @property
    def test(self) -> ImageData:
        return self[1]

    def __repr__(self) -> str:
        return f"Split(train={self[0]!r}, test={self[1]!r})"
