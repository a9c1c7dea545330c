"""The ``score`` step: one run's forecasts against the truth, written as CSV, JSON and state.

Forecasts come from the run's forecast store (``RESULTS/forecasts/RUN.zarr``: variable
``forecast`` (sample, lead, y, x) VIL 0..255 with coordinates ``event_id``,
``window_start``, ``lead_time`` and attributes ``run``, ``model``, ``model_args``,
``split``, ``provenance`` and, from ``predict``, the forecast latency). The truth is the VIL
store's target frames with missing values kept (:mod:`stormfusion.verification.truth`);
every forecast sample must be the split's window at the same position.

Inputs are checked before anything is written: a forecast with NaN or values outside
0..255, a grid or lead count other than the truth's, a truth store with absent chunk files:
one error naming the store, the event and what is wrong.

Outputs:

- ``RUN.csv``: one row per (pooling, threshold, lead) with the four counts and every
  registered categorical score, plus a row per (pooling, threshold) with the counts pooled
  over leads (``lead = all``);
- ``RUN.json``: :meth:`ScoreAccumulator.summary` with the protocol declaration;
- ``RUN.counts.npz``: the accumulators' state (:meth:`ScoreAccumulator.save`), from which
  the report recomputes the same numbers.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr
from tqdm import tqdm

from stormfusion.data.sevir import VIL_MAX, VIL_THRESHOLDS
from stormfusion.errors import StormFusionError
from stormfusion.io import write_json_atomic, write_text_atomic
from stormfusion.provenance import provenance
from stormfusion.verification.accumulator import ScoreAccumulator, threshold_key
from stormfusion.verification.continuous import msssim_min_size
from stormfusion.verification.lpips import LPIPS, load_lpips
from stormfusion.verification.pooling import DEFAULT_POOLINGS
from stormfusion.verification.protocol import declaration, manifest_digest
from stormfusion.verification.scores import COUNT_NAMES
from stormfusion.verification.truth import TruthWindows

logger = logging.getLogger(__name__)

#: Forecast attributes that say how long a forecast took (written by ``predict``).
LATENCY_ATTRS = ("latency_s_per_sample", "latency_device")


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


def check_forecast_values(
    forecast: torch.Tensor, source: Path, event_ids: list[str], lo: int
) -> None:
    """Refuse NaN, infinities and values outside 0..255 (naming store, sample and event)."""
    if forecast.dtype == torch.uint8:
        return
    f = forecast.to(torch.float64)
    bad = ~torch.isfinite(f) | (f < 0) | (f > VIL_MAX)
    if bool(bad.any()):
        b = int(torch.nonzero(bad.flatten(1).any(dim=1))[0, 0])
        values = f[b][bad[b]]
        raise StormFusionError(
            f"{source}: forecast sample {lo + b} (event {event_ids[b]}) holds "
            f"{int(bad[b].sum())} value(s) that are NaN, infinite or outside 0..{VIL_MAX} "
            f"(e.g. {float(values[0])})"
        )


def check_grid(
    ds: xr.Dataset, truth: TruthWindows, source: Path, image_size: int | None = None
) -> None:
    """The forecast store's lead count and grid must be the truth's (and ``image_size``)."""
    n_leads, height, width = ds.sizes["lead"], ds.sizes["y"], ds.sizes["x"]
    if height != width:
        raise StormFusionError(f"{source}: forecasts are {height} x {width}, expected square")
    if image_size is not None and height != image_size:
        raise StormFusionError(
            f"{source}: forecasts are {height} x {width} but the study's grid is {image_size} x "
            f"{image_size} (data.image_size): a cropped or resized forecast is not scored"
        )
    if n_leads != truth.output_frames:
        raise StormFusionError(
            f"{source}: {n_leads} lead times, but the windows of split {truth.split!r} have "
            f"{truth.output_frames} target frames"
        )
    if ds.sizes["sample"] != len(truth):
        raise StormFusionError(
            f"{source}: {ds.sizes['sample']} forecast samples but the windows table has "
            f"{len(truth)} samples in split {truth.split!r}"
        )


def _batches(
    ds: xr.Dataset, truth: TruthWindows, batch_size: int, source: Path
) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[str]]]:
    """(forecast, truth, event ids) batches, each sample checked against the truth's window."""
    n = ds.sizes["sample"]
    event_ids = [str(e) for e in ds["event_id"].values]
    starts = [int(s) for s in ds["window_start"].values]
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        for i in range(lo, hi):
            w = truth.windows[i]
            if (w.event_id, w.window_start) != (event_ids[i], starts[i]):
                raise StormFusionError(
                    f"{source}: forecast sample {i} is event {event_ids[i]} window start "
                    f"{starts[i]}, but the truth's sample {i} is event {w.event_id} window "
                    f"start {w.window_start}: forecasts and windows differ"
                )
        target = torch.stack([truth.read(i) for i in range(lo, hi)])
        forecast = torch.from_numpy(np.asarray(ds["forecast"][lo:hi].values))
        if forecast.shape != target.shape:
            raise StormFusionError(
                f"{source}: forecast batch {tuple(forecast.shape)} (events "
                f"{event_ids[lo]}..{event_ids[hi - 1]}) and truth {tuple(target.shape)} from "
                f"{truth.path} differ in shape"
            )
        check_forecast_values(forecast, source, event_ids[lo:hi], lo)
        yield forecast, target, event_ids[lo:hi]


# ----------------------------------------------------------------------------- output


def score_table(acc: ScoreAccumulator) -> pd.DataFrame:
    """The CSV: counts and every categorical score per (pooling, threshold, lead) and over
    leads (``lead_time`` = ``all``), with the provenance columns."""
    rows: list[dict[str, Any]] = []
    for pool in acc.counts:
        s = acc.categorical(pool)
        pooled = s.counts.sum(axis=1)
        for k, t in enumerate(s.thresholds):
            cells = [(str(lt), s.counts[k, j], j) for j, lt in enumerate(acc.lead_times)]
            cells.append(("all", pooled[k], -1))
            for lead, c, j in cells:
                row: dict[str, Any] = {"pool": pool, "threshold": threshold_key(t)}
                row["lead_time"] = lead
                row.update({name: int(c[i]) for i, name in enumerate(COUNT_NAMES)})
                for name in s.overall:
                    arr = s.overall[name] if j < 0 else s.by_lead[name][:, j]
                    row[name] = float(arr[k])
                rows.append(row)
    table = pd.DataFrame(rows)
    for key, value in acc.meta.get("provenance", {}).get("scoring", {}).items():
        table[key] = value  # every score file carries its provenance
    return table


def _lpips_network(
    weights: str | os.PathLike[str] | None, device: torch.device
) -> tuple[LPIPS | None, str]:
    """The LPIPS network, or (None, why) when no weights are installed and none were named."""
    if weights is not None and not Path(weights).is_dir():
        raise StormFusionError(f"--lpips-weights {weights}: directory does not exist")
    try:
        return load_lpips(weights, device), ""
    except StormFusionError as exc:
        if weights is not None:
            raise
        logger.warning("%s; LPIPS will be reported as n/a", exc)
        return None, str(exc)


def _meta(ds: xr.Dataset, truth: TruthWindows, digest: str, lpips_reason: str) -> dict[str, Any]:
    """Run description, protocol and provenance saved with the state."""
    prov = forecast_provenance(ds)
    size = int(ds.sizes["y"])
    lead_times = [int(v) for v in ds["lead_time"].values]
    small = size < msssim_min_size()
    latency = {k: ds.attrs.get(k) for k in LATENCY_ATTRS}
    return {
        "run": ds.attrs.get("run"),
        "model": ds.attrs.get("model"),
        "model_args": ds.attrs.get("model_args"),
        "split": truth.split,
        "n_samples": int(ds.sizes["sample"]),
        "cells_per_frame": {p.name: (size // p.size) ** 2 for p in DEFAULT_POOLINGS},
        "latency_s_per_sample": latency["latency_s_per_sample"],
        "latency_device": latency["latency_device"],
        "protocol": declaration(
            input_frames=truth.input_frames,
            output_frames=truth.output_frames,
            lead_times=lead_times,
            thresholds=VIL_THRESHOLDS,
            image_size=size,
            split=truth.split,
            digest=digest,
        ),
        "reasons": {
            "lpips": lpips_reason or None,
            "msssim": (
                f"frames of {size} px are smaller than the {msssim_min_size()} px MS-SSIM's "
                "five scales need"
                if small
                else None
            ),
        },
        "provenance": {
            "forecast": prov,
            "scoring": provenance(data_fingerprint=prov.get("data_fingerprint")),
        },
        "data_fingerprint": prov.get("data_fingerprint") or truth.data_fingerprint or None,
    }


def _open_inputs(
    forecast: str | os.PathLike[str],
    truth: str | os.PathLike[str],
    windows: str | os.PathLike[str],
    image_size: int | None,
) -> tuple[xr.Dataset, TruthWindows]:
    fpath = Path(forecast)
    ds = open_forecast(fpath)
    if ds.sizes["sample"] == 0:
        raise StormFusionError(f"{fpath}: the forecast store holds no samples")
    truth_windows = TruthWindows(truth, windows, str(ds.attrs["split"]), int(ds.sizes["y"]))
    check_grid(ds, truth_windows, fpath, image_size)
    theirs = forecast_provenance(ds).get("data_fingerprint")
    ours = truth_windows.data_fingerprint
    if ours and theirs and ours != theirs:
        raise StormFusionError(
            f"{fpath}: forecasts were made from data {theirs} but the truth store {truth} is "
            f"data {ours}"
        )
    return ds, truth_windows


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
    windows_manifest: str | os.PathLike[str] | None = None,
    image_size: int | None = None,
) -> dict[str, Any]:
    """Score one forecast store; write the CSV, JSON and state; return the summary."""
    if batch_size < 1:
        raise StormFusionError(f"--batch-size must be >= 1, got {batch_size}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    fpath = Path(forecast)
    ds, truth_windows = _open_inputs(fpath, truth, windows, image_size)
    digest = manifest_digest(windows_manifest)
    net, reason = _lpips_network(lpips_weights, dev)
    lead_times = [int(v) for v in ds["lead_time"].values]
    acc = ScoreAccumulator.init(lead_times, net)
    acc.meta = _meta(ds, truth_windows, digest, reason)
    n = ds.sizes["sample"]
    logger.info(
        "scoring %s: %d samples, %d leads, split %s, on %s",
        fpath,
        n,
        len(lead_times),
        truth_windows.split,
        dev,
    )
    with tqdm(total=n, unit="sample", desc="score", mininterval=30.0) as bar:
        for f, t, ids in _batches(ds, truth_windows, batch_size, fpath):
            acc.accumulate(f.to(dev), t.to(dev), ids)
            bar.update(len(ids))
    result = acc.summary()
    acc.save(out_counts)
    write_text_atomic(out_csv, score_table(acc).to_csv(index=False))
    write_json_atomic(out_json, result)
    _log_result(result)
    return result


def _log_result(result: Mapping[str, Any]) -> None:
    logger.info(
        "%s: CSI-M %.4f (pooled over leads), %.4f (per lead); HSS-74 %s; MSE %.2f; SSIM %.4f; "
        "LPIPS %s; %d truth pixels excluded",
        result["run"],
        _or_nan(result["csi_m"]),
        _or_nan(result["csi_m_per_lead"]),
        result["hss"].get("74"),
        _or_nan(result["mse"]),
        _or_nan(result["ssim"]),
        "n/a" if result["lpips"] is None else f"{result['lpips']:.4f}",
        result["excluded"]["truth_pixels"],
    )


def _or_nan(x: float | None) -> float:
    """``x`` or NaN for ``None`` (for logging)."""
    return math.nan if x is None else float(x)
