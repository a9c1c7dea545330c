"""Missing truth: which pixels, pooled cells and frames every score leaves out.

The official SEVIR test drops every truth pixel outside [0, 254] (digital VIL 255 means
"missing"): such a pixel is never a hit, miss, false alarm or correct negative and adds
nothing to MSE, MAE or the mass sums. A pooled cell (CSI-pool) with any missing truth pixel
is left out whole; a frame with any missing truth pixel is skipped (and counted) by the
frame scores SSIM, MS-SSIM and LPIPS, whose windows would otherwise see it.

Truth tensors reaching the accumulators therefore keep 255 where the archive is missing
(:mod:`stormfusion.verification.truth` reads them so); forecasts never carry a missing value.
"""

from __future__ import annotations

from typing import Final

import torch
from torch import Tensor

from stormfusion.data.sevir import VIL_MISSING

#: Truth values that are data (inclusive bounds, 0..255 VIL scale).
VALID_TRUTH: Final = (0, VIL_MISSING - 1)
#: How missing truth is treated, as declared in every score file and table.
MISSING_DECLARATION: Final = (
    f"truth pixels outside [{VALID_TRUTH[0]}, {VALID_TRUTH[1]}] ({VIL_MISSING} = missing) are "
    "excluded from every score; a pooled cell with any missing truth pixel is excluded; "
    "frames with any missing truth pixel are skipped by SSIM, MS-SSIM and LPIPS (counted)"
)


def missing_truth(truth: Tensor) -> Tensor | None:
    """Boolean mask (same shape) of the truth pixels outside [0, 254]; None when there are
    none (the common case, found with one min/max pass)."""
    lo, hi = torch.aminmax(truth)
    if bool(hi <= VALID_TRUTH[1]):
        return None if bool(lo >= VALID_TRUTH[0]) else truth < VALID_TRUTH[0]
    high = truth > VALID_TRUTH[1]
    return high if bool(lo >= VALID_TRUTH[0]) else high | (truth < VALID_TRUTH[0])


def whole_frames(missing: Tensor | None, shape: torch.Size) -> Tensor:
    """(B, L) bool: the frames of a (B, L, H, W) batch without any missing truth pixel."""
    if missing is None:
        return torch.ones(shape[:2], dtype=torch.bool)
    return ~missing.flatten(2).any(dim=-1)


def pooled_missing(missing: Tensor | None, size: int) -> Tensor | None:
    """(B, L, H, W) pixel mask -> (B, L, H // size, W // size): cells with a missing pixel."""
    if missing is None:
        return None
    pooled = torch.nn.functional.max_pool2d(missing.to(torch.float32), size, stride=size)
    return pooled > 0
