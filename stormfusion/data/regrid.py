"""Bring each modality from its native grid to the model grid (square, ``size`` pixels).

SEVIR's sensors share one 384 km patch on grids of different resolution: VIL 384 (1 km),
IR 192 (2 km), lightning 48 (8 km). The loader resamples every modality to the model grid
with the method that suits the quantity:

- continuous fields (VIL, IR brightness temperatures): identity when the sizes are equal,
  bilinear interpolation (half-pixel centres, ``align_corners=False``) when enlarging, and
  the exact area average of the covered source pixels when shrinking (no aliasing);
- counts (lightning flashes): conservative remapping, each source cell's count shared
  among target cells in proportion to their overlap, so the total number of flashes per
  frame is kept exactly (up to float rounding) for any pair of sizes.

All functions take and return float32 tensors of shape ``(..., n, n)`` (the last two
dimensions are y, x), so frames, channels and batches pass through unchanged, on whatever
device the tensor lives (the loader calls them on CPU when a store's grid differs from the
batch's; models call them on the GPU through
:meth:`stormfusion.models.base.ForecastModel.prepare_inputs`).

The method of each modality is looked up by name in :data:`REGRIDDERS`, a
:class:`stormfusion.registry.Registry`. :func:`native_size` gives the grid each modality
has in a batch of a given VIL size (IR half, lightning an eighth, as in SEVIR).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from stormfusion.data.sevir import MODALITIES
from stormfusion.errors import StormFusionError
from stormfusion.registry import Registry

Regridder = Callable[[torch.Tensor, int], torch.Tensor]


@lru_cache(maxsize=64)
def _overlap_matrix(n_src: int, n_dst: int) -> np.ndarray:
    """Fractions of each source cell that fall in each target cell: shape (n_dst, n_src).

    Both grids span [0, 1]; every column sums to 1 (each source cell is shared out whole).
    """
    src = np.linspace(0.0, 1.0, n_src + 1)
    dst = np.linspace(0.0, 1.0, n_dst + 1)
    lo = np.maximum(dst[:-1, None], src[None, :-1])
    hi = np.minimum(dst[1:, None], src[None, 1:])
    overlap = np.clip(hi - lo, 0.0, None) * n_src  # as a fraction of a source cell
    overlap /= overlap.sum(axis=0, keepdims=True)  # remove rounding drift
    return overlap.astype(np.float32)


def _check(x: torch.Tensor, size: int) -> int:
    if size < 1:
        raise StormFusionError(f"model grid size must be >= 1, got {size}")
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise StormFusionError(f"expected square frames (..., n, n), got shape {tuple(x.shape)}")
    return int(x.shape[-1])


def _apply(x: torch.Tensor, rows: np.ndarray, cols: np.ndarray) -> torch.Tensor:
    """``rows @ x @ cols.T`` over the last two dimensions."""
    r = torch.from_numpy(rows).to(device=x.device, dtype=x.dtype)
    c = torch.from_numpy(cols).to(device=x.device, dtype=x.dtype)
    return torch.matmul(torch.matmul(r, x), c.transpose(0, 1))


def regrid_counts(x: torch.Tensor, size: int) -> torch.Tensor:
    """Conservative (count-preserving) remapping of per-cell counts to ``size`` x ``size``.

    Args:
        x: counts, float32 ``(..., n, n)``.
        size: target pixels per side.

    Returns:
        ``(..., size, size)``; ``out.sum((-2, -1)) == x.sum((-2, -1))`` for every frame.
        Enlarging by an integer factor k spreads each count evenly over k x k cells.
    """
    n = _check(x, size)
    if n == size:
        return x
    w = _overlap_matrix(n, size)
    return _apply(x, w, w)


def regrid_mean(x: torch.Tensor, size: int) -> torch.Tensor:
    """Area-weighted average of the source pixels each target pixel covers.

    Args:
        x: a continuous field, float32 ``(..., n, n)``.
        size: target pixels per side.

    Returns:
        ``(..., size, size)``; shrinking by an integer factor k is k x k block averaging.
    """
    n = _check(x, size)
    if n == size:
        return x
    w = _overlap_matrix(n, size)
    w = w / w.sum(axis=1, keepdims=True)  # each target cell: weights summing to 1
    return _apply(x, w, w)


def regrid_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear interpolation with half-pixel centres (``align_corners=False``)."""
    n = _check(x, size)
    if n == size:
        return x
    lead = x.shape[:-2]
    flat = x.reshape(-1, 1, n, n)
    out = F.interpolate(flat, size=(size, size), mode="bilinear", align_corners=False)
    return out.reshape(*lead, size, size)


def regrid_continuous(x: torch.Tensor, size: int) -> torch.Tensor:
    """Continuous fields: identity, bilinear when enlarging, area average when shrinking."""
    n = _check(x, size)
    if n == size:
        return x
    return regrid_bilinear(x, size) if size > n else regrid_mean(x, size)


#: modality -> how its frames reach another grid (unknown names list the valid ones).
REGRIDDERS: Registry[Regridder] = Registry("regridding method (by modality)")
for _name in ("vil", "ir069", "ir107", "vis"):
    REGRIDDERS.register(_name)(regrid_continuous)
REGRIDDERS.register("lght")(regrid_counts)


def regrid(modality: str, x: torch.Tensor, size: int) -> torch.Tensor:
    """Frames of ``modality`` (float ``(..., n, n)``, stored units) on the ``size`` grid."""
    return REGRIDDERS.get(modality)(x, size)


def native_size(modality: str, vil_size: int) -> int:
    """Pixels per side of ``modality`` in a domain whose VIL grid is ``vil_size``.

    SEVIR's grids share one patch: VIL 384, IR 192, lightning 48, visible 768, so at
    ``vil_size`` S IR has S/2 and lightning S/8 pixels.

    Raises:
        StormFusionError: unknown modality, or S not divisible by the modality's factor.
    """
    spec = MODALITIES.get(modality)
    if spec is None:
        raise StormFusionError(
            f"unknown modality {modality!r}; valid: {', '.join(sorted(MODALITIES))}"
        )
    n = vil_size * spec.size
    if n % MODALITIES["vil"].size:
        factor = MODALITIES["vil"].size // spec.size
        raise StormFusionError(
            f"image size {vil_size} is not divisible by {factor}: {modality!r} has 1/{factor} "
            "of the VIL grid's pixels per side"
        )
    return n // MODALITIES["vil"].size
