"""Categorical scores from contingency counts, and the two CSI-M variants.

Counts arrays have the count kind on their LAST axis, in :data:`COUNT_NAMES` order
(hits H, misses M, false alarms F, correct negatives N); leading axes are free (threshold,
lead, event, bootstrap replicate...). Scores follow the SEVIR paper:

- POD  = H / (H + M)
- SUCR = H / (H + F)  (success ratio, 1 - FAR)
- CSI  = H / (H + M + F)
- BIAS = (H + F) / (H + M)
- HSS  = 2 (H N - M F) / ((H + M)(M + N) + (H + F)(F + N))  (Heidke skill score)

A score whose denominator is zero (no event observed or forecast) is NaN, never 0.

CSI-M is the mean of CSI over the thresholds. Two variants are kept apart:

- :func:`csi_m_pooled` ("as published", Earthformer's SEVIR table): counts summed over
  all lead times first, CSI per threshold, then the mean over thresholds;
- :func:`csi_m_per_lead`: CSI per threshold and lead, averaged over leads and thresholds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import numpy as np

from stormfusion.registry import Registry

#: Names of the four counts, in the order of the last axis of every counts array.
COUNT_NAMES: Final = ("hits", "misses", "false_alarms", "correct_negatives")
HITS, MISSES, FALSE_ALARMS, CORRECT_NEGATIVES = range(4)

#: name -> score(counts (..., 4)) -> (...) float64.
CATEGORICAL_SCORES: Registry[Callable[[np.ndarray], np.ndarray]] = Registry("categorical score")


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


@CATEGORICAL_SCORES.register("pod")
def pod(counts: np.ndarray) -> np.ndarray:
    """Probability of detection H / (H + M)."""
    c = np.asarray(counts)
    return _ratio(c[..., HITS], c[..., HITS] + c[..., MISSES])


@CATEGORICAL_SCORES.register("sucr")
def sucr(counts: np.ndarray) -> np.ndarray:
    """Success ratio H / (H + F) = 1 - false alarm ratio."""
    c = np.asarray(counts)
    return _ratio(c[..., HITS], c[..., HITS] + c[..., FALSE_ALARMS])


@CATEGORICAL_SCORES.register("csi")
def csi(counts: np.ndarray) -> np.ndarray:
    """Critical success index H / (H + M + F)."""
    c = np.asarray(counts)
    return _ratio(c[..., HITS], c[..., HITS] + c[..., MISSES] + c[..., FALSE_ALARMS])


@CATEGORICAL_SCORES.register("bias")
def bias(counts: np.ndarray) -> np.ndarray:
    """Frequency bias (H + F) / (H + M)."""
    c = np.asarray(counts)
    return _ratio(c[..., HITS] + c[..., FALSE_ALARMS], c[..., HITS] + c[..., MISSES])


@CATEGORICAL_SCORES.register("hss")
def hss(counts: np.ndarray) -> np.ndarray:
    """Heidke skill score: accuracy beyond chance, 2 (HN - MF) / ((H+M)(M+N) + (H+F)(F+N))."""
    c = np.asarray(counts, dtype=np.float64)
    h, m, f, n = (c[..., k] for k in (HITS, MISSES, FALSE_ALARMS, CORRECT_NEGATIVES))
    return _ratio(2.0 * (h * n - m * f), (h + m) * (m + n) + (h + f) * (f + n))


def _nanmean(x: np.ndarray, axis: int | tuple[int, ...]) -> np.ndarray:
    """Mean ignoring NaN; NaN (without a warning) where every value is NaN."""
    finite = np.isfinite(x)
    total = np.where(finite, x, 0.0).sum(axis=axis)
    n = finite.sum(axis=axis)
    return _ratio(total, n)


def threshold_mean(values: np.ndarray) -> np.ndarray:
    """Mean over the last (threshold) axis, leaving out undefined (NaN) thresholds."""
    return _nanmean(np.asarray(values, dtype=np.float64), axis=-1)


def csi_m_pooled(counts: np.ndarray) -> np.ndarray:
    """CSI-M as published: counts (..., T, L, 4) summed over leads, mean CSI over thresholds.

    Thresholds whose CSI is undefined (no event observed or forecast at any lead) are left
    out of the mean; the result is NaN only when none is defined. Returns shape (...).
    """
    pooled = np.asarray(counts).sum(axis=-2)  # (..., T, 4)
    return _nanmean(csi(pooled), axis=-1)


def csi_m_per_lead(counts: np.ndarray) -> np.ndarray:
    """Per-lead CSI-M: CSI of counts (..., T, L, 4) per threshold and lead, mean over both.

    Undefined (threshold, lead) cells are left out of the mean. Returns shape (...).
    """
    return _nanmean(csi(np.asarray(counts)), axis=(-2, -1))


def csi_m_by_lead(counts: np.ndarray) -> np.ndarray:
    """CSI-M at each lead: counts (..., T, L, 4) -> (..., L), mean CSI over thresholds."""
    return _nanmean(csi(np.asarray(counts)), axis=-2)
