"""Bootstrap confidence intervals over events (seeded), for CSI-M and CSI per threshold.

Windows of one storm are correlated, so the resampling unit is the SEVIR event: each
replicate draws E events with replacement and sums their contingency counts (an event
drawn twice counts twice) before the scores are divided out, as for the full set. The
difference between two models uses the *same* draws for both (paired resampling), so it
measures the models' difference on the same storms.

All replicates are computed at once: ``weights`` (B, E) holds how often each event is drawn
in each replicate, and the replicate counts are one matrix product ``weights @ counts``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stormfusion.errors import StormFusionError
from stormfusion.verification.scores import csi, csi_m_pooled


def bootstrap_weights(n_events: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_events) int64: how often each event is drawn in each replicate."""
    if n_events < 1:
        raise StormFusionError("bootstrap needs at least one event")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_events, size=(n_boot, n_events))
    offsets = np.arange(n_boot)[:, None] * n_events
    flat = np.bincount((draws + offsets).ravel(), minlength=n_boot * n_events)
    return flat.reshape(n_boot, n_events)


def resample_counts(counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Replicate counts: counts (E, ...) and weights (B, E) -> (B, ...)."""
    flat = counts.reshape(counts.shape[0], -1).astype(np.float64)
    return (weights.astype(np.float64) @ flat).reshape(weights.shape[0], *counts.shape[1:])


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile bootstrap interval (NaN when not computed)."""

    value: float
    lo: float
    hi: float


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """(lo, hi) percentiles of the finite samples at ``level`` (NaN if none is finite)."""
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(finite, [tail, 100.0 - tail])
    return float(lo), float(hi)


@dataclass(frozen=True)
class CsiIntervals:
    """CSI-M (as published) and CSI per threshold (pooled over leads) with intervals."""

    csi_m: Interval
    csi: tuple[Interval, ...]  # one per threshold


def _statistics(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """counts (..., T, L, 4) -> CSI-M (...) and CSI per threshold (..., T), pooled over leads."""
    return csi_m_pooled(counts), csi(counts.sum(axis=-2))


def csi_intervals(
    counts: np.ndarray, weights: np.ndarray | None, level: float = 0.95
) -> CsiIntervals:
    """Intervals for one model: ``counts`` (E, T, L, 4) per event, ``weights`` (B, E) or None."""
    point_m, point_t = _statistics(counts.sum(axis=0))
    if weights is None or weights.shape[0] == 0:
        nan = float("nan")
        return CsiIntervals(
            Interval(float(point_m), nan, nan), tuple(Interval(float(v), nan, nan) for v in point_t)
        )
    boot_m, boot_t = _statistics(resample_counts(counts, weights))
    return CsiIntervals(
        Interval(float(point_m), *percentile_interval(boot_m, level)),
        tuple(
            Interval(float(point_t[k]), *percentile_interval(boot_t[:, k], level))
            for k in range(point_t.shape[0])
        ),
    )


def paired_difference(
    counts: np.ndarray, reference: np.ndarray, weights: np.ndarray | None, level: float = 0.95
) -> CsiIntervals:
    """Model minus reference (e.g. persistence) on the same resampled events.

    ``counts`` and ``reference`` are (E, T, L, 4) with the events in the same order.
    """
    if counts.shape != reference.shape:
        raise StormFusionError(
            f"paired bootstrap needs counts on the same events, thresholds and leads: "
            f"{counts.shape} vs {reference.shape}"
        )
    pm, pt = _statistics(counts.sum(axis=0))
    rm, rt = _statistics(reference.sum(axis=0))
    if weights is None or weights.shape[0] == 0:
        nan = float("nan")
        return CsiIntervals(
            Interval(float(pm - rm), nan, nan),
            tuple(Interval(float(a - b), nan, nan) for a, b in zip(pt, rt, strict=True)),
        )
    bm, bt = _statistics(resample_counts(counts, weights))
    brm, brt = _statistics(resample_counts(reference, weights))
    dm, dt = bm - brm, bt - brt
    return CsiIntervals(
        Interval(float(pm - rm), *percentile_interval(dm, level)),
        tuple(
            Interval(float(pt[k] - rt[k]), *percentile_interval(dt[:, k], level))
            for k in range(pt.shape[0])
        ),
    )
