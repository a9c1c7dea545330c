"""Small stores for the verification and report tests, built in tmp_path.

A VIL store in the archive's layout (``INTERIM/zarr/vil.zarr``), a windows table and
forecast stores in the layout of ``docs/architecture.md``, with storms that move, so that
persistence and a perfect forecast score differently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from stormfusion.data.sevir import N_FRAMES, NOMINAL_OFFSETS

FINGERPRINT = "fp-verification-test"
T_IN, T_OUT = 4, 3
STARTS = (0, 7, 14)


def storm_frames(rng: np.random.Generator, size: int) -> np.ndarray:
    """(49, size, size) uint8 VIL: two Gaussian cells drifting east, light noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    frames = np.zeros((N_FRAMES, size, size))
    for _ in range(2):
        y0, x0 = rng.uniform(0.2, 0.8, 2) * size
        peak = rng.uniform(140, 250)
        width = rng.uniform(0.08, 0.18) * size
        speed = rng.uniform(0.3, 0.8)
        for t in range(N_FRAMES):
            cx = (x0 + speed * t) % size
            frames[t] += peak * np.exp(-((yy - y0) ** 2 + (xx - cx) ** 2) / (2 * width**2))
    frames += rng.gamma(0.5, 6.0, frames.shape)
    return np.clip(np.round(frames), 0, 254).astype(np.uint8)


def write_vil_store(zarr_dir: Path, fields: dict[str, np.ndarray]) -> Path:
    ids = list(fields)
    size = next(iter(fields.values())).shape[-1]
    metres = (np.arange(size) + 0.5) * (384_000 / size)
    ds = xr.Dataset(
        {"vil": (("event", "time", "y", "x"), np.stack([fields[e] for e in ids]))},
        coords={
            "event": ("event", np.array(ids, dtype=object)),
            "time": ("time", np.array(NOMINAL_OFFSETS, dtype=np.int64)),
            "y": ("y", metres),
            "x": ("x", metres),
        },
        attrs={"data_fingerprint": FINGERPRINT},
    )
    ds.attrs["store_format"] = 2  # as convert writes the archive: every chunk written
    path = zarr_dir / "vil.zarr"
    ds.to_zarr(
        path,
        mode="w",
        consolidated=False,
        zarr_format=3,
        write_empty_chunks=True,
        encoding={"vil": {"chunks": (1, 7, size, size)}},
    )
    return path


def write_windows(path: Path, events: list[str], split: str = "val") -> pd.DataFrame:
    rows = [
        {
            "event_id": e,
            "window_start": s,
            "input_frames": T_IN,
            "output_frames": T_OUT,
            "split": split,
        }
        for e in events
        for s in STARTS
    ]
    table = pd.DataFrame(rows)
    table.to_csv(path, index=False)
    return table


def write_forecast_store(
    path: Path,
    forecast: np.ndarray,
    windows: pd.DataFrame,
    run: str,
    model: str,
    split: str = "val",
    fingerprint: str = FINGERPRINT,
    dtype: str = "uint8",
) -> Path:
    ds = xr.Dataset(
        {"forecast": (("sample", "lead", "y", "x"), forecast.astype(dtype))},
        coords={
            "event_id": ("sample", np.array(windows["event_id"].astype(str), dtype=object)),
            "window_start": ("sample", windows["window_start"].to_numpy(dtype=np.int64)),
            "lead_time": ("lead", np.arange(1, forecast.shape[1] + 1, dtype=np.int64) * 5),
        },
        attrs={
            "run": run,
            "model": model,
            "model_args": json.dumps({}),
            "split": split,
            "provenance": {"data_fingerprint": fingerprint, "package_version": "test"},
            # as predict records it
            "latency_s_per_sample": 0.0125,
            "latency_device": "cpu (cpu)",
        },
    )
    ds.to_zarr(path, mode="w", consolidated=False)
    return path


@dataclass
class Case:
    """Paths and arrays of one small scoring case."""

    root: Path
    zarr_dir: Path
    windows_csv: Path
    windows: pd.DataFrame
    truth: np.ndarray  # (N, T_OUT, H, W) uint8, windows order
    last_input: np.ndarray  # (N, H, W)
    events_json: Path

    def forecast_path(self, run: str) -> Path:
        return self.root / "results" / "forecasts" / f"{run}.zarr"


def make_case(
    root: Path, n_events: int = 3, size: int = 32, seed: int = 0, missing: int = 0
) -> Case:
    """A VIL store, windows and paths; ``missing`` pixels per event and frame set to 255."""
    rng = np.random.default_rng(seed)
    events = [f"S{700000 + i}" for i in range(n_events)]
    fields = {e: storm_frames(rng, size) for e in events}
    for frames in fields.values():
        for frame in frames:
            frame.reshape(-1)[rng.choice(size * size, missing, replace=False)] = 255
    zarr_dir = root / "interim" / "zarr"
    zarr_dir.mkdir(parents=True)
    write_vil_store(zarr_dir, fields)
    windows_csv = root / "interim" / "windows.csv"
    windows = write_windows(windows_csv, events)
    truth = np.stack(
        [
            fields[e][s + T_IN : s + T_IN + T_OUT]
            for e, s in zip(windows["event_id"], windows["window_start"], strict=True)
        ]
    )
    last = np.stack(
        [
            fields[e][s + T_IN - 1]
            for e, s in zip(windows["event_id"], windows["window_start"], strict=True)
        ]
    )
    events_json = root / "interim" / "events.json"
    events_json.write_text(json.dumps({"data_fingerprint": FINGERPRINT}))
    (root / "results" / "forecasts").mkdir(parents=True)
    return Case(root, zarr_dir, windows_csv, windows, truth, last, events_json)


def brute_counts(forecast: np.ndarray, truth: np.ndarray, t: float) -> tuple[int, int, int]:
    """Hits, misses, false alarms over the truth pixels that are not missing (255)."""
    ok = truth != 255
    f, o = forecast[ok] >= t, truth[ok] >= t
    return int((f & o).sum()), int((~f & o).sum()), int((f & ~o).sum())
