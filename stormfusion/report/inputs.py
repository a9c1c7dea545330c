"""What the report reads: the runs, their scores and per-event counts, training metrics.

``--runs`` is JSON (inline text or a file): ``{run: {model, args, ablation_of, trainable}}``.
For each run the score step wrote ``RESULTS/scores/RUN.json`` (summary) and
``RESULTS/scores/RUN.counts.npz`` (per-event counts; see
:func:`stormfusion.verification.scoring.write_counts`).
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

logger = logging.getLogger(__name__)

#: Pooled-count variants the score step writes (``counts_<name>`` in the npz).
POOLED = ("max4", "max16", "avg4", "avg16")


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
    """One run's summary and per-event arrays (events sorted by id)."""

    spec: RunSpec
    summary: dict[str, Any]
    event_ids: list[str]
    thresholds: np.ndarray  # (T,)
    lead_times: np.ndarray  # (L,) minutes
    counts: np.ndarray  # (E, T, L, 4) int64
    pooled: dict[str, np.ndarray]  # name -> (E, T, L, 4)
    sums: np.ndarray  # (E, L, 5): sse, sae, n_pixels, ssim_sum, n_frames
    lpips: np.ndarray  # (E, L, 2): sum, frames

    @property
    def name(self) -> str:
        return self.spec.name


def _npz_array(data: Any, key: str, path: Path) -> np.ndarray:
    if key not in data:
        raise StormFusionError(f"{path}: array {key!r} is missing (rescore the run)")
    return np.asarray(data[key])


def load_scores(results: Path, spec: RunSpec) -> RunScores:
    """Read ``RESULTS/scores/RUN.{json,counts.npz}`` of one run."""
    summary_path = results / "scores" / f"{spec.name}.json"
    counts_path = results / "scores" / f"{spec.name}.counts.npz"
    for p in (summary_path, counts_path):
        if not p.is_file():
            raise StormFusionError(f"{p}: scores of run {spec.name!r} not found (run 'score')")
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise StormFusionError(f"{summary_path}: not valid JSON ({exc})") from None
    try:
        with np.load(counts_path, allow_pickle=False) as data:
            arrays = {k: _npz_array(data, k, counts_path) for k in data.files}
    except (OSError, ValueError) as exc:
        raise StormFusionError(f"{counts_path}: cannot read ({exc})") from None
    for key in ("event_ids", "thresholds", "lead_times", "counts", "sums", "lpips"):
        _npz_array(arrays, key, counts_path)
    counts = arrays["counts"]
    e, t, n_leads = len(arrays["event_ids"]), len(arrays["thresholds"]), len(arrays["lead_times"])
    if counts.shape != (e, t, n_leads, 4):
        raise StormFusionError(
            f"{counts_path}: counts have shape {counts.shape}, expected ({e}, {t}, {n_leads}, 4)"
        )
    return RunScores(
        spec=spec,
        summary=summary,
        event_ids=[str(x) for x in arrays["event_ids"]],
        thresholds=arrays["thresholds"].astype(np.float64),
        lead_times=arrays["lead_times"].astype(np.int64),
        counts=counts.astype(np.int64),
        pooled={p: arrays[f"counts_{p}"] for p in POOLED if f"counts_{p}" in arrays},
        sums=arrays["sums"].astype(np.float64),
        lpips=arrays["lpips"].astype(np.float64),
    )


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
