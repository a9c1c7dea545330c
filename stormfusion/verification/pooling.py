"""Pooling before thresholding, for the pooled CSI of later SEVIR papers ("CSI-pool4/16").

Forecast and truth are pooled with the same kernel (kernel = stride = ``size``) over the
image axes before the contingency counts are taken, which forgives small displacement
errors. Two kinds exist: ``max`` (a block is an event when any pixel in it is) and ``avg``
(when its mean reaches the threshold).

>>> import torch
>>> Pooling("max", 4).apply(torch.arange(64.0).reshape(1, 1, 8, 8)).shape
torch.Size([1, 1, 2, 2])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from stormfusion.errors import StormFusionError
from stormfusion.registry import Registry

#: kind -> function(x (N, C, H, W) float, size) -> (N, C, H // size, W // size).
POOLINGS: Registry[Callable[[Tensor, int], Tensor]] = Registry("pooling")


@POOLINGS.register("max")
def _max_pool(x: Tensor, size: int) -> Tensor:
    return F.max_pool2d(x, kernel_size=size, stride=size)


@POOLINGS.register("avg")
def _avg_pool(x: Tensor, size: int) -> Tensor:
    return F.avg_pool2d(x, kernel_size=size, stride=size)


@dataclass(frozen=True)
class Pooling:
    """A pooling applied to forecast and truth before counting.

    Attributes:
        kind: ``max`` or ``avg`` (see :data:`POOLINGS`).
        size: kernel size and stride in pixels (4 and 16 in the literature).
    """

    kind: str
    size: int

    def __post_init__(self) -> None:
        POOLINGS.get(self.kind)  # unknown kinds list the valid ones
        if self.size < 1:
            raise StormFusionError(f"pooling size must be >= 1, got {self.size}")

    @property
    def name(self) -> str:
        """Short label, e.g. ``max4``."""
        return f"{self.kind}{self.size}"

    @classmethod
    def parse(cls, name: str) -> Pooling:
        """Inverse of :attr:`name` (``max16`` -> Pooling("max", 16))."""
        kind = name.rstrip("0123456789")
        digits = name[len(kind) :]
        if not digits:
            raise StormFusionError(f"pooling name {name!r} lacks a size, e.g. 'max4'")
        return cls(kind, int(digits))

    def apply(self, x: Tensor) -> Tensor:
        """Pool ``x`` of shape (B, L, H, W) to (B, L, H // size, W // size), float32.

        H and W must be multiples of ``size`` so that every block is whole.
        """
        h, w = x.shape[-2:]
        if h % self.size or w % self.size:
            raise StormFusionError(
                f"pooling {self.name}: image size {h} x {w} is not a multiple of {self.size}"
            )
        return POOLINGS.get(self.kind)(x.float(), self.size)


#: The pooled variants scored by default: max- and average-pool with kernel 4 and 16.
DEFAULT_POOLINGS: tuple[Pooling, ...] = (
    Pooling("max", 4),
    Pooling("max", 16),
    Pooling("avg", 4),
    Pooling("avg", 16),
)
