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


def valid_truth(truth: Tensor) -> Tensor:
    """Boolean mask of the truth pixels that are data: same shape as ``truth``."""
    return (truth >= VALID_TRUTH[0]) & (truth <= VALID_TRUTH[1])


def whole_frames(valid: Tensor) -> Tensor:
    """(B, L, H, W) pixel mask -> (B, L): frames without any missing truth pixel."""
    return valid.flatten(2).all(dim=-1)


def pooled_valid(valid: Tensor, size: int) -> Tensor:
    """(B, L, H, W) pixel mask -> (B, L, H // size, W // size): cells with no missing pixel."""
    invalid = (~valid).to(torch.float32)
    return torch.nn.functional.max_pool2d(invalid, kernel_size=size, stride=size) == 0
