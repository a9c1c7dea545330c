"""The ``score`` step: one run's forecasts against the truth, written as CSV, JSON and counts.

Forecasts come from the run's forecast store (``RESULTS/forecasts/RUN.zarr``: variable
``forecast`` (sample, lead, y, x) uint8 VIL with coordinates ``event_id``, ``window_start``,
``lead_time`` and attributes ``run``, ``model``, ``model_args``, ``split``, ``provenance``).
The truth is read through the training loader's target path
(:class:`stormfusion.data.dataset.SevirWindowDataset` with ``modalities=()``) on the
forecast's grid, so truth and training targets share one code path; every forecast sample
must be the loader's sample at the same position (same event id and window start).

Outputs:

- ``RUN.csv``: one row per (pooling, threshold, lead) with the four counts and POD, SUCR,
  CSI, BIAS, plus a row per (pooling, threshold) with the counts pooled over leads
  (``lead = all``);
- ``RUN.json``: the summary (CSI-M both ways, CSI/POD/SUCR/BIAS per threshold, pooled CSI,
  MSE, MAE, SSIM, LPIPS or ``null`` with the reason, the same by lead, provenance);
- ``RUN.counts.npz``: per-event counts and sums, what the report needs for bootstrap
  intervals and pooled scores (see :func:`write_counts`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr

from stormfusion.data.sevir import VIL_THRESHOLDS
from stormfusion.errors import StormFusionError
from stormfusion.io import atomic_path, write_json_atomic, write_text_atomic
from stormfusion.provenance import provenance
from stormfusion.verification.contingency import CategoricalScores, ContingencyCounts
from stormfusion.verification.continuous import SUM_NAMES, ContinuousScores, ContinuousSums
from stormfusion.verification.lpips import LPIPS, load_lpips
from stormfusion.verification.pooling import DEFAULT_POOLINGS
from stormfusion.verification.scores import COUNT_NAMES

logger = logging.getLogger(__name__)

#: Label of the unpooled (pixel) counts in the CSV's ``pool`` column and the npz keys.
PIXEL = "none"


@dataclass
class ScoreAccumulator:
    """Everything the score step streams over: counts (pixel and pooled), sums, LPIPS."""

    counts: dict[str, ContingencyCounts]
    sums: ContinuousSums
    lpips: LPIPS | None
    lpips_sum: dict[str, np.ndarray]  # event -> (L, 2): sum of LPIPS, frames

    @classmethod
    def init(cls, n_leads: int, lpips: LPIPS | None = None) -> ScoreAccumulator:
        counts = {PIXEL: ContingencyCounts.init(n_leads, VIL_THRESHOLDS)}
        for p in DEFAULT_POOLINGS:
            counts[p.name] = ContingencyCounts.init(n_leads, VIL_THRESHOLDS, p)
        return cls(counts, ContinuousSums.init(n_leads), lpips, {})

    @property
    def n_leads(self) -> int:
        return self.sums.n_leads

    def accumulate(self, forecast: torch.Tensor, truth: torch.Tensor, event_ids: list[str]) -> None:
        """Add a batch: forecast and truth (B, L, H, W) 0..255 VIL, the B samples' event ids."""
        for c in self.counts.values():
            c.accumulate(forecast, truth, event_ids)
        self.sums.accumulate(forecast, truth, event_ids)
        if self.lpips is not None:
            b, n_leads, h, w = forecast.shape
            dist = self.lpips.vil_distance(forecast.reshape(-1, h, w), truth.reshape(-1, h, w))
            d = dist.reshape(b, n_leads).double().cpu().numpy()
            for i, e in enumerate(event_ids):
                acc = self.lpips_sum.setdefault(e, np.zeros((n_leads, 2)))
                acc[:, 0] += d[i]
                acc[:, 1] += 1.0

    @property
    def events(self) -> list[str]:
        return sorted(self.counts[PIXEL].events)


def _aligned(events: list[str], own: list[str], table: np.ndarray) -> np.ndarray:
    pos = {e: i for i, e in enumerate(own)}
    return table[[pos[e] for e in events]]


def _finite(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


def _finite_list(xs: np.ndarray) -> list[float | None]:
    return [_finite(float(v)) for v in np.asarray(xs, dtype=np.float64).ravel()]


def _plain(t: float) -> int | float:
    return int(t) if float(t).is_integer() else float(t)


def _threshold_key(t: float) -> str:
    return str(int(t)) if float(t).is_integer() else str(t)


# ----------------------------------------------------------------------------- input


def open_forecast(path: str | os.PathLike[str]) -> xr.Dataset:
    """Open a forecast store and check its layout (variable, dims, coordinates, attrs)."""
    p = Path(path)
    if not p.exists():
        raise StormFusionError(f"{p}: forecast store does not exist")
    try:
        with warnings.catch_warnings():
            # Snakemake marks directory outputs with a file zarr does not know; harmless
            warnings.filterwarnings("ignore", message=".*snakemake_timestamp")
            ds = xr.open_zarr(p, consolidated=False)
    except Exception as exc:  # zarr/xarray raise many types for unreadable stores
        raise StormFusionError(f"{p}: cannot open as a Zarr store ({exc})") from exc
    if "forecast" not in ds:
        raise StormFusionError(f"{p}: no variable 'forecast' (has {sorted(ds.data_vars)})")
    dims = ds["forecast"].dims
    if tuple(dims) != ("sample", "lead", "y", "x"):
        raise StormFusionError(f"{p}: 'forecast' has dims {dims}, expected (sample, lead, y, x)")
    for coord in ("event_id", "window_start", "lead_time"):
        if coord not in ds.coords and coord not in ds:
            raise StormFusionError(f"{p}: coordinate {coord!r} is missing")
    if "split" not in ds.attrs:
        raise StormFusionError(f"{p}: attribute 'split' is missing")
    return ds


def forecast_provenance(ds: xr.Dataset) -> dict[str, Any]:
    """The forecast store's provenance attribute as a dict (JSON text is accepted)."""
    prov = ds.attrs.get("provenance", {})
    if isinstance(prov, str):
        try:
            prov = json.loads(prov)
        except json.JSONDecodeError:
            prov = {"text": prov}
    return dict(prov) if isinstance(prov, Mapping) else {}


def truth_dataset(
    truth: str | os.PathLike[str], windows: str | os.PathLike[str], split: str, image_size: int
) -> Any:
    """The loader's target-only view of the VIL store ``truth`` (must be named vil.zarr)."""
    from stormfusion.data.dataset import SevirWindowDataset

    tp = Path(truth)
    if tp.name != "vil.zarr":
        raise StormFusionError(f"{tp}: the truth must be the VIL store 'vil.zarr'")
    if not tp.exists():
        raise StormFusionError(f"{tp}: truth store does not exist")
    return SevirWindowDataset(
        zarr_dir=tp.parent, windows=windows, split=split, modalities=(), image_size=image_size
    )


def _batches(
    ds: xr.Dataset, truth: Any, batch_size: int, source: Path
) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[str]]]:
    """(forecast, truth, event ids) batches, checking each sample against the loader's."""
    n = ds.sizes["sample"]
    if len(truth) != n:
        raise StormFusionError(
            f"{source}: {n} forecast samples but the windows table has {len(truth)} samples "
            f"in split {ds.attrs['split']!r}"
        )
    event_ids = [str(e) for e in ds["event_id"].values]
    starts = [int(s) for s in ds["window_start"].values]
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        items = [truth[i] for i in range(lo, hi)]
        for i, item in zip(range(lo, hi), items, strict=True):
            if (str(item["event_id"]), int(item["window_start"])) != (event_ids[i], starts[i]):
                raise StormFusionError(
                    f"{source}: forecast sample {i} is event {event_ids[i]} window start "
                    f"{starts[i]}, but the truth's sample {i} is event {item['event_id']} "
                    f"window start {int(item['window_start'])}: forecasts and windows differ"
                )
        target = torch.stack([torch.as_tensor(item["target"]) for item in items])
        forecast = torch.from_numpy(np.asarray(ds["forecast"][lo:hi].values))
        if forecast.shape != target.shape:
            raise StormFusionError(
                f"{source}: forecast batch {tuple(forecast.shape)} and truth "
                f"{tuple(target.shape)} differ in shape"
            )
        yield forecast, target, event_ids[lo:hi]


# ----------------------------------------------------------------------------- output


def score_table(acc: ScoreAccumulator, lead_times: list[int]) -> pd.DataFrame:
    """The CSV: counts and scores per (pooling, threshold, lead) and pooled over leads."""
    rows: list[dict[str, Any]] = []
    for pool, counts in acc.counts.items():
        s = counts.compute()
        pooled = s.counts.sum(axis=1)
        for k, t in enumerate(s.thresholds):
            cells = [(str(lt), s.counts[k, j], j) for j, lt in enumerate(lead_times)]
            cells.append(("all", pooled[k], -1))
            for lead, c, j in cells:
                row: dict[str, Any] = {"pool": pool, "threshold": _plain(t), "lead_time": lead}
                row.update({name: int(c[i]) for i, name in enumerate(COUNT_NAMES)})
                src = (
                    (s.pod_all, s.sucr_all, s.csi_all, s.bias_all)
                    if j < 0
                    else (s.pod[:, j], s.sucr[:, j], s.csi[:, j], s.bias[:, j])
                )
                for name, arr in zip(("pod", "sucr", "csi", "bias"), src, strict=True):
                    row[name] = float(arr[k])
                rows.append(row)
    return pd.DataFrame(rows)


def summary(
    acc: ScoreAccumulator,
    lead_times: list[int],
    attrs: Mapping[str, Any],
    prov: dict[str, Any],
    lpips_reason: str,
    n_samples: int,
) -> dict[str, Any]:
    """The JSON summary (NaN written as null)."""
    s: CategoricalScores = acc.counts[PIXEL].compute()
    cont: ContinuousScores = acc.sums.compute()
    keys = [_threshold_key(t) for t in s.thresholds]
    lp_by_lead = np.full(acc.n_leads, np.nan)
    lp_all = math.nan
    if acc.lpips is not None and acc.lpips_sum:
        tot = np.sum(list(acc.lpips_sum.values()), axis=0)  # (L, 2)
        lp_by_lead = tot[:, 0] / np.maximum(tot[:, 1], 1)
        lp_all = float(tot[:, 0].sum() / max(tot[:, 1].sum(), 1))
    pooled = {}
    for name, counts in acc.counts.items():
        if name == PIXEL:
            continue
        ps = counts.compute()
        pooled[name] = {
            "csi_m": _finite(ps.csi_m),
            "csi_m_per_lead": _finite(ps.csi_m_per_lead),
            "csi": dict(zip(keys, _finite_list(ps.csi_all), strict=True)),
        }
    own = provenance(data_fingerprint=prov.get("data_fingerprint"))
    return {
        "run": attrs.get("run"),
        "model": attrs.get("model"),
        "model_args": attrs.get("model_args"),
        "split": attrs.get("split"),
        "n_samples": n_samples,
        "n_events": len(acc.events),
        "thresholds": [_plain(t) for t in s.thresholds],
        "event_definition": "value >= threshold (0..255 VIL)",
        "lead_times": lead_times,
        "csi_m": _finite(s.csi_m),
        "csi_m_definition": (
            "counts pooled over lead times, CSI per threshold, mean over thresholds"
        ),
        "csi_m_per_lead": _finite(s.csi_m_per_lead),
        "csi": dict(zip(keys, _finite_list(s.csi_all), strict=True)),
        "pod": dict(zip(keys, _finite_list(s.pod_all), strict=True)),
        "sucr": dict(zip(keys, _finite_list(s.sucr_all), strict=True)),
        "bias": dict(zip(keys, _finite_list(s.bias_all), strict=True)),
        "pooled": pooled,
        "mse": _finite(cont.mse),
        "mae": _finite(cont.mae),
        "mse_01": _finite(cont.mse_01),
        "mae_01": _finite(cont.mae_01),
        "ssim": _finite(cont.ssim),
        "lpips": _finite(lp_all),
        "lpips_reason": lpips_reason or None,
        "by_lead": {
            "lead_time": lead_times,
            "csi_m": _finite_list(s.csi_m_by_lead),
            "csi": {k: _finite_list(s.csi[i]) for i, k in enumerate(keys)},
            "mse": _finite_list(cont.mse_by_lead),
            "mae": _finite_list(cont.mae_by_lead),
            "ssim": _finite_list(cont.ssim_by_lead),
            "lpips": _finite_list(lp_by_lead),
        },
        "provenance": {"forecast": prov, "scoring": own},
        "data_fingerprint": prov.get("data_fingerprint"),
    }


def write_counts(
    path: str | os.PathLike[str], acc: ScoreAccumulator, lead_times: list[int]
) -> None:
    """Write the per-event arrays (events sorted by id) to ``path`` (.npz).

    Keys: ``event_ids`` (E,) str; ``thresholds`` (T,); ``lead_times`` (L,) minutes;
    ``count_names`` (4,); ``counts`` (E, T, L, 4) int64 pixel counts; ``counts_<pool>`` the
    same after pooling (``max4``, ``max16``, ``avg4``, ``avg16``); ``sums`` (E, L, 5) with
    ``sum_names`` (sse, sae, n_pixels, ssim_sum, n_frames; 0..255 scale); ``lpips`` (E, L, 2)
    LPIPS sum and frame count (all zero when LPIPS is n/a).
    """
    events = acc.events
    arrays: dict[str, Any] = {
        "event_ids": np.array(events, dtype=np.str_),
        "thresholds": np.array(VIL_THRESHOLDS, dtype=np.float64),
        "lead_times": np.array(lead_times, dtype=np.int64),
        "count_names": np.array(COUNT_NAMES, dtype=np.str_),
        "sum_names": np.array(SUM_NAMES, dtype=np.str_),
    }
    for name, c in acc.counts.items():
        key = "counts" if name == PIXEL else f"counts_{name}"
        arrays[key] = _aligned(events, c.events, c.table)
    arrays["sums"] = _aligned(events, acc.sums.events, acc.sums.table)
    arrays["lpips"] = (
        np.stack([acc.lpips_sum.get(e, np.zeros((acc.n_leads, 2))) for e in events])
        if events
        else np.zeros((0, acc.n_leads, 2))
    )
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.savez(fh, **arrays)


def score_run(
    forecast: str | os.PathLike[str],
    truth: str | os.PathLike[str],
    windows: str | os.PathLike[str],
    out_csv: str | os.PathLike[str],
    out_json: str | os.PathLike[str],
    out_counts: str | os.PathLike[str],
    lpips_weights: str | os.PathLike[str] | None = None,
    batch_size: int = 8,
    device: str | None = None,
) -> dict[str, Any]:
    """Score one forecast store; write the CSV, JSON and counts; return the summary."""
    if batch_size < 1:
        raise StormFusionError(f"--batch-size must be >= 1, got {batch_size}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    fpath = Path(forecast)
    ds = open_forecast(fpath)
    n_samples = ds.sizes["sample"]
    if n_samples == 0:
        raise StormFusionError(f"{fpath}: the forecast store holds no samples")
    height, width = ds.sizes["y"], ds.sizes["x"]
    if height != width:
        raise StormFusionError(f"{fpath}: forecasts are {height} x {width}, expected square")
    split = str(ds.attrs["split"])
    truth_ds = truth_dataset(truth, windows, split, height)
    prov = forecast_provenance(ds)
    truth_fp = getattr(truth_ds, "data_fingerprint", None)
    if truth_fp and prov.get("data_fingerprint") and truth_fp != prov["data_fingerprint"]:
        raise StormFusionError(
            f"{fpath}: forecasts were made from data {prov['data_fingerprint']} but the truth "
            f"store {truth} is data {truth_fp}"
        )
    lead_times = [int(v) for v in ds["lead_time"].values]
    net, reason = load_lpips(lpips_weights, dev)
    acc = ScoreAccumulator.init(len(lead_times), net)
    logger.info(
        "scoring %s: %d samples, %d leads, %d x %d, split %s, on %s",
        fpath,
        n_samples,
        len(lead_times),
        height,
        width,
        split,
        dev,
    )
    for f, t, ids in _batches(ds, truth_ds, batch_size, fpath):
        acc.accumulate(f.to(dev), t.to(dev), ids)
    table = score_table(acc, lead_times)
    result = summary(acc, lead_times, ds.attrs, prov, reason, n_samples)
    if result["data_fingerprint"] is None and truth_fp:
        result["data_fingerprint"] = truth_fp
    write_counts(out_counts, acc, lead_times)
    write_text_atomic(out_csv, table.to_csv(index=False))
    write_json_atomic(out_json, result)
    logger.info(
        "%s: CSI-M %.4f (pooled over leads), %.4f (per lead); MSE %.2f; SSIM %.4f; LPIPS %s",
        result["run"],
        _or_nan(result["csi_m"]),
        _or_nan(result["csi_m_per_lead"]),
        _or_nan(result["mse"]),
        _or_nan(result["ssim"]),
        "n/a" if result["lpips"] is None else f"{result['lpips']:.4f}",
    )
    return result


def _or_nan(x: float | None) -> float:
    """``x`` or NaN for ``None`` (for logging)."""
    return math.nan if x is None else float(x)
