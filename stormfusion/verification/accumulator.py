"""Everything the score step accumulates, its saved state, and the one place scores are computed.

:class:`ScoreAccumulator` streams batches into contingency counts (pixel and every pooling of
:data:`~stormfusion.verification.pooling.DEFAULT_POOLINGS`) and continuous sums, per event.
``score`` saves the whole state (:meth:`ScoreAccumulator.save`, an ``.npz`` with provenance
and the protocol declaration); ``report`` restores it (:meth:`ScoreAccumulator.load`) and
calls the same :meth:`ScoreAccumulator.summary`: no score formula exists twice.

State file keys: ``event_ids`` (E,) str; ``thresholds`` (T,); ``lead_times`` (L,) minutes;
``count_names`` (4,); ``poolings`` (P,) names; ``counts`` (E, T, L, 4) int64 pixel counts;
``counts_<pool>`` the same after each pooling; ``sum_names`` (S,); ``sums`` (E, L, S) float64
(see :data:`~stormfusion.verification.continuous.SUM_NAMES`); ``meta`` a JSON string (run,
model, split, provenance, protocol, why a score is n/a, sample count).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from stormfusion.data.sevir import VIL_THRESHOLDS
from stormfusion.errors import StormFusionError
from stormfusion.io import atomic_path
from stormfusion.verification.contingency import CategoricalScores, ContingencyCounts
from stormfusion.verification.continuous import SUM_NAMES, ContinuousScores, ContinuousSums
from stormfusion.verification.pooling import DEFAULT_POOLINGS, Pooling
from stormfusion.verification.scores import COUNT_NAMES

if TYPE_CHECKING:
    from stormfusion.verification.lpips import LPIPS

#: Label of the unpooled (pixel) counts in the CSV's ``pool`` column.
PIXEL = "none"
#: Keys every state file must hold.
STATE_KEYS = ("event_ids", "thresholds", "lead_times", "poolings", "counts", "sums", "meta")


@dataclass
class ScoreAccumulator:
    """Counts (pixel and pooled) and continuous sums of one run, per event; ``meta`` is the
    run's description (provenance, protocol, reasons), saved with the state."""

    counts: dict[str, ContingencyCounts]
    sums: ContinuousSums
    lead_times: list[int]
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def init(
        cls,
        lead_times: Sequence[int],
        lpips: LPIPS | None = None,
        poolings: Sequence[Pooling] = DEFAULT_POOLINGS,
    ) -> ScoreAccumulator:
        """Empty accumulators for the given lead times (minutes)."""
        n = len(lead_times)
        counts = {PIXEL: ContingencyCounts.init(n, VIL_THRESHOLDS)}
        for p in poolings:
            counts[p.name] = ContingencyCounts.init(n, VIL_THRESHOLDS, p)
        return cls(counts, ContinuousSums.init(n, lpips=lpips), [int(t) for t in lead_times])

    def accumulate(self, forecast: torch.Tensor, truth: torch.Tensor, event_ids: list[str]) -> None:
        """Add a batch: forecast and truth (B, L, H, W) 0..255 VIL (truth 255 = missing)."""
        for c in self.counts.values():
            c.accumulate(forecast, truth, event_ids)
        self.sums.accumulate(forecast, truth, event_ids)

    @property
    def events(self) -> list[str]:
        """The events seen, sorted by id."""
        return sorted(self.counts[PIXEL].events)

    def categorical(self, pool: str = PIXEL) -> CategoricalScores:
        return self.counts[pool].compute()

    def continuous(self) -> ContinuousScores:
        return self.sums.compute()

    # ------------------------------------------------------------------------- state

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the state (events sorted by id) to ``path`` (.npz) atomically."""
        events = self.events
        pixel = self.counts[PIXEL]
        arrays: dict[str, Any] = {
            "event_ids": np.array(events, dtype=np.str_),
            "thresholds": np.array(pixel.thresholds, dtype=np.float64),
            "lead_times": np.array(self.lead_times, dtype=np.int64),
            "count_names": np.array(COUNT_NAMES, dtype=np.str_),
            "poolings": np.array([p for p in self.counts if p != PIXEL], dtype=np.str_),
            "sum_names": np.array(SUM_NAMES, dtype=np.str_),
            "sums": self.sums.aligned(events),
            "meta": np.array(json.dumps(self.meta, sort_keys=True)),
        }
        for name, c in self.counts.items():
            arrays["counts" if name == PIXEL else f"counts_{name}"] = c.aligned(events)
        with atomic_path(path) as tmp, tmp.open("wb") as fh:
            np.savez(fh, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ScoreAccumulator:
        """Restore the state ``save`` wrote (no network: LPIPS sums are plain numbers)."""
        p = Path(path)
        if not p.is_file():
            raise StormFusionError(f"{p}: score state not found (run 'score')")
        try:
            with np.load(p, allow_pickle=False) as data:
                arrays = {k: np.asarray(data[k]) for k in data.files}
        except (OSError, ValueError) as exc:
            raise StormFusionError(f"{p}: cannot read the score state ({exc})") from None
        absent = [k for k in STATE_KEYS if k not in arrays]
        if absent:
            raise StormFusionError(f"{p}: score state lacks {absent} (rescore the run)")
        if tuple(str(s) for s in arrays.get("sum_names", ())) != SUM_NAMES:
            raise StormFusionError(f"{p}: sums are not {SUM_NAMES} (rescore the run)")
        events = [str(e) for e in arrays["event_ids"]]
        thresholds = [float(t) for t in arrays["thresholds"]]
        counts = {PIXEL: ContingencyCounts.from_table(events, arrays["counts"], thresholds)}
        for name in (str(n) for n in arrays["poolings"]):
            key = f"counts_{name}"
            if key not in arrays:
                raise StormFusionError(f"{p}: pooling {name} declared but {key} is absent")
            counts[name] = ContingencyCounts.from_table(
                events, arrays[key], thresholds, Pooling.parse(name)
            )
        sums = ContinuousSums.from_table(events, arrays["sums"])
        lead_times = [int(t) for t in arrays["lead_times"]]
        for c in (*counts.values(), sums):
            if c.table.shape[2 if isinstance(c, ContingencyCounts) else 1] != len(lead_times):
                raise StormFusionError(f"{p}: arrays do not have {len(lead_times)} lead times")
        return cls(counts, sums, lead_times, json.loads(str(arrays["meta"])))

    # ------------------------------------------------------------------------- summary

    def summary(self) -> dict[str, Any]:
        """The JSON summary: every score overall and by lead, pooled CSI, exclusions (NaN as
        null), with ``meta`` (run, protocol, provenance, reasons) merged in."""
        s = self.categorical()
        cont = self.continuous()
        keys = [threshold_key(t) for t in s.thresholds]
        out: dict[str, Any] = {k: v for k, v in self.meta.items() if k != "reasons"}
        out.update(n_events=len(self.events), lead_times=self.lead_times)
        out["thresholds"] = [_plain(t) for t in s.thresholds]
        out["csi_m"] = finite(s.csi_m)
        out["csi_m_per_lead"] = finite(s.csi_m_per_lead)
        for name, values in s.overall.items():
            out[name] = dict(zip(keys, finite_list(values), strict=True))
        out["threshold_mean"] = {name: finite(v) for name, v in s.threshold_mean.items()}
        out["pooled"] = {
            name: {
                "csi_m": finite(ps.csi_m),
                "csi_m_per_lead": finite(ps.csi_m_per_lead),
                "csi": dict(zip(keys, finite_list(ps.overall["csi"]), strict=True)),
                "excluded_cells": self._excluded_cells(name),
            }
            for name, ps in ((n, self.categorical(n)) for n in self.counts if n != PIXEL)
        }
        out.update({name: finite(v) for name, v in cont.overall.items()})
        reasons = dict(self.meta.get("reasons", {}))
        out.update({f"{name}_reason": reasons.get(name) for name in ("lpips", "msssim")})
        out["excluded"] = {
            "truth_pixels": cont.n_excluded_pixels,
            "frames_skipped_by_ssim_msssim_lpips": cont.n_skipped_frames,
        }
        by_lead: dict[str, Any] = {"lead_time": self.lead_times}
        by_lead["csi_m"] = finite_list(s.csi_m_by_lead)
        for name, arr in s.by_lead.items():
            by_lead[name] = {k: finite_list(arr[i]) for i, k in enumerate(keys)}
        by_lead.update({name: finite_list(v) for name, v in cont.by_lead.items()})
        out["by_lead"] = by_lead
        return out

    def _excluded_cells(self, name: str) -> int | None:
        """Pooled cells left out for missing truth: all cells minus the counted ones."""
        cells = self.meta.get("cells_per_frame", {}).get(name)
        n_samples = self.meta.get("n_samples")
        if cells is None or n_samples is None:
            return None
        counted = int(self.counts[name].totals()[0].sum())  # first threshold, all leads
        return int(n_samples) * len(self.lead_times) * int(cells) - counted


def finite(x: float) -> float | None:
    """``x`` or None when it is not finite (JSON has no NaN)."""
    return None if not math.isfinite(x) else float(x)


def finite_list(xs: np.ndarray) -> list[float | None]:
    return [finite(float(v)) for v in np.asarray(xs, dtype=np.float64).ravel()]


def _plain(t: float) -> int | float:
    return int(t) if float(t).is_integer() else float(t)


def threshold_key(t: float) -> str:
    """``16`` for 16.0: the label of a threshold in JSON keys and table columns."""
    return str(int(t)) if float(t).is_integer() else str(t)
