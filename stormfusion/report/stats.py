"""Per-run statistics for the tables: point estimates from the summed counts, bootstrap
intervals over events, and paired differences to persistence (and to an ablation's base).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from stormfusion.report.inputs import RunScores
from stormfusion.verification.bootstrap import (
    CsiIntervals,
    bootstrap_weights,
    csi_intervals,
    paired_difference,
)
from stormfusion.verification.scores import (
    bias,
    csi,
    csi_m_by_lead,
    csi_m_per_lead,
    csi_m_pooled,
    pod,
    sucr,
)

logger = logging.getLogger(__name__)

#: Model name of the baseline every run is compared with.
REFERENCE_MODEL = "persistence"


def _mean(x: np.ndarray) -> float:
    finite = x[np.isfinite(x)]
    return float(finite.mean()) if finite.size else math.nan


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


@dataclass(frozen=True)
class RunStats:
    """Everything a table row needs about one run."""

    name: str
    model: str
    ablation_of: str | None
    n_events: int
    intervals: CsiIntervals  # CSI-M and CSI per threshold (pooled over leads)
    vs_reference: CsiIntervals | None  # this run minus persistence, paired
    vs_base: CsiIntervals | None  # this ablation minus its base run, paired
    csi_m_per_lead: float
    csi_m_pool: dict[str, float]  # "max4" -> CSI-M of the pooled counts
    pod_m: float
    sucr_m: float
    bias_m: float
    mse: float
    mae: float
    mse_01: float
    ssim: float
    lpips: float | None  # None: weights absent
    lpips_reason: str
    # by lead (L,) and by (threshold, lead)
    csi_m_by_lead: np.ndarray
    csi_by_lead: np.ndarray  # (T, L)
    pod_all: np.ndarray  # (T,)
    sucr_all: np.ndarray  # (T,)
    mse_by_lead: np.ndarray
    mae_by_lead: np.ndarray
    ssim_by_lead: np.ndarray
    lpips_by_lead: np.ndarray


def reference_run(scores: dict[str, RunScores]) -> str | None:
    """The run compared against: the one named ``persistence``, else the first such model."""
    if REFERENCE_MODEL in scores and scores[REFERENCE_MODEL].spec.model == REFERENCE_MODEL:
        return REFERENCE_MODEL
    for name, s in scores.items():
        if s.spec.model == REFERENCE_MODEL and s.spec.ablation_of is None:
            return name
    return None


def compute_stats(
    scores: dict[str, RunScores], n_boot: int, seed: int, level: float = 0.95
) -> dict[str, RunStats]:
    """Statistics of every run; one set of bootstrap draws shared by all (paired)."""
    first = next(iter(scores.values()))
    weights = bootstrap_weights(len(first.event_ids), n_boot, seed) if n_boot > 0 else None
    ref = reference_run(scores)
    if ref is None:
        logger.warning("no persistence run: differences to persistence are left out")
    out = {}
    for name, s in scores.items():
        c = s.counts
        total = c.sum(axis=0)  # (T, L, 4)
        pooled = total.sum(axis=1)  # (T, 4)
        sums = s.sums.sum(axis=0)  # (L, 5)
        allsum = sums.sum(axis=0)
        lp = s.lpips.sum(axis=0)  # (L, 2)
        has_lpips = bool(lp[:, 1].sum() > 0)
        mse = _ratio(allsum[0], allsum[2])
        base = s.spec.ablation_of
        by_lead = {
            key: np.array([_ratio(a, b) for a, b in zip(num, den, strict=True)])
            for key, num, den in (
                ("mse", sums[:, 0], sums[:, 2]),
                ("mae", sums[:, 1], sums[:, 2]),
                ("ssim", sums[:, 3], sums[:, 4]),
                ("lpips", lp[:, 0], lp[:, 1]),
            )
        }
        out[name] = RunStats(
            name=name,
            model=s.spec.model,
            ablation_of=base,
            n_events=len(s.event_ids),
            intervals=csi_intervals(c, weights, level),
            vs_reference=(
                paired_difference(c, scores[ref].counts, weights, level)
                if ref is not None
                else None
            ),
            vs_base=(
                paired_difference(c, scores[base].counts, weights, level)
                if base is not None and base in scores
                else None
            ),
            csi_m_per_lead=float(csi_m_per_lead(total)),
            csi_m_pool={k: float(csi_m_pooled(v.sum(axis=0))) for k, v in s.pooled.items()},
            pod_m=_mean(pod(pooled)),
            sucr_m=_mean(sucr(pooled)),
            bias_m=_mean(bias(pooled)),
            mse=mse,
            mae=_ratio(allsum[1], allsum[2]),
            mse_01=mse / 255.0**2,
            ssim=_ratio(allsum[3], allsum[4]),
            lpips=_ratio(lp[:, 0].sum(), lp[:, 1].sum()) if has_lpips else None,
            lpips_reason=str(s.summary.get("lpips_reason") or "LPIPS weights were absent"),
            csi_m_by_lead=csi_m_by_lead(total),
            csi_by_lead=csi(total),
            pod_all=pod(pooled),
            sucr_all=sucr(pooled),
            mse_by_lead=by_lead["mse"],
            mae_by_lead=by_lead["mae"],
            ssim_by_lead=by_lead["ssim"],
            lpips_by_lead=by_lead["lpips"],
        )
    return out
