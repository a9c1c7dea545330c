"""What the report reads: the runs, their scores and per-event counts, training metrics.

``--runs`` is JSON (inline text or a file): ``{run: {model, args, ablation_of, trainable}}``.
For each run the score step wrote ``RESULTS/scores/RUN.json`` (summary) and
``RESULTS/scores/RUN.counts.npz``, the accumulators' state
(:meth:`stormfusion.verification.accumulator.ScoreAccumulator.save`), from which the
accumulators are rebuilt here; their ``summary()`` must give back the JSON's numbers.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stormfusion.errors import StormFusionError
from stormfusion.verification.accumulator import PIXEL, ScoreAccumulator

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSpec:
    """One configured run."""

    name: str
    model: str
    args: dict[str, Any] = field(default_factory=dict)
    ablation_of: str | None = None
    trainable: bool = False


def parse_runs(value: str) -> dict[str, RunSpec]:
    """Runs from inline JSON or a JSON file, in the given order."""
    text = value
    if not value.lstrip().startswith("{"):
        path = Path(value)
        if not path.is_file():
            raise StormFusionError(f"--runs {value!r}: neither inline JSON nor an existing file")
        text = path.read_text(encoding="utf-8")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StormFusionError(f"--runs: not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or not raw:
        raise StormFusionError("--runs: expected a non-empty JSON object {run: {model, ...}}")
    runs = {}
    for name, spec in raw.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("model"), str):
            raise StormFusionError(f"--runs: run {name!r} lacks a 'model' name")
        runs[name] = RunSpec(
            name=name,
            model=spec["model"],
            args=dict(spec.get("args") or {}),
            ablation_of=spec.get("ablation_of"),
            trainable=bool(spec.get("trainable", False)),
        )
    for spec in runs.values():
        if spec.ablation_of is not None and spec.ablation_of not in runs:
            raise StormFusionError(
                f"--runs: run {spec.name!r} is an ablation of {spec.ablation_of!r}, "
                "which is not a configured run"
            )
    return runs


@dataclass
class RunScores:
    """One run's rebuilt accumulators, their summary, and the JSON the score step wrote."""

    spec: RunSpec
    acc: ScoreAccumulator
    summary: dict[str, Any]  # recomputed from ``acc``: equal to the score file's numbers

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def event_ids(self) -> list[str]:
        return self.acc.events

    @property
    def thresholds(self) -> np.ndarray:
        return np.asarray(self.acc.counts[PIXEL].thresholds, dtype=np.float64)

    @property
    def lead_times(self) -> np.ndarray:
        return np.asarray(self.acc.lead_times, dtype=np.int64)

    @property
    def counts(self) -> np.ndarray:
        """(E, T, L, 4) pixel counts, events sorted by id."""
        return self.acc.counts[PIXEL].aligned(self.event_ids)


#: Keys of the summary whose numbers the rebuilt accumulators must give back exactly.
CHECKED_KEYS = ("csi_m", "csi_m_per_lead", "csi", "mse", "mae", "ssim", "lpips", "by_lead")


def load_scores(results: Path, spec: RunSpec) -> RunScores:
    """Rebuild one run's accumulators from ``RESULTS/scores/RUN.counts.npz``, checked
    against ``RUN.json``."""
    summary_path = results / "scores" / f"{spec.name}.json"
    counts_path = results / "scores" / f"{spec.name}.counts.npz"
    for p in (summary_path, counts_path):
        if not p.is_file():
            raise StormFusionError(f"{p}: scores of run {spec.name!r} not found (run 'score')")
    try:
        written = json.loads(summary_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise StormFusionError(f"{summary_path}: not valid JSON ({exc})") from None
    acc = ScoreAccumulator.load(counts_path)
    summary = json.loads(json.dumps(acc.summary()))  # as the score step wrote it
    differ = [k for k in CHECKED_KEYS if summary.get(k) != written.get(k)]
    if differ:
        raise StormFusionError(
            f"{summary_path}: {', '.join(differ)} differ from what {counts_path} gives: the two "
            "files are from different scorings (rescore the run)"
        )
    return RunScores(spec=spec, acc=acc, summary=summary)


def check_comparable(scores: dict[str, RunScores]) -> None:
    """All runs must be scored on the same events, thresholds and lead times."""
    first = next(iter(scores.values()))
    for s in scores.values():
        same = (
            s.event_ids == first.event_ids
            and np.array_equal(s.thresholds, first.thresholds)
            and np.array_equal(s.lead_times, first.lead_times)
        )
        if not same:
            raise StormFusionError(
                f"runs {first.name!r} and {s.name!r} were scored on different events, "
                "thresholds or lead times: rescore both on the same split"
            )


def read_metrics(path: Path) -> pd.DataFrame | None:
    """A trainer's ``metrics.csv`` (epoch, train_loss, val_loss, ...), or None if absent."""
    if not path.is_file():
        logger.warning("%s: no training metrics; its curve is left out", path)
        return None
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise StormFusionError(f"{path}: cannot read training metrics ({exc})") from None
    if "epoch" not in table.columns:
        raise StormFusionError(f"{path}: training metrics lack an 'epoch' column")
    return table
