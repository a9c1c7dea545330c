"""Continuous scores: MSE, MAE (0..255 and /255 scales) and SSIM, streamed per event and lead.

MSE and MAE are pixel means over the whole set (sums of squared / absolute errors divided
by the pixel count at the end), on the 0..255 VIL scale and on the /255 scale the published
tables use (Earthformer reports MSE x 1e-3 on vil/255). SSIM is the single-scale structural
similarity of Wang et al. (2004) per frame: Gaussian window sigma 1.5 truncated at 3.5 sigma
(11 taps), K1 = 0.01, K2 = 0.03, data range 255, population covariances, averaged over the
window positions that lie wholly inside the frame (the same numbers as
``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255)``), then averaged over frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from stormfusion.errors import StormFusionError
from stormfusion.verification.contingency import ALL_EVENTS

VIL_RANGE = 255.0
#: Sums kept per (event, lead), in this order on the last axis of :attr:`table`.
SUM_NAMES = ("sse", "sae", "n_pixels", "ssim_sum", "n_frames")
#: Frames per SSIM call (each needs about 10 float64 temporaries of its size).
SSIM_GROUP = 16


def _gaussian_window(sigma: float = 1.5, truncate: float = 3.5) -> Tensor:
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def ssim(x: Tensor, y: Tensor, data_range: float = VIL_RANGE, sigma: float = 1.5) -> Tensor:
    """SSIM of each frame pair: x, y (N, H, W) -> (N,) float64.

    Frames must be at least as large as the window (11 x 11 for sigma 1.5).
    """
    if x.shape != y.shape or x.dim() != 3:
        raise StormFusionError(f"ssim needs two (N, H, W) stacks, got {x.shape} and {y.shape}")
    g = _gaussian_window(sigma).to(x.device)
    size = g.numel()
    if min(x.shape[-2:]) < size:
        raise StormFusionError(f"ssim needs frames of at least {size} x {size}, got {x.shape}")
    x = x.to(torch.float64)[:, None]
    y = y.to(torch.float64)[:, None]
    kx = g.reshape(1, 1, 1, size)
    ky = g.reshape(1, 1, size, 1)

    def blur(z: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(z, kx), ky)

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3))


@dataclass(frozen=True)
class ContinuousScores:
    """Set-level continuous scores; ``*_by_lead`` are (L,)."""

    mse: float  # 0..255 scale
    mae: float
    mse_01: float  # VIL / 255 scale
    mae_01: float
    ssim: float
    mse_by_lead: np.ndarray
    mae_by_lead: np.ndarray
    ssim_by_lead: np.ndarray


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(np.shape(num), np.nan)
    np.divide(num, den, out=out, where=np.asarray(den) > 0)
    return out


@dataclass
class ContinuousSums:
    """Streaming sums per event and lead: ``table`` (E, L, 5) float64 in ``SUM_NAMES`` order."""

    n_leads: int
    with_ssim: bool = True
    events: list[str] = field(default_factory=list)
    table: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 5)))

    @classmethod
    def init(cls, n_leads: int, with_ssim: bool = True) -> ContinuousSums:
        """Empty sums for ``n_leads`` lead times."""
        return cls(n_leads, with_ssim, [], np.zeros((0, n_leads, len(SUM_NAMES))))

    def _rows(self, event_ids: Sequence[str]) -> list[int]:
        index = {e: i for i, e in enumerate(self.events)}
        rows = []
        for e in event_ids:
            if e not in index:
                index[e] = len(self.events)
                self.events.append(e)
            rows.append(index[e])
        grow = len(self.events) - self.table.shape[0]
        if grow:
            self.table = np.concatenate([self.table, np.zeros((grow, *self.table.shape[1:]))])
        return rows

    def accumulate(
        self, forecast: Tensor, truth: Tensor, event_ids: Sequence[str] | None = None
    ) -> ContinuousSums:
        """Add a batch: forecast and truth (B, L, H, W) on the 0..255 scale. Returns self."""
        shape_ok = forecast.shape == truth.shape and forecast.dim() == 4
        if not shape_ok or forecast.shape[1] != self.n_leads:
            raise StormFusionError(
                f"forecast {tuple(forecast.shape)} and truth {tuple(truth.shape)} must both be "
                f"(sample, {self.n_leads} leads, y, x)"
            )
        b, n_leads, h, w = forecast.shape
        ids = [ALL_EVENTS] * b if event_ids is None else list(event_ids)
        if len(ids) != b:
            raise StormFusionError(f"{len(ids)} event ids for {b} samples")
        f = forecast.to(torch.float64)
        o = truth.to(device=forecast.device, dtype=torch.float64)
        err = f - o
        sums = torch.zeros(b, n_leads, len(SUM_NAMES), dtype=torch.float64, device=f.device)
        sums[..., 0] = (err * err).sum(dim=(2, 3))
        sums[..., 1] = err.abs().sum(dim=(2, 3))
        sums[..., 2] = float(h * w)
        if self.with_ssim:
            frames_f, frames_o = f.reshape(-1, h, w), o.reshape(-1, h, w)
            per_frame = torch.cat(  # in groups of frames, to bound the float64 temporaries
                [
                    ssim(frames_f[i : i + SSIM_GROUP], frames_o[i : i + SSIM_GROUP])
                    for i in range(0, frames_f.shape[0], SSIM_GROUP)
                ]
            )
            sums[..., 3] = per_frame.reshape(b, n_leads)
            sums[..., 4] = 1.0
        rows = self._rows(ids)
        np.add.at(self.table, rows, sums.cpu().numpy())
        return self

    def merge(self, other: ContinuousSums) -> ContinuousSums:
        """A new object with the sums of ``self`` and ``other``."""
        if other.n_leads != self.n_leads or other.with_ssim != self.with_ssim:
            raise StormFusionError("cannot merge continuous sums with different leads or SSIM")
        out = ContinuousSums(self.n_leads, self.with_ssim, list(self.events), self.table.copy())
        rows = out._rows(other.events)
        np.add.at(out.table, rows, other.table)
        return out

    def compute(self) -> ContinuousScores:
        """MSE, MAE (both scales) and SSIM over the set and by lead."""
        by_lead = self.table.sum(axis=0)  # (L, 5)
        total = by_lead.sum(axis=0)
        mse = float(_div(total[0], total[2]))
        mae = float(_div(total[1], total[2]))
        return ContinuousScores(
            mse=mse,
            mae=mae,
            mse_01=mse / VIL_RANGE**2,
            mae_01=mae / VIL_RANGE,
            ssim=float(_div(total[3], total[4])) if self.with_ssim else math.nan,
            mse_by_lead=_div(by_lead[:, 0], by_lead[:, 2]),
            mae_by_lead=_div(by_lead[:, 1], by_lead[:, 2]),
            ssim_by_lead=_div(by_lead[:, 3], by_lead[:, 4]),
        )
