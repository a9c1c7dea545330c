"""Streaming contingency counts per event, threshold and lead time.

The SEVIR definition (see ``shared/SEVIR_FORMAT.md``): at threshold ``t`` on the 0..255 VIL
scale an event is ``value >= t``; hits, misses and false alarms are summed over the whole
set (all pixels of all samples) before any score is divided out. The counts here are kept
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
    scores = total.compute()                            # POD/SUCR/CSI/BIAS, CSI-M
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from stormfusion.data.sevir import VIL_THRESHOLDS
from stormfusion.errors import StormFusionError
from stormfusion.verification.pooling import Pooling
from stormfusion.verification.scores import (
    COUNT_NAMES,
    bias,
    csi,
    csi_m_by_lead,
    csi_m_per_lead,
    csi_m_pooled,
    pod,
    sucr,
)

#: Event id used when a caller does not say which event a sample belongs to.
ALL_EVENTS = "all"


def _codes(x: Tensor, thresholds: Sequence[float]) -> tuple[Tensor, list[int]]:
    """uint8 codes of ``x`` and integer levels with ``x >= t_k  <=>  code >= level_k``.

    Integer thresholds in [1, 255] (the VIL ones) keep the values: uint8 input as is, real
    input as ``floor(x)`` clamped to 0..255 (for an integer t, x >= t iff floor(x) >= t),
    computed as clamp-then-truncate.
    Other thresholds map each value to its category, the number of thresholds it reaches,
    with levels 1..T.
    """
    if all(float(t).is_integer() and 1 <= t <= 255 for t in thresholds):
        levels = [int(t) for t in thresholds]
        if x.dtype == torch.uint8:
            return x, levels
        if not x.is_floating_point():
            return x.clamp(0, 255).to(torch.uint8), levels
        # on [0, 255] truncation is floor; values outside are clamped to the ends first
        # (a one-pass range check, since clamping costs several times the conversion)
        lo, hi = torch.aminmax(x)
        if bool(lo < 0.0) or bool(hi >= 256.0):
            x = x.clamp(0.0, 255.0)
        return x.to(torch.uint8), levels
    thr = torch.as_tensor(list(thresholds), dtype=torch.float64, device=x.device)
    codes = torch.bucketize(x.to(torch.float64), thr, right=True).to(torch.uint8)
    return codes, list(range(1, len(thresholds) + 1))


def _histograms(codes: Tensor) -> Tensor:
    """Histogram of uint8 ``codes`` (B, L, H, W) over 0..255 per (sample, lead): (B, L, 256)."""
    b, n_leads = codes.shape[:2]
    flat = codes.reshape(b * n_leads, -1)
    hist = torch.stack([torch.bincount(row, minlength=256) for row in flat])
    return hist.reshape(b, n_leads, 256)


def count_batch(
    forecast: Tensor,
    truth: Tensor,
    thresholds: Sequence[float],
    groups: Tensor | None = None,
    n_groups: int = 1,
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
    hist = torch.stack(
        [_histograms(fc), _histograms(oc), _histograms(torch.minimum(fc, oc))]
    )  # (3, B, L, 256)
    if groups is None:
        groups = torch.zeros(b, dtype=torch.int64, device=device)
    grouped = torch.zeros(3, n_groups, n_leads, 256, dtype=torch.int64, device=device)
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
    """Scores of a set of counts (see :mod:`stormfusion.verification.scores`).

    Per-lead arrays are (T, L); ``*_all`` arrays are (T,) from counts summed over leads.
    """

    thresholds: tuple[float, ...]
    counts: np.ndarray  # (T, L, 4)
    pod: np.ndarray
    sucr: np.ndarray
    csi: np.ndarray
    bias: np.ndarray
    pod_all: np.ndarray
    sucr_all: np.ndarray
    csi_all: np.ndarray
    bias_all: np.ndarray
    csi_m: float  # as published: counts pooled over leads, mean over thresholds
    csi_m_per_lead: float  # mean over leads of the per-lead CSI, mean over thresholds
    csi_m_by_lead: np.ndarray  # (L,)


@dataclass
class ContingencyCounts:
    """Hits, misses, false alarms and correct negatives per event, threshold and lead.

    Attributes:
        thresholds: T ascending thresholds (0..255 VIL); events are ``>=``.
        n_leads: L lead times.
        pooling: applied to forecast and truth before counting (None: pixel counts).
        events: E event ids, in first-seen order.
        table: int64 array (E, T, L, 4), counts in ``COUNT_NAMES`` order.
    """

    thresholds: tuple[float, ...]
    n_leads: int
    pooling: Pooling | None = None
    events: list[str] = field(default_factory=list)
    table: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0, 4), np.int64))

    @classmethod
    def init(
        cls,
        n_leads: int,
        thresholds: Sequence[float] = VIL_THRESHOLDS,
        pooling: Pooling | None = None,
    ) -> ContingencyCounts:
        """Empty counts for ``n_leads`` lead times."""
        thr = tuple(float(t) for t in thresholds)
        return cls(thr, n_leads, pooling, [], np.zeros((0, len(thr), n_leads, 4), np.int64))

    def _event_indices(self, event_ids: Sequence[str]) -> list[int]:
        index = {e: i for i, e in enumerate(self.events)}
        out = []
        for e in event_ids:
            if e not in index:
                index[e] = len(self.events)
                self.events.append(e)
            out.append(index[e])
        grow = len(self.events) - self.table.shape[0]
        if grow:
            pad = np.zeros((grow, *self.table.shape[1:]), np.int64)
            self.table = np.concatenate([self.table, pad])
        return out

    def accumulate(
        self, forecast: Tensor, truth: Tensor, event_ids: Sequence[str] | None = None
    ) -> ContingencyCounts:
        """Add the counts of a batch: forecast and truth (B, L, H, W), 0..255 VIL.

        ``event_ids`` names the event of each of the B samples (default: one group
        :data:`ALL_EVENTS`). Returns ``self``.
        """
        if forecast.dim() != 4 or forecast.shape[1] != self.n_leads:
            raise StormFusionError(
                f"expected forecasts of shape (sample, {self.n_leads} leads, y, x), "
                f"got {tuple(forecast.shape)}"
            )
        ids = [ALL_EVENTS] * forecast.shape[0] if event_ids is None else list(event_ids)
        if len(ids) != forecast.shape[0]:
            raise StormFusionError(f"{len(ids)} event ids for {forecast.shape[0]} samples")
        local = sorted(set(ids))
        pos = {e: i for i, e in enumerate(local)}
        groups = torch.tensor([pos[e] for e in ids], dtype=torch.int64)
        truth = truth.to(forecast.device)
        if self.pooling is not None:
            forecast, truth = self.pooling.apply(forecast), self.pooling.apply(truth)
        counts = count_batch(forecast, truth, self.thresholds, groups, len(local))
        rows = self._event_indices(local)
        self.table[rows] += counts.cpu().numpy()
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
        out = ContingencyCounts(
            self.thresholds, self.n_leads, self.pooling, list(self.events), self.table.copy()
        )
        rows = out._event_indices(other.events)
        np.add.at(out.table, rows, other.table)
        return out

    def totals(self) -> np.ndarray:
        """Counts of the whole set, (T, L, 4) int64."""
        return self.table.sum(axis=0)

    def compute(self) -> CategoricalScores:
        """POD, SUCR, CSI, BIAS per threshold and lead, over leads, and both CSI-M."""
        c = self.totals()
        pooled = c.sum(axis=1)
        return CategoricalScores(
            thresholds=self.thresholds,
            counts=c,
            pod=pod(c),
            sucr=sucr(c),
            csi=csi(c),
            bias=bias(c),
            pod_all=pod(pooled),
            sucr_all=sucr(pooled),
            csi_all=csi(pooled),
            bias_all=bias(pooled),
            csi_m=float(csi_m_pooled(c)),
            csi_m_per_lead=float(csi_m_per_lead(c)),
            csi_m_by_lead=csi_m_by_lead(c),
        )


__all__ = [
    "ALL_EVENTS",
    "COUNT_NAMES",
    "CategoricalScores",
    "ContingencyCounts",
    "count_batch",
]
