"""StormCellDetector: storm cells as local maxima of the latest VIL frame."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stormfusion.errors import StormFusionError


@dataclass
class StormCells:
    """Detected cells of a batch, padded to ``K = max_cells`` per sample.

    Attributes:
        positions: (B, K, 2) float, (x, y) in [0, 1]: pixel centres, x along columns, y
            along rows (row 0 is the south edge, so y grows northwards).
        intensity: (B, K) float, VIL (0..255) at each peak.
        rows, cols: (B, K) long, pixel indices of each peak on the input grid.
        valid: (B, K) bool, which of the K slots hold a cell (strongest first).
    """

    positions: Tensor
    intensity: Tensor
    rows: Tensor
    cols: Tensor
    valid: Tensor

    @property
    def counts(self) -> Tensor:
        """(B,) number of cells per sample."""
        return self.valid.sum(dim=1)


class StormCellDetector(nn.Module):
    """Local maxima of VIL at or above ``threshold`` that dominate a ``window``-pixel square.

    A pixel is a peak when it is the maximum of the ``window`` x ``window`` square around it
    (odd: centred; even, as the seed's 8 x 8: one more pixel before than after) and its VIL
    is >= ``threshold``; pixels are ranked by VIL rounded to the digital integer, ties
    (plateaus) broken by pixel index, so a flat top gives one peak. At most ``max_cells``
    peaks are kept per sample, the strongest. All batched tensor operations.

    Args:
        threshold: VIL (0..255) a peak must reach (74 = 0.78 kg/m^2, a moderate echo).
        window: side in pixels of the square a peak must dominate (``2 s + 1`` keeps peaks
            at least ``s`` pixels apart).
        max_cells: cap on cells per sample.
        centre_fallback: give a sample without any peak one cell at the grid centre (the
            seed's dummy node) instead of none.
    """

    def __init__(
        self,
        threshold: float = 74.0,
        window: int = 17,
        max_cells: int = 64,
        centre_fallback: bool = False,
    ) -> None:
        super().__init__()
        if window < 2 or max_cells < 1:
            raise StormFusionError(
                f"storm-cell detector needs a window >= 2 and max_cells >= 1; "
                f"got {window} and {max_cells}"
            )
        self.threshold = float(threshold)
        self.window = int(window)
        self.max_cells = int(max_cells)
        self.centre_fallback = bool(centre_fallback)

    @torch.no_grad()
    def forward(self, vil: Tensor) -> StormCells:
        """Detect cells in ``vil`` (B, H, W), raw 0..255 scale."""
        b, h, w = vil.shape
        vil = vil.float()
        # Exact tie-breaking: digital VIL is an integer, so rank by (rounded VIL, pixel index)
        # packed into one float64 (exact up to 2^53; 255 * 384^2 is about 3.8e7).
        index = torch.arange(h * w, device=vil.device, dtype=torch.float64).reshape(h, w)
        score = torch.round(vil).double() * (h * w) + index
        n = self.window
        before, after = n // 2, n - 1 - n // 2
        padded = F.pad(score[:, None], (before, after, before, after), value=-torch.inf)
        # the window maximum is separable: rows, then columns
        window_max = F.max_pool2d(padded, (n, 1), stride=1)
        window_max = F.max_pool2d(window_max, (1, n), stride=1)[:, 0]
        peaks = (score >= window_max) & (vil >= self.threshold)
        masked = torch.where(peaks, score, torch.full_like(score, -torch.inf)).reshape(b, -1)
        k = min(self.max_cells, h * w)
        top, index = masked.topk(k, dim=1)
        valid = torch.isfinite(top)
        if self.centre_fallback:
            empty = ~valid[:, 0]
            index[:, 0] = torch.where(empty, (h // 2) * w + w // 2, index[:, 0])
            valid[:, 0] = True
        rows = torch.div(index, w, rounding_mode="floor")
        cols = index % w
        positions = torch.stack([(cols.float() + 0.5) / w, (rows.float() + 0.5) / h], dim=-1)
        intensity = vil.reshape(b, -1).gather(1, index) * valid
        return StormCells(positions * valid[..., None], intensity, rows, cols, valid)


def gather_node_features(
    features: Tensor, cells: StormCells, height: int, width: int, neighbourhood: int = 3
) -> Tensor:
    """Encoder features at each cell: the ``neighbourhood`` x ``neighbourhood`` mean (odd; 1
    = the feature vector of the peak's pixel) on the feature grid at the peak.

    ``features`` (B, C, h, w), at the (height, width) grid of the detection or coarser.
    Returns (B, K, C), zeros in invalid slots.
    """
    b, c, fh, fw = features.shape
    local = features
    if neighbourhood > 1:
        local = F.avg_pool2d(
            features, neighbourhood, 1, neighbourhood // 2, count_include_pad=False
        )
    rows = torch.div(cells.rows * fh, height, rounding_mode="floor")
    cols = torch.div(cells.cols * fw, width, rounding_mode="floor")
    flat = (rows * fw + cols).clamp(0, fh * fw - 1)
    gathered = local.reshape(b, c, fh * fw).gather(2, flat[:, None, :].expand(b, c, -1))
    return gathered.transpose(1, 2) * cells.valid[..., None].to(features.dtype)
