"""Continuous scores, streamed per event and lead as sums: MSE, MAE, SSIM, MS-SSIM, LPIPS and
the conservation error.

Only truth pixels in [0, 254] count (:mod:`stormfusion.verification.masking`).

- MSE and MAE are pixel means over the whole set (sums of squared / absolute errors divided
  by the number of valid pixels at the end), on the 0..255 VIL scale and on the /255 scale
  the published tables use (Earthformer reports MSE x 1e-3 on vil/255).
- SSIM is the single-scale structural similarity of Wang et al. (2004) per frame: Gaussian
  window sigma 1.5 truncated at 3.5 sigma (11 taps), K1 = 0.01, K2 = 0.03, data range 255,
  population covariances, averaged over the window positions that lie wholly inside the
  frame (the same numbers as ``skimage.metrics.structural_similarity(...,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)``), then
  averaged over frames.
- MS-SSIM is Wang, Simoncelli and Bovik (2003) as the SEVIR paper computes it: the same
  window at 5 scales (2 x 2 average pooling between scales, an odd side padded by repeating
  its last row or column), weights 0.0448, 0.2856, 0.3001, 0.2363, 0.1333, the contrast-
  structure term at the first four scales and SSIM at the last, each clipped at 0; on the
  forecast rounded to integers (uint8), per frame, averaged over frames. Frames smaller than
  11 x 2^4 = 176 pixels have no fifth scale: MS-SSIM is then n/a.
- LPIPS (AlexNet v0.1, :mod:`stormfusion.verification.lpips`) per frame, averaged.
- Conservation error per lead: sum over frames of |sum forecast - sum truth| (valid pixels)
  divided by the sum over frames of sum truth: the relative error of the VIL mass, frame by
  frame (so over- and under-forecasts of different samples do not cancel).

SSIM, MS-SSIM and LPIPS skip frames with any missing truth pixel and count them.
Every score is a ratio of the sums in :data:`SUM_NAMES`, registered in
:data:`CONTINUOUS_SCORES`: saved sums give back exactly the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from stormfusion.data.sevir import VIL_MAX
from stormfusion.errors import StormFusionError
from stormfusion.registry import Registry
from stormfusion.verification.events import EventTable, sample_ids
from stormfusion.verification.masking import missing_truth, whole_frames

if TYPE_CHECKING:
    from stormfusion.verification.lpips import LPIPS

#: Sums kept per (event, lead), in this order on the last axis of the table.
SUM_NAMES: Final = (
    "sse",  # sum of squared errors over valid pixels (0..255 scale)
    "sae",  # sum of absolute errors over valid pixels
    "n_pixels",  # valid pixels
    "n_excluded_pixels",  # truth pixels outside [0, 254]
    "ssim_sum",
    "ssim_frames",
    "msssim_sum",
    "msssim_frames",
    "lpips_sum",
    "lpips_frames",
    "skipped_frames",  # frames with missing truth, skipped by the frame scores
    "abs_mass_error",  # sum over frames of |sum forecast - sum truth| over valid pixels
    "truth_mass",  # sum over frames of sum truth over valid pixels
)
_I = {name: i for i, name in enumerate(SUM_NAMES)}
#: Frames per SSIM call (each needs about 10 float64 temporaries of its size).
SSIM_GROUP = 16
#: MS-SSIM scale weights (Wang et al. 2003).
MSSSIM_WEIGHTS: Final = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
#: Gaussian window of SSIM and MS-SSIM.
SSIM_SIGMA: Final = 1.5
SSIM_TAPS: Final = 11

#: name -> score(sums (..., len(SUM_NAMES))) -> (...) float64 (NaN where undefined).
CONTINUOUS_SCORES: Registry[Callable[[np.ndarray], np.ndarray]] = Registry("continuous score")


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _ratio_score(num: str, den: str, scale: float = 1.0) -> Callable[[np.ndarray], np.ndarray]:
    def score(sums: np.ndarray) -> np.ndarray:
        s = np.asarray(sums, dtype=np.float64)
        return _div(s[..., _I[num]], s[..., _I[den]]) / scale

    score.__doc__ = f"{num} / {den}" + (f" / {scale:g}" if scale != 1.0 else "")
    return score


for _name, _num, _den, _scale in (
    ("mse", "sse", "n_pixels", 1.0),
    ("mae", "sae", "n_pixels", 1.0),
    ("mse_01", "sse", "n_pixels", float(VIL_MAX) ** 2),
    ("mae_01", "sae", "n_pixels", float(VIL_MAX)),
    ("ssim", "ssim_sum", "ssim_frames", 1.0),
    ("msssim", "msssim_sum", "msssim_frames", 1.0),
    ("lpips", "lpips_sum", "lpips_frames", 1.0),
    ("conservation", "abs_mass_error", "truth_mass", 1.0),
):
    CONTINUOUS_SCORES.register(_name)(_ratio_score(_num, _den, _scale))


def _gaussian_window(sigma: float = SSIM_SIGMA, truncate: float = 3.5) -> Tensor:
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def _ssim_terms(
    x: Tensor, y: Tensor, data_range: float, sigma: float = SSIM_SIGMA
) -> tuple[Tensor, Tensor]:
    """Mean SSIM and mean contrast-structure term of (N, 1, H, W) float64 frames: (N,) each."""
    g = _gaussian_window(sigma).to(x.device)
    size = g.numel()
    kx, ky = g.reshape(1, 1, 1, size), g.reshape(1, 1, size, 1)

    def blur(z: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(z, kx), ky)

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    cs = (2 * cxy + c2) / (vx + vy + c2)
    luminance = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    return (luminance * cs).mean(dim=(1, 2, 3)), cs.mean(dim=(1, 2, 3))


def _check_frames(x: Tensor, y: Tensor, smallest: int, what: str) -> None:
    if x.shape != y.shape or x.dim() != 3:
        raise StormFusionError(f"{what} needs two (N, H, W) stacks, got {x.shape} and {y.shape}")
    if min(x.shape[-2:]) < smallest:
        raise StormFusionError(
            f"{what} needs frames of at least {smallest} x {smallest}, got {tuple(x.shape)}"
        )


def ssim(x: Tensor, y: Tensor, data_range: float = VIL_MAX, sigma: float = SSIM_SIGMA) -> Tensor:
    """SSIM of each frame pair: x, y (N, H, W) -> (N,) float64 (frames >= 11 x 11)."""
    _check_frames(x, y, SSIM_TAPS, "ssim")
    value, _ = _ssim_terms(x.to(torch.float64)[:, None], y.to(torch.float64)[:, None], data_range)
    return value


def msssim_min_size() -> int:
    """Smallest frame side with a full window at the coarsest MS-SSIM scale (176)."""
    return SSIM_TAPS * 2 ** (len(MSSSIM_WEIGHTS) - 1)


def _halve(z: Tensor) -> Tensor:
    """2 x 2 average pooling; an odd side is padded by repeating its last row/column."""
    pad_h, pad_w = z.shape[-2] % 2, z.shape[-1] % 2
    if pad_h or pad_w:
        z = F.pad(z, (0, pad_w, 0, pad_h), mode="replicate")
    return F.avg_pool2d(z, kernel_size=2, stride=2)


def ms_ssim(x: Tensor, y: Tensor, data_range: float = VIL_MAX) -> Tensor:
    """MS-SSIM of each frame pair (see the module docstring): x, y (N, H, W) -> (N,) float64.

    Frames must be at least :func:`msssim_min_size` pixels on each side.
    """
    _check_frames(x, y, msssim_min_size(), "ms-ssim")
    a, b = x.to(torch.float64)[:, None], y.to(torch.float64)[:, None]
    out = torch.ones(x.shape[0], dtype=torch.float64, device=x.device)
    last = len(MSSSIM_WEIGHTS) - 1
    for level, weight in enumerate(MSSSIM_WEIGHTS):
        value, cs = _ssim_terms(a, b, data_range)
        term = value if level == last else cs
        out = out * torch.clamp(term, min=0.0) ** weight
        if level < last:
            a, b = _halve(a), _halve(b)
    return out


def _grouped(fn: Callable[[Tensor, Tensor], Tensor], f: Tensor, o: Tensor) -> Tensor:
    """``fn`` over frames (N, H, W) in groups, to bound the float64 temporaries."""
    if f.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float64, device=f.device)
    return torch.cat(
        [fn(f[i : i + SSIM_GROUP], o[i : i + SSIM_GROUP]) for i in range(0, f.shape[0], SSIM_GROUP)]
    )


@dataclass(frozen=True)
class ContinuousScores:
    """Every score of :data:`CONTINUOUS_SCORES` over the set (``overall``) and by lead (L,)."""

    overall: dict[str, float]
    by_lead: dict[str, np.ndarray]
    n_excluded_pixels: int
    n_skipped_frames: int


def continuous_scores(sums: np.ndarray) -> ContinuousScores:
    """The scores of sums (L, len(SUM_NAMES)) (the set's sums by lead)."""
    by_lead = np.asarray(sums, dtype=np.float64)
    total = by_lead.sum(axis=0)
    return ContinuousScores(
        overall={n: float(CONTINUOUS_SCORES.get(n)(total)) for n in CONTINUOUS_SCORES},
        by_lead={n: CONTINUOUS_SCORES.get(n)(by_lead) for n in CONTINUOUS_SCORES},
        n_excluded_pixels=int(total[_I["n_excluded_pixels"]]),
        n_skipped_frames=int(total[_I["skipped_frames"]]),
    )


@dataclass
class ContinuousSums(EventTable):
    """Streaming sums per event and lead: ``table`` (E, L, len(SUM_NAMES)) float64.

    ``lpips`` (not part of the state) is the network used for LPIPS; None leaves its sums 0.
    SSIM is computed when ``with_ssim``, MS-SSIM when ``with_msssim`` and the frames are
    large enough.
    """

    n_leads: int = 1
    with_ssim: bool = True
    with_msssim: bool = True
    lpips: LPIPS | None = None

    @classmethod
    def init(
        cls, n_leads: int, with_ssim: bool = True, lpips: LPIPS | None = None
    ) -> ContinuousSums:
        """Empty sums for ``n_leads`` lead times."""
        return cls.from_table([], np.zeros((0, n_leads, len(SUM_NAMES))), with_ssim, lpips)

    @classmethod
    def from_table(
        cls,
        events: Sequence[str],
        table: np.ndarray,
        with_ssim: bool = True,
        lpips: LPIPS | None = None,
    ) -> ContinuousSums:
        """Sums restored from a saved state: ``table`` (E, L, len(SUM_NAMES))."""
        t = np.asarray(table, dtype=np.float64)
        if t.ndim != 3 or t.shape[0] != len(events) or t.shape[2] != len(SUM_NAMES):
            raise StormFusionError(
                f"continuous sums of shape {t.shape} do not fit {len(events)} events and the "
                f"{len(SUM_NAMES)} sums {SUM_NAMES}"
            )
        return cls(list(events), t.copy(), int(t.shape[1]), with_ssim, with_ssim, lpips)

    def _frame_sums(self, f: Tensor, o: Tensor, whole: Tensor, sums: Tensor) -> None:
        """SSIM, MS-SSIM and LPIPS of the frames without missing truth into ``sums``."""
        b, n_leads, h, w = f.shape
        keep = whole.reshape(-1)
        ff, oo = f.reshape(-1, h, w)[keep], o.reshape(-1, h, w)[keep]
        flat = sums.reshape(b * n_leads, len(SUM_NAMES))
        kept = keep.to(torch.float64)
        if self.with_ssim:
            flat[keep, _I["ssim_sum"]] = _grouped(ssim, ff, oo)
            flat[:, _I["ssim_frames"]] = kept
        if self.with_msssim and min(h, w) >= msssim_min_size():
            flat[keep, _I["msssim_sum"]] = _grouped(ms_ssim, torch.round(ff), oo)
            flat[:, _I["msssim_frames"]] = kept
        if self.lpips is not None and ff.shape[0]:
            flat[keep, _I["lpips_sum"]] = self.lpips.vil_distance(ff, oo).to(
                device=f.device, dtype=torch.float64
            )
            flat[:, _I["lpips_frames"]] = kept
        elif self.lpips is not None:
            flat[:, _I["lpips_frames"]] = 0.0
        flat[:, _I["skipped_frames"]] = 1.0 - kept

    def accumulate(
        self, forecast: Tensor, truth: Tensor, event_ids: Sequence[str] | None = None
    ) -> ContinuousSums:
        """Add a batch: forecast and truth (B, L, H, W), 0..255 scale (truth 255 = missing)."""
        shape_ok = forecast.shape == truth.shape and forecast.dim() == 4
        if not shape_ok or forecast.shape[1] != self.n_leads:
            raise StormFusionError(
                f"forecast {tuple(forecast.shape)} and truth {tuple(truth.shape)} must both be "
                f"(sample, {self.n_leads} leads, y, x)"
            )
        b, n_leads = forecast.shape[:2]
        ids = sample_ids(event_ids, b)
        f = forecast.to(torch.float64)
        o = truth.to(device=forecast.device, dtype=torch.float64)
        missing = missing_truth(o)
        keep = None if missing is None else (~missing).to(torch.float64)
        err = f - o if keep is None else (f - o) * keep
        sums = torch.zeros(b, n_leads, len(SUM_NAMES), dtype=torch.float64, device=f.device)
        sums[..., _I["sse"]] = (err * err).sum(dim=(2, 3))
        sums[..., _I["sae"]] = err.abs().sum(dim=(2, 3))
        n_valid = f[0, 0].numel() if keep is None else keep.sum(dim=(2, 3))
        sums[..., _I["n_pixels"]] = n_valid
        sums[..., _I["n_excluded_pixels"]] = f[0, 0].numel() - sums[..., _I["n_pixels"]]
        mass_f = (f if keep is None else f * keep).sum(dim=(2, 3))
        mass_o = (o if keep is None else o * keep).sum(dim=(2, 3))
        sums[..., _I["abs_mass_error"]] = (mass_f - mass_o).abs()
        sums[..., _I["truth_mass"]] = mass_o
        self._frame_sums(f, o, whole_frames(missing, f.shape).to(f.device), sums)
        self.add(ids, sums.cpu().numpy())
        return self

    def merge(self, other: ContinuousSums) -> ContinuousSums:
        """A new object with the sums of ``self`` and ``other``."""
        if other.n_leads != self.n_leads or other.with_ssim != self.with_ssim:
            raise StormFusionError("cannot merge continuous sums with different leads or SSIM")
        out = ContinuousSums.from_table(self.events, self.table, self.with_ssim, self.lpips)
        out.add(other.events, other.table)
        return out

    def compute(self) -> ContinuousScores:
        """Every registered continuous score over the set and by lead.

        Events are summed in the order of their ids, so the same sums give the same numbers
        to the last digit whatever order they were accumulated (or saved) in.
        """
        return continuous_scores(self.aligned(sorted(self.events)).sum(axis=0))
