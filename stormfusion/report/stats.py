"""Per-run statistics for the tables: the scores the verification code computes from the
rebuilt accumulators, bootstrap intervals over events, and paired differences to persistence
(and to an ablation's base). No score is computed here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from stormfusion.report.inputs import RunScores
from stormfusion.verification.accumulator import PIXEL
from stormfusion.verification.bootstrap import (
    CsiIntervals,
    bootstrap_weights,
    csi_intervals,
    paired_difference,
)
from stormfusion.verification.contingency import CategoricalScores
from stormfusion.verification.continuous import ContinuousScores

logger = logging.getLogger(__name__)

#: Model name of the baseline every run is compared with.
REFERENCE_MODEL = "persistence"


@dataclass(frozen=True)
class RunStats:
    """Everything a table row or figure needs about one run.

    ``categorical`` and ``continuous`` are the verification code's own results for the
    rebuilt accumulators; ``summary`` is the same numbers as the score file's JSON.
    """

    name: str
    model: str
    ablation_of: str | None
    n_events: int
    intervals: CsiIntervals  # CSI-M and CSI per threshold (pooled over leads)
    vs_reference: CsiIntervals | None  # this run minus persistence, paired
    vs_base: CsiIntervals | None  # this ablation minus its base run, paired
    categorical: CategoricalScores
    continuous: ContinuousScores
    pooled: dict[str, CategoricalScores]  # "max4" -> scores of the pooled counts
    summary: dict[str, Any]

    def score(self, name: str) -> float:
        """A continuous score over the set (NaN where undefined)."""
        return self.continuous.overall[name]

    @property
    def lpips_reason(self) -> str:
        return str(self.summary.get("lpips_reason") or "LPIPS weights were absent")

    @property
    def latency(self) -> float | None:
        value = self.summary.get("latency_s_per_sample")
        return None if value is None else float(value)


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
        base = s.spec.ablation_of
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
            categorical=s.acc.categorical(),
            continuous=s.acc.continuous(),
            pooled={p: s.acc.categorical(p) for p in s.acc.counts if p != PIXEL},
            summary=s.summary,
        )
    return out


def by_lead(stats: RunStats, name: str) -> np.ndarray:
    """A continuous score by lead (L,)."""
    return stats.continuous.by_lead[name]
