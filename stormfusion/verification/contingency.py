"""Streaming contingency counts per event, threshold and lead time.

The SEVIR definition: at threshold ``t`` on the 0..255 VIL scale an event is
``value >= t``; hits, misses and false alarms are summed over the whole set (all pixels of
all samples) before any score is divided out. Truth pixels outside [0, 254] (255 = missing)
are not counted at all (:mod:`stormfusion.verification.masking`); after pooling, a cell
with any missing truth pixel is not counted. The counts here are kept
per *event* (the SEVIR event id, i.e. all windows of one storm together) so that bootstrap
intervals can resample events; summing over events gives the set's counts.

Counting is one pass per batch in vectorised torch (on the tensors' device, the GPU when
present): each value is mapped to its *category*, the number of thresholds it reaches
(``torch.bucketize``), the pair (forecast category, truth category) of every pixel is
histogrammed per (event, lead) with one ``torch.bincount``, and the counts at threshold k
follow from the (T + 1) x (T + 1) joint histogram by reverse cumulative sums.

Usage (streaming, mergeable across chunks and processes)::

    counts = ContingencyCounts.init(n_leads=12)
    for forecast, truth, event_ids in batches:         # (B, L, H, W) each
        counts.accumulate(forecast, truth, event_ids)
    total = counts.merge(other_chunk_counts)
    scores = total.compute()                            # every CATEGORICAL_SCORES, CSI-M
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from stormfusion.data.sevir import VIL_MAX, VIL_THRESHOLDS
from stormfusion.errors import StormFusionError
from stormfusion.verification.events import ALL_EVENTS, EventTable, sample_ids
from stormfusion.verification.masking import missing_truth, pooled_missing
from stormfusion.verification.pooling import Pooling
from stormfusion.verification.scores import (
    CATEGORICAL_SCORES,
    COUNT_NAMES,
    csi_m_by_lead,
    csi_m_per_lead,
    csi_m_pooled,
    threshold_mean,
)

#: Number of uint8 codes (0..255): the bins of the per-pixel histograms.
N_CODES = 256


def _codes(x: Tensor, thresholds: Sequence[float]) -> tuple[Tensor, list[int]]:
    """uint8 codes of ``x`` and integer levels with ``x >= t_k  <=>  code >= level_k``.

    Integer thresholds in [1, 255] (the VIL ones) keep the values: uint8 input as is, real
    input as ``floor(x)`` clamped to 0..255 (for an integer t, x >= t iff floor(x) >= t),
    computed as clamp-then-truncate.
    Other thresholds map each value to its category, the number of thresholds it reaches,
    with levels 1..T.
    """
    if all(float(t).is_integer() and 1 <= t <= VIL_MAX for t in thresholds):
        levels = [int(t) for t in thresholds]
        if x.dtype == torch.uint8:
            return x, levels
        if not x.is_floating_point():
            return x.clamp(0, VIL_MAX).to(torch.uint8), levels
        # on [0, 255] truncation is floor; values outside are clamped to the ends first
        # (a one-pass range check, since clamping costs several times the conversion)
        lo, hi = torch.aminmax(x)
        if bool(lo < 0.0) or bool(hi >= VIL_MAX + 1.0):
            x = x.clamp(0.0, float(VIL_MAX))
        return x.to(torch.uint8), levels
    thr = torch.as_tensor(list(thresholds), dtype=torch.float64, device=x.device)
    codes = torch.bucketize(x.to(torch.float64), thr, right=True).to(torch.uint8)
    return codes, list(range(1, len(thresholds) + 1))


def _histograms(codes: Tensor, missing: dict[int, Tensor]) -> Tensor:
    """Histogram of uint8 ``codes`` (B, L, H, W) over 0..255 per (sample, lead), leaving out
    the pixels ``missing`` names (flat row -> bool mask of its pixels): (B, L, 256).

    Missing truth is rare, so every pixel is counted first and the few missing ones are
    then subtracted in the rows that hold any.
    """
    b, n_leads = codes.shape[:2]
    flat = codes.reshape(b * n_leads, -1)
    hist = torch.stack([torch.bincount(row, minlength=N_CODES) for row in flat])
    for r, mask in missing.items():
        hist[r] -= torch.bincount(flat[r][mask], minlength=N_CODES)
    return hist.reshape(b, n_leads, N_CODES)


def _missing_rows(missing: Tensor | None) -> dict[int, Tensor]:
    """(B, L, H, W) bool -> {flat (sample, lead) row: its pixel mask} for rows with any."""
    if missing is None:
        return {}
    flat = missing.reshape(missing.shape[0] * missing.shape[1], -1)
    return {r: flat[r] for r in torch.nonzero(flat.any(dim=1)).flatten().tolist()}


def count_batch(
    forecast: Tensor,
    truth: Tensor,
    thresholds: Sequence[float],
    groups: Tensor | None = None,
    n_groups: int = 1,
    missing: Tensor | None = None,
) -> Tensor:
    """Contingency counts of one batch.

    Hits at threshold t are the pixels where ``min(forecast, truth) >= t``, so three
    per-(sample, lead) histograms (forecast, truth and their minimum) give every count at
    every threshold: ``hits = N(min >= t)``, ``misses = N(truth >= t) - hits``,
    ``false alarms = N(forecast >= t) - hits``; no per-threshold pass over the pixels.

    Args:
        forecast: (B, L, H, W) forecast VIL (any real dtype, finite), 0..255 scale.
        truth: (B, L, H, W) observed VIL, same scale and shape.
        thresholds: T ascending thresholds; an event is ``value >= threshold``.
        groups: (B,) int64 group (event) index of each sample in [0, n_groups); None = all 0.
        n_groups: number of groups G.
        missing: (B, L, H, W) bool, the pixels not to count (None: count all).

    Returns:
        int64 tensor (G, T, L, 4) of hits, misses, false alarms, correct negatives
        (:data:`~stormfusion.verification.scores.COUNT_NAMES`), on ``forecast``'s device.
    """
    if forecast.shape != truth.shape or forecast.dim() != 4:
        raise StormFusionError(
            f"forecast {tuple(forecast.shape)} and truth {tuple(truth.shape)} must both be "
            "(sample, lead, y, x) of the same shape"
        )
    thr = [float(t) for t in thresholds]
    if not thr or any(b <= a for a, b in itertools.pairwise(thr)):
        raise StormFusionError(f"thresholds must be non-empty and ascending, got {thresholds}")
    device = forecast.device
    b, n_leads = forecast.shape[:2]
    fc, levels = _codes(forecast, thr)
    oc, _ = _codes(truth.to(device), thr)
    rows = _missing_rows(None if missing is None else missing.to(device))
    hist = torch.stack(
        [_histograms(fc, rows), _histograms(oc, rows), _histograms(torch.minimum(fc, oc), rows)]
    )  # (3, B, L, 256)
    if groups is None:
        groups = torch.zeros(b, dtype=torch.int64, device=device)
    grouped = torch.zeros(3, n_groups, n_leads, N_CODES, dtype=torch.int64, device=device)
    grouped.index_add_(1, groups.to(device=device, dtype=torch.int64), hist)
    # tail[..., v] = pixels whose code is >= v
    tail = grouped.flip(-1).cumsum(-1).flip(-1)
    at = torch.tensor(levels, device=device)
    forecast_yes, observed_yes, hits = tail[..., at]  # (G, L, T) each
    total = grouped[0].sum(-1, keepdim=True)
    misses = observed_yes - hits
    false_alarms = forecast_yes - hits
    negatives = total - hits - misses - false_alarms
    out = torch.stack([hits, misses, false_alarms, negatives], dim=-1)  # (G, L, T, 4)
    return out.permute(0, 2, 1, 3).contiguous()


@dataclass(frozen=True)
class CategoricalScores:
    """Every score of :data:`~stormfusion.verification.scores.CATEGORICAL_SCORES` from a set
    of counts.

    ``by_lead[name]`` is (T, L); ``overall[name]`` is (T,), from the counts summed over leads.
    """

    thresholds: tuple[float, ...]
    counts: np.ndarray  # (T, L, 4)
    by_lead: dict[str, np.ndarray]
    overall: dict[str, np.ndarray]
    threshold_mean: dict[str, float]  # overall[name] averaged over the defined thresholds
    csi_m: float  # as published: counts pooled over leads, mean over thresholds
    csi_m_per_lead: float  # mean over leads of the per-lead CSI, mean over thresholds
    csi_m_by_lead: np.ndarray  # (L,)


def categorical_scores(counts: np.ndarray, thresholds: Sequence[float]) -> CategoricalScores:
    """All registered scores of the set's counts (T, L, 4), per lead and pooled over leads."""
    c = np.asarray(counts)
    pooled = c.sum(axis=1)
    overall = {name: CATEGORICAL_SCORES.get(name)(pooled) for name in CATEGORICAL_SCORES}
    return CategoricalScores(
        thresholds=tuple(float(t) for t in thresholds),
        counts=c,
        by_lead={name: CATEGORICAL_SCORES.get(name)(c) for name in CATEGORICAL_SCORES},
        overall=overall,
        threshold_mean={name: float(threshold_mean(v)) for name, v in overall.items()},
        csi_m=float(csi_m_pooled(c)),
        csi_m_per_lead=float(csi_m_per_lead(c)),
        csi_m_by_lead=csi_m_by_lead(c),
    )


@dataclass
class ContingencyCounts(EventTable):
    """Hits, misses, false alarms and correct negatives per event, threshold and lead.

    Attributes:
        thresholds: T ascending thresholds (0..255 VIL); events are ``>=``.
        n_leads: L lead times.
        pooling: applied to forecast and truth before counting (None: pixel counts).
        events: E event ids, in first-seen order.
        table: int64 array (E, T, L, 4), counts in ``COUNT_NAMES`` order.
    """

    thresholds: tuple[float, ...] = tuple(float(t) for t in VIL_THRESHOLDS)
    n_leads: int = 1
    pooling: Pooling | None = None

    @classmethod
    def init(
        cls,
        n_leads: int,
        thresholds: Sequence[float] = VIL_THRESHOLDS,
        pooling: Pooling | None = None,
    ) -> ContingencyCounts:
        """Empty counts for ``n_leads`` lead times."""
        thr = tuple(float(t) for t in thresholds)
        return cls.from_table([], np.zeros((0, len(thr), n_leads, 4), np.int64), thr, pooling)

    @classmethod
    def from_table(
        cls,
        events: Sequence[str],
        table: np.ndarray,
        thresholds: Sequence[float],
        pooling: Pooling | None = None,
    ) -> ContingencyCounts:
        """Counts restored from a saved state: ``table`` (E, T, L, 4) for ``events``."""
        t = np.asarray(table, dtype=np.int64)
        thr = tuple(float(x) for x in thresholds)
        if t.ndim != 4 or t.shape[0] != len(events) or t.shape[1] != len(thr) or t.shape[3] != 4:
            raise StormFusionError(
                f"contingency table of shape {t.shape} does not fit {len(events)} events, "
                f"{len(thr)} thresholds and the 4 counts"
            )
        return cls(list(events), t.copy(), thr, int(t.shape[2]), pooling)

    def accumulate(
        self, forecast: Tensor, truth: Tensor, event_ids: Sequence[str] | None = None
    ) -> ContingencyCounts:
        """Add the counts of a batch: forecast and truth (B, L, H, W), 0..255 VIL.

        Truth pixels outside [0, 254] are not counted; after pooling, neither is a cell
        holding any of them. ``event_ids`` names the event of each of the B samples
        (default: one group :data:`ALL_EVENTS`). Returns ``self``.
        """
        if forecast.dim() != 4 or forecast.shape[1] != self.n_leads:
            raise StormFusionError(
                f"expected forecasts of shape (sample, {self.n_leads} leads, y, x), "
                f"got {tuple(forecast.shape)}"
            )
        ids = sample_ids(event_ids, forecast.shape[0])
        local = sorted(set(ids))
        pos = {e: i for i, e in enumerate(local)}
        groups = torch.tensor([pos[e] for e in ids], dtype=torch.int64)
        truth = truth.to(forecast.device)
        missing = missing_truth(truth)
        if self.pooling is not None:
            missing = pooled_missing(missing, self.pooling.size)
            forecast, truth = self.pooling.apply(forecast), self.pooling.apply(truth)
        counts = count_batch(forecast, truth, self.thresholds, groups, len(local), missing)
        self.add(local, counts.cpu().numpy())
        return self

    def merge(self, other: ContingencyCounts) -> ContingencyCounts:
        """A new object holding the sum of ``self`` and ``other`` (events united)."""
        if (other.thresholds, other.n_leads, other.pooling) != (
            self.thresholds,
            self.n_leads,
            self.pooling,
        ):
            raise StormFusionError(
                "cannot merge contingency counts with different thresholds, leads or pooling"
            )
        out = ContingencyCounts.from_table(self.events, self.table, self.thresholds, self.pooling)
        out.add(other.events, other.table)
        return out

    def totals(self) -> np.ndarray:
        """Counts of the whole set, (T, L, 4) int64."""
        return self.table.sum(axis=0)

    def compute(self) -> CategoricalScores:
        """Every registered score per threshold and lead, over leads, and both CSI-M."""
        return categorical_scores(self.totals(), self.thresholds)


__all__ = [
    "ALL_EVENTS",
    "COUNT_NAMES",
    "CategoricalScores",
    "ContingencyCounts",
    "categorical_scores",
    "count_batch",
]
