"""The synthetic SEVIR twin: CATALOG.csv and HDF5 files in exactly the real archive's layout.

What it writes under the output directory ``RAW`` (the same tree the bucket has):

- ``CATALOG.csv``: the 21 real columns; one row per (event, sensor) for vil, ir069, ir107
  and lght (the twin has no vis); ``S<event_id>`` storm events with episode, event id and
  NWS event type, ``R<digits>`` random events with those three fields empty; 49
  colon-separated minute offsets (a few events shifted by 1-2 minutes, like the real
  catalog) and none for lght; plausible LAEA corners; ``size_x = size_y`` = S, S/2, S/2,
  S/8; one storm event's vil row duplicated (the real catalog's known defect); one storm
  event in twelve with a corner of missing VIL (255) and ``pct_missing > 0``.
- ``data/<type>/<YYYY>/SEVIR_<TYPE>_STORMEVENTS_<YYYY>_<0101_0630|0701_1231>.h5``,
  ``..._RANDOMEVENTS_<YYYY>_<0101_0430|0501_0831|0901_1231>.h5`` for vil, ir069, ir107, and
  monthly ``data/lght/<YYYY>/SEVIR_LGHT_ALLEVENTS_<YYYY>_<MM01>_<next MM01>.h5`` (December:
  ``_1201_0101``), the names the bucket uses.
- ``synthetic_manifest.json``: every file with its size and SHA-256, and the parameters.

Storm events are spread round-robin over three windows: July-December of ``year - 1``,
January-May of ``year`` and July-December of ``year``, so both the SEVIR paper's and
Earthformer's date splits (cuts 2019-01-01 and 2019-06-01 for year 2019) find events on
each side. Random events fall anywhere in the same 18 months.

Deterministic for a seed: every event draws from its own generator,
``default_rng([seed, kind, index])``, so changing the count of one kind does not change the
events of the other. Atomic: everything is written into a temporary directory beside
``RAW`` and moved into place only when complete, the manifest last.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stormfusion.data import hdf5
from stormfusion.data.projection import laea_inverse
from stormfusion.data.sevir import (
    CATALOG_COLUMNS,
    NOMINAL_OFFSETS,
    PATCH_METRES,
    PROJ,
    VIL_MISSING,
    VIL_THRESHOLDS,
)
from stormfusion.data.weather import simulate_event
from stormfusion.errors import StormFusionError
from stormfusion.io import remove_path, scratch_path, sha256_file, write_json_atomic

logger = logging.getLogger(__name__)

MANIFEST_NAME = "synthetic_manifest.json"
RASTER_TYPES = ("vil", "ir069", "ir107")
#: NWS event types and how often the twin draws them.
EVENT_TYPES: dict[str, float] = {
    "Hail": 0.32,
    "Thunderstorm Wind": 0.30,
    "Tornado": 0.08,
    "Heavy Rain": 0.12,
    "Flash Flood": 0.10,
    "Lightning": 0.03,
    "Funnel Cloud": 0.03,
    "Flood": 0.02,
}
#: Storm events with ``index % MISSING_EVERY == MISSING_AT`` get a corner of missing VIL.
MISSING_EVERY = 12
MISSING_AT = 5
MISSING_FRACTION = 0.08


@dataclass(frozen=True)
class SynthesisParams:
    """What the twin is made of (recorded in the manifest)."""

    n_storm: int = 48
    n_random: int = 8
    image_size: int = 384
    year: int = 2019
    seed: int = 0

    def check(self) -> None:
        """Raise :class:`StormFusionError` for values the twin cannot be built from."""
        if self.n_storm < 1:
            raise StormFusionError(f"--events must be >= 1, got {self.n_storm}")
        if self.n_random < 0:
            raise StormFusionError(f"--random-events must be >= 0, got {self.n_random}")
        if self.image_size < 16 or self.image_size % 8:
            raise StormFusionError(
                f"--image-size must be a multiple of 8 and >= 16, got {self.image_size}"
            )
        if not 2001 <= self.year <= 2100:
            raise StormFusionError(f"--year must be between 2001 and 2100, got {self.year}")


@dataclass
class _Event:
    id: str
    kind: str  # storm | random
    index: int  # index within its kind (fixes its random stream)
    time_utc: dt.datetime
    episode_id: int | None
    event_id: int | None
    event_type: str | None
    centre_m: tuple[float, float]
    offsets: tuple[int, ...]
    missing: bool
    files: dict[str, str] = field(default_factory=dict)  # img_type -> file name under data/
    file_index: dict[str, int] = field(default_factory=dict)


def storm_file_name(img_type: str, when: dt.datetime) -> str:
    """Half-year STORMEVENTS file of ``when`` (relative to ``data/``)."""
    span = "0101_0630" if when.month <= 6 else "0701_1231"
    return f"{img_type}/{when.year}/SEVIR_{img_type.upper()}_STORMEVENTS_{when.year}_{span}.h5"


def random_file_name(img_type: str, when: dt.datetime) -> str:
    """Third-of-year RANDOMEVENTS file of ``when`` (relative to ``data/``)."""
    span = "0101_0430" if when.month <= 4 else "0501_0831" if when.month <= 8 else "0901_1231"
    return f"{img_type}/{when.year}/SEVIR_{img_type.upper()}_RANDOMEVENTS_{when.year}_{span}.h5"


def lightning_file_name(when: dt.datetime) -> str:
    """Monthly ALLEVENTS lightning file of ``when`` (December ends ``_1201_0101``)."""
    nxt = 1 if when.month == 12 else when.month + 1
    return f"lght/{when.year}/SEVIR_LGHT_ALLEVENTS_{when.year}_{when.month:02d}01_{nxt:02d}01.h5"


def _plan_events(params: SynthesisParams) -> list[_Event]:
    """Ids, times, places and files of every event (no pixels yet)."""
    rng = np.random.default_rng([params.seed, 0])
    year = params.year
    windows = [
        (dt.datetime(year - 1, 7, 1), dt.datetime(year - 1, 12, 31)),
        (dt.datetime(year, 1, 1), dt.datetime(year, 5, 31)),
        (dt.datetime(year, 7, 1), dt.datetime(year, 12, 31)),
    ]
    event_ids = rng.choice(np.arange(700_000, 900_000), size=params.n_storm, replace=False)
    types = list(EVENT_TYPES)
    weights = np.array(list(EVENT_TYPES.values()))
    events: list[_Event] = []
    for i in range(params.n_storm):
        start, end = windows[i % len(windows)]
        day = start + dt.timedelta(days=int(rng.integers(0, (end - start).days + 1)))
        when = day.replace(hour=int(rng.integers(16, 24)), minute=5 * int(rng.integers(0, 12)))
        shift = int(rng.choice([-2, -1, 1, 2])) if rng.random() < 0.15 else 0
        events.append(
            _Event(
                id=f"S{event_ids[i]}",
                kind="storm",
                index=i,
                time_utc=when,
                episode_id=int(event_ids[i] // 6) + int(rng.integers(0, 50)),
                event_id=int(event_ids[i]),
                event_type=str(rng.choice(types, p=weights / weights.sum())),
                centre_m=(float(rng.uniform(-1.6e6, 1.4e6)), float(rng.uniform(-1.1e6, 0.9e6))),
                offsets=tuple(o + shift for o in NOMINAL_OFFSETS),
                missing=i % MISSING_EVERY == MISSING_AT,
            )
        )
    span_start, span_days = windows[0][0], (windows[-1][1] - windows[0][0]).days
    for i in range(params.n_random):
        day = span_start + dt.timedelta(days=int(rng.integers(0, span_days + 1)))
        when = day.replace(hour=int(rng.integers(0, 24)), minute=5 * int(rng.integers(0, 12)))
        events.append(
            _Event(
                id=f"R{when:%y%m%d%H%M}{i:03d}",
                kind="random",
                index=i,
                time_utc=when,
                episode_id=None,
                event_id=None,
                event_type=None,
                centre_m=(float(rng.uniform(-1.8e6, 1.8e6)), float(rng.uniform(-1.3e6, 1.1e6))),
                offsets=NOMINAL_OFFSETS,
                missing=False,
            )
        )
    for ev in events:
        name = storm_file_name if ev.kind == "storm" else random_file_name
        for img_type in RASTER_TYPES:
            ev.files[img_type] = name(img_type, ev.time_utc)
        ev.files["lght"] = lightning_file_name(ev.time_utc)
    return events


def _corners(centre: tuple[float, float]) -> dict[str, float]:
    half = PATCH_METRES / 2.0
    lat0, lon0 = laea_inverse(centre[0] - half, centre[1] - half)
    lat1, lon1 = laea_inverse(centre[0] + half, centre[1] + half)
    return {
        "llcrnrlat": round(float(lat0), 6),
        "llcrnrlon": round(float(lon0), 6),
        "urcrnrlat": round(float(lat1), 6),
        "urcrnrlon": round(float(lon1), 6),
    }


def _flashes_with_latlon(ev: _Event, txy: np.ndarray, grid: int) -> np.ndarray:
    """(n, 5) ``[t, lat, lon, x, y]`` from (n, 3) ``[t, x, y]`` on the lightning grid."""
    if txy.shape[0] == 0:
        return np.zeros((0, 5), dtype=np.float32)
    pixel_m = PATCH_METRES / grid
    xm = ev.centre_m[0] - PATCH_METRES / 2.0 + txy[:, 1] * pixel_m
    ym = ev.centre_m[1] - PATCH_METRES / 2.0 + txy[:, 2] * pixel_m
    lat, lon = laea_inverse(xm, ym)
    return np.stack([txy[:, 0], lat, lon, txy[:, 1], txy[:, 2]], axis=1).astype(np.float32)


def _catalog_rows(
    ev: _Event, stats: dict[str, tuple[float, float, float]], params: SynthesisParams
) -> list[dict[str, Any]]:
    sizes = {
        "vil": params.image_size,
        "ir069": params.image_size // 2,
        "ir107": params.image_size // 2,
        "lght": params.image_size // 8,
    }
    rows = []
    for img_type in (*RASTER_TYPES, "lght"):
        lo, hi, missing = stats[img_type]
        rows.append(
            {
                "id": ev.id,
                "file_name": ev.files[img_type],
                "file_index": ev.file_index[img_type],
                "img_type": img_type,
                "time_utc": ev.time_utc.strftime("%Y-%m-%d %H:%M:%S"),
                "minute_offsets": "" if img_type == "lght" else ":".join(map(str, ev.offsets)),
                "episode_id": ev.episode_id,
                "event_id": ev.event_id,
                "event_type": ev.event_type,
                **_corners(ev.centre_m),
                "proj": PROJ,
                "size_x": sizes[img_type],
                "size_y": sizes[img_type],
                "height_m": PATCH_METRES,
                "width_m": PATCH_METRES,
                "data_min": lo,
                "data_max": hi,
                "pct_missing": missing,
            }
        )
    return rows


def _file_entry(root: Path, path: Path) -> dict[str, Any]:
    return {
        "path": path.relative_to(root).as_posix(),
        "size": path.stat().st_size,
        "sha256": sha256_file(path),
    }


def synthesize_archive(
    out_dir: str | os.PathLike[str],
    n_storm: int = 48,
    n_random: int = 8,
    image_size: int = 384,
    year: int = 2019,
    seed: int = 0,
) -> dict[str, Any]:
    """Write a synthetic SEVIR archive under ``out_dir`` and return its manifest.

    Args:
        out_dir: the raw data root (``CATALOG.csv`` and ``data/`` go here).
        n_storm: storm (S) events.
        n_random: random (R) events.
        image_size: VIL pixels per side S (multiple of 8); IR is S/2, lightning S/8.
        year: the second of the two years the events span (see the module docstring).
        seed: fixes every pixel, flash and catalog value.

    Returns:
        The manifest written to ``out_dir/synthetic_manifest.json``: ``parameters``,
        ``files`` (path relative to ``out_dir``, size, sha256), ``events`` (counts) and
        ``duplicated_id``, ``missing_ids`` (the defects planted in the catalog).
    """
    params = SynthesisParams(n_storm, n_random, image_size, year, seed)
    params.check()
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with scratch_path(root / "synthesize", report_as=root) as staging:
        manifest = _write_archive(staging, params)
        moved: list[Path] = []
        try:
            for entry in manifest["files"]:
                final = root / entry["path"]
                final.parent.mkdir(parents=True, exist_ok=True)
                (staging / entry["path"]).replace(final)
                moved.append(final)
        except BaseException:
            for path in moved:
                remove_path(path)
            raise
    manifest["seconds"] = round(time.perf_counter() - started, 3)
    write_json_atomic(root / MANIFEST_NAME, manifest)
    logger.info(
        "synthesized %d storm + %d random events (S=%d) into %s in %.1f s",
        n_storm,
        n_random,
        image_size,
        root,
        manifest["seconds"],
    )
    return manifest


_Stats = dict[str, dict[str, tuple[float, float, float]]]  # id -> img_type -> (min, max, %missing)
_Flashes = dict[str, dict[str, np.ndarray]]  # lght file name -> id -> (N, 5) flashes


def _write_archive(staging: Path, params: SynthesisParams) -> dict[str, Any]:
    """Write the whole twin (data files, then ``CATALOG.csv``) under ``staging``.

    Returns the manifest: parameters, written files (catalog first), event counts,
    the duplicated catalog id and the ids with missing VIL pixels.
    """
    events = _plan_events(params)
    flashes: _Flashes = defaultdict(dict)
    stats: _Stats = defaultdict(dict)
    written = _write_rasters(staging, params, events, stats, flashes)
    written.extend(_write_lightning(staging, events, flashes))
    catalog_path, duplicated = _write_catalog(staging, params, events, stats)
    written.insert(0, catalog_path)
    storms = [e for e in events if e.kind == "storm"]
    return {
        "parameters": asdict(params),
        "files": [_file_entry(staging, p) for p in written],
        "events": {"storm": params.n_storm, "random": params.n_random},
        "duplicated_id": duplicated,
        "missing_ids": sorted(e.id for e in storms if e.missing),
    }


def _write_rasters(
    staging: Path,
    params: SynthesisParams,
    events: Sequence[_Event],
    stats: _Stats,
    flashes: _Flashes,
) -> list[Path]:
    """Simulate every event and write the raster files, one per vil file group.

    Events sharing a vil file are stacked in (time, id) order, shape (N, S, S, T) per
    image type. Fills ``stats``, ``flashes`` and each event's ``file_index`` in place;
    returns the written paths.
    """
    by_file: dict[str, list[_Event]] = defaultdict(list)
    for ev in events:
        by_file[ev.files["vil"]].append(ev)
    grid = params.image_size // 8
    written: list[Path] = []
    for vil_name in sorted(by_file):
        group = sorted(by_file[vil_name], key=lambda e: (e.time_utc, e.id))
        arrays: dict[str, list[np.ndarray]] = {t: [] for t in RASTER_TYPES}
        for position, ev in enumerate(group):
            _simulate_member(ev, position, params, grid, arrays, stats, flashes)
        for img_type in RASTER_TYPES:
            path = staging / "data" / group[0].files[img_type]
            hdf5.write_raster_file(
                path, img_type, [e.id for e in group], np.stack(arrays[img_type], axis=0)
            )
            written.append(path)
    return written


def _simulate_member(
    ev: _Event,
    position: int,
    params: SynthesisParams,
    grid: int,
    arrays: dict[str, list[np.ndarray]],
    stats: _Stats,
    flashes: _Flashes,
) -> None:
    """Simulate one event at ``position`` of its file group, from its own random stream.

    Appends its rasters to ``arrays`` and records its value ranges (``stats``), its
    flashes with lat/lon (``flashes``) and its index in each raster file.
    """
    rng = np.random.default_rng([params.seed, 1 if ev.kind == "storm" else 2, ev.index])
    weather = simulate_event(
        rng,
        params.image_size,
        ev.kind == "storm",
        ev.time_utc.month,
        missing_fraction=MISSING_FRACTION if ev.missing else 0.0,
    )
    for img_type in RASTER_TYPES:
        arr = getattr(weather, img_type)
        arrays[img_type].append(arr)
        ev.file_index[img_type] = position
        valid = arr[arr != VIL_MISSING] if img_type == "vil" else arr
        missing = 100.0 * float((arr == VIL_MISSING).mean()) if img_type == "vil" else 0.0
        stats[ev.id][img_type] = (float(valid.min()), float(valid.max()), round(missing, 4))
    flashes[ev.files["lght"]][ev.id] = _flashes_with_latlon(ev, weather.flashes, grid)
    counts = hdf5.grid_lightning(flashes[ev.files["lght"]][ev.id], grid)
    stats[ev.id]["lght"] = (0.0, float(counts.max()), 0.0)


def _write_lightning(staging: Path, events: Sequence[_Event], flashes: _Flashes) -> list[Path]:
    """Write one lightning file per name (events in id order); return the written paths."""
    by_id = {ev.id: ev for ev in events}
    written: list[Path] = []
    for name in sorted(flashes):
        for position, event_id in enumerate(sorted(flashes[name])):
            by_id[event_id].file_index["lght"] = position  # unused by readers, as in SEVIR
        path = staging / "data" / name
        hdf5.write_lightning_file(path, dict(sorted(flashes[name].items())))
        written.append(path)
    return written


def _write_catalog(
    staging: Path, params: SynthesisParams, events: Sequence[_Event], stats: _Stats
) -> tuple[Path, str]:
    """Write ``CATALOG.csv`` with one vil row duplicated, as in the real catalog.

    Returns the catalog's path and the duplicated id (the second-last storm, or the only).
    """
    rows: list[dict[str, Any]] = []
    for ev in sorted(events, key=lambda e: (e.time_utc, e.id)):
        rows.extend(_catalog_rows(ev, stats[ev.id], params))
    storms = [e for e in events if e.kind == "storm"]
    duplicated = storms[len(storms) - 2].id if len(storms) >= 2 else storms[0].id
    dup_row = next(r for r in rows if r["id"] == duplicated and r["img_type"] == "vil")
    rows.insert(rows.index(dup_row) + 1, dict(dup_row))
    catalog = pd.DataFrame(rows, columns=list(CATALOG_COLUMNS))
    catalog["episode_id"] = catalog["episode_id"].astype("Int64")
    catalog["event_id"] = catalog["event_id"].astype("Int64")
    catalog_path = staging / "CATALOG.csv"
    catalog.to_csv(catalog_path, index=False)
    return catalog_path, duplicated


def vil_threshold_fractions(
    data_root: str | os.PathLike[str],
    thresholds: Sequence[int] = VIL_THRESHOLDS,
    kind: str = "storm",
) -> dict[int, float]:
    """Fraction of valid VIL pixels ``>= t`` for each threshold, over all events of a kind.

    Reads ``CATALOG.csv`` and the vil files under ``data_root`` (real or synthetic) through
    the archive readers; pixels equal to 255 (missing) are left out.
    """
    from stormfusion.data.catalog import raw_path, read_catalog

    root = Path(data_root)
    catalog = read_catalog(root / "CATALOG.csv")
    prefix = "S" if kind == "storm" else "R"
    rows = catalog[(catalog["img_type"] == "vil") & catalog["id"].str.startswith(prefix)]
    rows = rows.drop_duplicates(subset=["id"])
    hits = np.zeros(len(thresholds), dtype=np.int64)
    total = 0
    for event_id, file_name, file_index in zip(
        rows["id"], rows["file_name"], rows["file_index"], strict=True
    ):
        vil = hdf5.read_raster_event(
            raw_path(root, str(file_name)), "vil", int(file_index), str(event_id)
        )
        valid = vil[vil != VIL_MISSING]
        total += valid.size
        counts = np.bincount(valid.ravel(), minlength=256)
        cumulative = counts[::-1].cumsum()[::-1]  # cumulative[v] = pixels >= v
        hits += np.array([cumulative[t] for t in thresholds])
    if total == 0:
        raise StormFusionError(f"{root}: no {kind} VIL pixels to count")
    return {int(t): float(h) / total for t, h in zip(thresholds, hits, strict=True)}


__all__ = [
    "MANIFEST_NAME",
    "SynthesisParams",
    "lightning_file_name",
    "random_file_name",
    "storm_file_name",
    "synthesize_archive",
    "vil_threshold_fractions",
]
