"""What ``fit`` returns: per-epoch losses, accuracies and speed."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

__all__ = ["History"]


@dataclass
class History:
    """Per-epoch record of a training run.

    Lists have one entry per epoch run: ``train_loss``, ``train_acc`` (accuracy on the
    training batches as they were trained, augmented), ``val_loss`` and ``val_acc``
    (``nan`` without validation data), ``seconds`` (training and validation time of
    the epoch) and ``images_per_s`` (training images per second). ``device`` and
    ``precision`` say where and how it ran (``threads``: the CPU threads used, 0 on a
    GPU); ``best_epoch`` (1-based) is the epoch with
    the best monitored value; ``stopped_early`` says whether early stopping ended it.
    """

    train_loss: list = field(default_factory=list)
    train_acc: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_acc: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    images_per_s: list = field(default_factory=list)
    device: str = ""
    precision: str = ""
    best_epoch: int = 0
    stopped_early: bool = False
    threads: int = 0

    @property
    def epochs(self) -> int:
        return len(self.train_loss)

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds))

    def as_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in self.as_dict().items()})

    def plot(self):
        """The training curves as a matplotlib Figure (see :func:`dlvision.plots.training_curves`)."""
        from ..plots import training_curves

        return training_curves(self)

    def line(self, i: int = -1) -> str:
        """One plain line describing epoch ``i``."""
        n = self.epochs
        e = range(1, n + 1)[i]
        s = f"epoch {e:>3}/{getattr(self, '_planned', n)}  train loss {self.train_loss[i]:.4f} acc {100 * self.train_acc[i]:5.1f}%"
        if not math.isnan(self.val_loss[i]):
            s += f"  val loss {self.val_loss[i]:.4f} acc {100 * self.val_acc[i]:5.1f}%"
        return s + f"  {self.seconds[i]:.1f} s  {self.images_per_s[i]:,.0f} img/s"

    def __repr__(self) -> str:
        if not self.epochs:
            return "History(no epochs)"
        last = self.line(-1).split("  ", 1)[1]
        return (
            f"History({self.epochs} epochs on {self.device} in {self.precision}, "
            f"{self.total_seconds:.1f} s; last: {last})"
        )
