"""Convert one SEVIR modality from the raw HDF5 files to a chunked, compressed Zarr store.

The raw files are time-last (N, H, W, 49) arrays of several GB; training reads one window
(12 to 25 frames) of one event at a time. The store turns that into a few contiguous
chunk reads: one variable named after the modality, dims ``(event, time, y, x)`` in
event-index order, dtype as stored in SEVIR (uint8 VIL, int16 IR, int32 lightning counts
gridded on the native 48 x 48 grid with the official binning), rows south to north.

Layout (chosen by ``benchmarks/bench_archive.py``, recorded in ``docs/benchmarks.md``): one
event per chunk along ``event``, :data:`DEFAULT_LAYOUT` frames per chunk along ``time``, a
whole frame per chunk in y and x, Blosc-LZ4 compression (byte shuffle).

Writing goes through xarray (zarr v3, no consolidated metadata: open with
``xr.open_zarr(path, consolidated=False)``) with dask, one task per event, into a temporary
store that is renamed when complete and verified against the source before that; temporaries
left by a killed earlier run are removed first. Raw files are read only inside the data
root: a path that resolves (through a symbolic link) outside it is refused.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import cv2
import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
import zarr
from dask.callbacks import Callback
from dask.delayed import Delayed
from dask.utils import key_split
from tqdm import tqdm
from zarr.abc.codec import BytesBytesCodec
from zarr.codecs import BloscCodec, ZstdCodec

from stormfusion import __version__
from stormfusion.data.event_index import (
    EventSource,
    event_sources,
    raw_file,
    read_event_index,
    read_event_meta,
)
from stormfusion.data.hdf5 import grid_lightning, read_lightning_event, read_raster_event
from stormfusion.data.sevir import (
    FRAME_MINUTES,
    MISSING_VALUES,
    MODALITIES,
    N_FRAMES,
    NOMINAL_OFFSETS,
    PATCH_METRES,
    PROJ,
)
from stormfusion.errors import StormFusionError
from stormfusion.io import atomic_path
from stormfusion.provenance import git_commit
from stormfusion.registry import Registry

logger = logging.getLogger(__name__)

#: Catalog columns giving each patch's corners (degrees).
BOUNDS_COLUMNS: Final = ("llcrnrlat", "llcrnrlon", "urcrnrlat", "urcrnrlon")
#: Version of the store layout; bumped when a reader must change.
STORE_FORMAT: Final = 2  # 2: every chunk is written, even all fill (a missing one is damage)

#: Compression pipelines a store may use (bytes -> bytes codecs after serialisation).
COMPRESSORS: Registry[Callable[[], list[BytesBytesCodec]]] = Registry("compressor")


@COMPRESSORS.register("none")
def _no_compression() -> list[BytesBytesCodec]:
    return []


@COMPRESSORS.register("zstd1")
def _zstd1() -> list[BytesBytesCodec]:
    return [ZstdCodec(level=1)]


@COMPRESSORS.register("zstd3")
def _zstd3() -> list[BytesBytesCodec]:
    return [ZstdCodec(level=3)]


@COMPRESSORS.register("blosc-lz4")
def _blosc_lz4() -> list[BytesBytesCodec]:
    return [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")]


@COMPRESSORS.register("blosc-zstd1")
def _blosc_zstd1() -> list[BytesBytesCodec]:
    return [BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")]


@dataclass(frozen=True)
class StoreLayout:
    """How a store is chunked and compressed.

    Attributes:
        time_chunk: frames per chunk (one event and a whole frame per chunk otherwise).
        compressor: a name in :data:`COMPRESSORS`.
        shard: store each event as one zarr v3 shard holding its time chunks (one file
            per event instead of one per chunk; partial reads stay possible).
    """

    time_chunk: int
    compressor: str
    shard: bool = False

    def encoding(self, size: int) -> dict[str, Any]:
        """xarray/zarr encoding of the data variable for a ``size`` x ``size`` grid."""
        if not 1 <= self.time_chunk <= N_FRAMES:
            raise StormFusionError(f"time chunk must be 1..{N_FRAMES}, got {self.time_chunk}")
        enc: dict[str, Any] = {
            "chunks": (1, self.time_chunk, size, size),
            "compressors": COMPRESSORS.get(self.compressor)(),
        }
        if self.shard:
            # a shard holds whole chunks: the event's frames rounded up to the chunk
            frames = -(-N_FRAMES // self.time_chunk) * self.time_chunk
            enc["shards"] = (1, frames, size, size)
        return enc

    def describe(self) -> str:
        sharding = ", one shard per event" if self.shard else ""
        return f"chunks (1, {self.time_chunk}, y, x), {self.compressor}{sharding}"


#: The layout chosen by benchmarks/bench_archive.py (see docs/benchmarks.md).
DEFAULT_LAYOUT: Final = StoreLayout(time_chunk=7, compressor="blosc-lz4")


@dataclass(frozen=True)
class ConversionSummary:
    """What one conversion wrote."""

    store: Path
    modality: str
    events: int
    bytes_read: int  # uncompressed bytes of the converted frames
    seconds: float
    verified: tuple[str, ...]


# ----------------------------------------------------------------------------- sources


def time_first(frames: np.ndarray) -> np.ndarray:
    """``(H, W, T)`` time-last frames to a contiguous ``(T, H, W)`` array.

    A blocked 2-D transpose of the ``(H * W, T)`` view (OpenCV), about four times faster
    than numpy's strided copy for SEVIR's shapes; numpy for dtypes OpenCV lacks.
    """
    h, w, t = frames.shape
    if frames.dtype in (np.uint8, np.int16, np.int32, np.float32):
        flat = np.ascontiguousarray(frames).reshape(h * w, t)
        return np.asarray(cv2.transpose(flat)).reshape(t, h, w)
    return np.ascontiguousarray(np.moveaxis(frames, -1, 0))


def read_event_frames(data_root: Path, modality: str, source: EventSource) -> np.ndarray:
    """One event's 49 frames from the raw archive, as the store holds them.

    Args:
        data_root: the raw archive root (the catalog's ``data/`` paths are below it).
        modality: ``vil``, ``ir069``, ``ir107`` or ``lght``.
        source: the event's file, index and native size.

    Returns:
        ``(49, size, size)`` array, time first, rows south to north, dtype of the store
        (uint8 VIL, int16 IR, int32 lightning counts).

    Raises:
        StormFusionError: naming the file and the event, for unreadable or wrong data.
    """
    spec = MODALITIES[modality]
    try:
        path = raw_file(data_root, source.file)
        if spec.raster:
            raw = read_raster_event(path, modality, source.index, expected_id=source.event_id)
            if raw.shape[:2] != (source.size, source.size):
                raise StormFusionError(
                    f"{path}: frames of shape {raw.shape[:2]}, the index says "
                    f"{source.size} x {source.size}"
                )
            frames = time_first(raw)
        else:
            flashes = read_lightning_event(path, source.event_id)
            frames = time_first(grid_lightning(flashes, source.size))
    except StormFusionError as exc:
        message = str(exc)
        if source.event_id not in message:
            message = f"event {source.event_id}: {message}"
        raise StormFusionError(f"{modality} {message}") from None
    return frames.astype(spec.dtype, copy=False)


def _read_block(data_root: Path, modality: str, source: EventSource) -> np.ndarray:
    """One event as a dask block of the store: ``(1, 49, size, size)``."""
    return read_event_frames(data_root, modality, source)[None]


def _missing_count(modality: str, block: np.ndarray) -> np.ndarray:
    return np.array([np.count_nonzero(block == MISSING_VALUES[modality])], dtype=np.int64)


def _check_inside(data_root: Path, path: Path) -> None:
    """Refuse a raw file that resolves (through symbolic links) outside the data root."""
    root, target = data_root.resolve(), path.resolve()
    if not target.is_relative_to(root):
        raise StormFusionError(
            f"{path}: resolves to {target}, outside the data root {root} "
            "(a symbolic link leaving the archive is not followed)"
        )


def _check_files(data_root: Path, sources: Sequence[EventSource], events_csv: Path) -> None:
    """Every raw file of ``sources`` exists and lies inside ``data_root`` once resolved."""
    missing: dict[str, int] = {}
    for file in sorted({s.file for s in sources}):
        _check_inside(data_root, raw_file(data_root, file))
    for s in sources:
        if not raw_file(data_root, s.file).is_file():
            missing[s.file] = missing.get(s.file, 0) + 1
    if missing:
        listed = ", ".join(f"{f} ({n} events)" for f, n in sorted(missing.items())[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise StormFusionError(
            f"{events_csv}: names file(s) missing under {data_root}: {listed}{more}"
        )


def _bounds(
    frame: pd.DataFrame, sources: Sequence[EventSource], modality: str, data_root: Path
) -> dict[str, np.ndarray]:
    """Patch corners per event: from the index if it has them, else from the catalog."""
    ids = [s.event_id for s in sources]
    if all(c in frame.columns for c in BOUNDS_COLUMNS):
        table = frame.set_index("id").loc[ids, list(BOUNDS_COLUMNS)]
        return {c: table[c].to_numpy(dtype=np.float64) for c in BOUNDS_COLUMNS}
    catalog = data_root / "CATALOG.csv"
    nan = {c: np.full(len(ids), np.nan) for c in BOUNDS_COLUMNS}
    if not catalog.is_file():
        logger.warning("%s not found: patch bounds are stored as NaN", catalog)
        return nan
    cat = pd.read_csv(catalog, usecols=["id", "img_type", *BOUNDS_COLUMNS], dtype={"id": str})
    cat = cat[cat["img_type"] == modality].drop_duplicates("id").set_index("id")
    found = cat.reindex(ids)
    if found[list(BOUNDS_COLUMNS)].isna().any(axis=None):
        logger.warning("%s lacks bounds for some %s events: stored as NaN", catalog, modality)
    return {c: found[c].to_numpy(dtype=np.float64) for c in BOUNDS_COLUMNS}


# ----------------------------------------------------------------------------- dataset


def _variable_attrs(modality: str) -> dict[str, Any]:
    spec = MODALITIES[modality]
    attrs: dict[str, Any] = {"long_name": spec.long_name, "units": spec.units}
    if spec.scale_factor != 1.0:
        attrs["scale_factor"] = np.float32(spec.scale_factor)  # CF: physical = stored * it
    if modality in MISSING_VALUES:
        attrs["missing_value"] = np.asarray(MISSING_VALUES[modality], dtype=spec.dtype)
    if modality == "vil":
        attrs["valid_range"] = np.array([0, 254], dtype=spec.dtype)
        attrs["comment"] = (
            "digital VIL; kg m-2 = 0 if X <= 5, (X - 2) / 90.66 if 5 < X <= 18, "
            "exp((X - 83.9) / 38.9) if X > 18; 255 = missing"
        )
    if not spec.raster:
        attrs["comment"] = (
            "GLM flashes counted per (frame, y, x) with SEVIR's binning: frame k counts "
            "-120 + 5k <= t < -115 + 5k minutes, frame 0 also earlier flashes, "
            "frame 48 t >= +120 min"
        )
    return attrs


def _axis(size: int, name: str) -> xr.Variable:
    spacing = PATCH_METRES / size
    values = (np.arange(size, dtype=np.float64) + 0.5) * spacing
    long = "northward" if name == "y" else "eastward"
    return xr.Variable(
        name,
        values,
        {
            "units": "m",
            "long_name": f"{long} distance of pixel centres from the patch's south-west corner",
            "axis": name.upper(),
            "comment": "patches are square in the projection given by the 'projection' "
            "attribute; their corners per event are the ll/ur coordinates",
        },
    )


def _event_reads(data_root: Path, modality: str, sources: Sequence[EventSource]) -> list[Delayed]:
    """One lazy read task per event, each yielding a ``(1, 49, size, size)`` block."""
    return [dask.delayed(_read_block, pure=True)(data_root, modality, s) for s in sources]


def _event_coords(
    sources: Sequence[EventSource], time_utc: Sequence[Any], size: int
) -> dict[str, Any]:
    """Coordinates of the grid (time offsets in minutes, y/x in m) and per-event sources."""
    return {
        "event": xr.Variable(
            "event",
            np.array([s.event_id for s in sources], dtype=object),
            {"long_name": "SEVIR event id (catalog column id)"},
        ),
        "time": xr.Variable(
            "time",
            np.array(NOMINAL_OFFSETS, dtype=np.int16),
            {"units": "minutes", "long_name": "nominal frame offset from time_utc"},
        ),
        "y": _axis(size, "y"),
        "x": _axis(size, "x"),
        "time_utc": xr.Variable(
            "event",
            pd.to_datetime(pd.Series(list(time_utc))).to_numpy("datetime64[ns]"),
            {"long_name": "event reference time (about the middle frame), UTC"},
        ),
        "source_file": xr.Variable(
            "event",
            np.array([s.file for s in sources], dtype=object),
            {"long_name": "HDF5 file (catalog file_name, relative to the archive's data/)"},
        ),
        "source_index": xr.Variable(
            "event",
            np.array([s.index for s in sources], dtype=np.int64),
            {"long_name": "position along axis 0 of source_file (-1: keyed by event id)"},
        ),
    }


def _bounds_coords(bounds: dict[str, np.ndarray]) -> dict[str, xr.Variable]:
    """Per-event patch corner coordinates (degrees), one per :data:`BOUNDS_COLUMNS`."""
    coords: dict[str, xr.Variable] = {}
    for col in BOUNDS_COLUMNS:
        kind = "latitude" if col.endswith("lat") else "longitude"
        corner = "lower-left" if col.startswith("ll") else "upper-right"
        coords[col] = xr.Variable(
            "event",
            bounds[col],
            {
                "units": "degrees_north" if kind == "latitude" else "degrees_east",
                "long_name": f"{kind} of the patch's {corner} corner",
            },
        )
    return coords


def _missing_coord(modality: str, reads: Sequence[Delayed]) -> xr.Variable:
    """Per-event count (lazy, int64) of pixels equal to the modality's missing value."""
    counts = da.concatenate(
        [
            da.from_delayed(
                dask.delayed(_missing_count, pure=True)(modality, r), shape=(1,), dtype=np.int64
            )
            for r in reads
        ]
    ).rechunk(-1)
    return xr.Variable(
        "event",
        counts,
        {
            "long_name": f"pixels equal to the missing value {MISSING_VALUES[modality]} "
            "over the event's 49 frames"
        },
    )


def _dataset_attrs(modality: str, size: int, data_fingerprint: str) -> dict[str, Any]:
    """Global attributes of the store: provenance, projection and grid (m, minutes)."""
    return {
        "title": f"SEVIR {modality} frames for the StormFusion-SEVIR study",
        "Conventions": "CF-1.8",
        "source": "SEVIR (Veillette, Samsi and Mattioli, NeurIPS 2020), s3://sevir",
        "modality": modality,
        "projection": PROJ,
        "patch_extent_m": PATCH_METRES,
        "grid_spacing_m": PATCH_METRES / size,
        "frame_minutes": FRAME_MINUTES,
        "rows": "row 0 is the south edge (plot with origin='lower')",
        "data_fingerprint": data_fingerprint,
        "store_format": STORE_FORMAT,
        "package_version": __version__,
        "git_commit": git_commit(),
    }


def build_dataset(
    data_root: Path,
    modality: str,
    sources: Sequence[EventSource],
    time_utc: Sequence[Any],
    bounds: dict[str, np.ndarray],
    data_fingerprint: str,
) -> xr.Dataset:
    """The lazy (dask) dataset of one modality: one read task per event."""
    spec = MODALITIES[modality]
    size = sources[0].size
    shape = (1, N_FRAMES, size, size)
    reads = _event_reads(data_root, modality, sources)
    data = da.concatenate(
        [da.from_delayed(r, shape=shape, dtype=spec.dtype) for r in reads], axis=0
    )
    coords = _event_coords(sources, time_utc, size)
    coords.update(_bounds_coords(bounds))
    if modality in MISSING_VALUES:
        coords["missing_pixels"] = _missing_coord(modality, reads)
    return xr.Dataset(
        {modality: xr.Variable(("event", "time", "y", "x"), data, _variable_attrs(modality))},
        coords=coords,
        attrs=_dataset_attrs(modality, size, data_fingerprint),
    )


# ----------------------------------------------------------------------------- verify


def verify_store(
    store: Path, data_root: Path, modality: str, sources: Sequence[EventSource], n: int
) -> tuple[str, ...]:
    """Compare ``n`` events spread over the store (first and last included) with the source.

    Returns:
        The ids of the events compared.

    Raises:
        StormFusionError: an event's frames differ from its source.
    """
    if n <= 0:
        return ()
    arr = zarr.open_array(store / modality, mode="r")
    picks = np.unique(np.linspace(0, len(sources) - 1, min(n, len(sources))).round().astype(int))
    for i in picks:
        source = sources[int(i)]
        expected = read_event_frames(data_root, modality, source)
        stored = np.asarray(arr[int(i)])
        if stored.dtype != expected.dtype or not np.array_equal(stored, expected):
            raise StormFusionError(
                f"verification failed: {modality} event {source.event_id} in the new store "
                f"differs from {raw_file(data_root, source.file)}"
            )
    verified = tuple(sources[int(i)].event_id for i in picks)
    logger.info(
        "verified %d %s events against the source: %s", len(verified), modality, ", ".join(verified)
    )
    return verified


# ----------------------------------------------------------------------------- convert


def _compute(graph: Any, workers: int) -> None:
    """Run a dask graph on a thread pool of its own, drained before returning or raising:
    after an error, Ctrl-C or SIGTERM no worker writes into the store being removed."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="convert")
    try:
        dask.compute(graph, scheduler="threads", pool=pool)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class _EventProgress(Callback):
    """A tqdm bar (stderr) over the events read while dask writes the store."""

    def __init__(self, events: int, modality: str) -> None:
        super().__init__()
        self._bar = tqdm(
            total=events, unit="event", desc=f"convert {modality}", mininterval=5.0, delay=2.0
        )

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if key_split(key) == _read_block.__name__:
            self._bar.update(1)

    def __exit__(self, *args: object) -> None:
        super().__exit__(*args)
        self._bar.close()


def _check_request(modality: str, workers: int) -> None:
    """Refuse a modality that has no store (unknown, or ``vis``) or fewer than one worker."""
    if modality not in MODALITIES or modality == "vis":
        valid = ", ".join(m for m in MODALITIES if m != "vis")
        raise StormFusionError(f"cannot convert modality {modality!r}; valid: {valid}")
    if workers < 1:
        raise StormFusionError(f"--workers must be >= 1, got {workers}")


def _load_sources(
    events_path: Path, root: Path, modality: str
) -> tuple[pd.DataFrame, dict[str, Any], list[EventSource]]:
    """The event index, its ``events.json`` and the events with ``modality`` (one size).

    Raises:
        StormFusionError: no event has the modality, sizes differ, or raw files are
            missing or outside ``root``.
    """
    frame = read_event_index(events_path)
    meta = read_event_meta(events_path)
    sources = event_sources(frame, modality, events_path)
    if not sources:
        raise StormFusionError(f"{events_path}: no event has a {modality} file")
    sizes = sorted({s.size for s in sources})
    if len(sizes) > 1:
        raise StormFusionError(f"{events_path}: {modality}_size takes several values {sizes}")
    _check_files(root, sources, events_path)
    return frame, meta, sources


def _modality_dataset(
    root: Path,
    modality: str,
    frame: pd.DataFrame,
    meta: dict[str, Any],
    sources: Sequence[EventSource],
    layout: StoreLayout,
) -> xr.Dataset:
    """:func:`build_dataset` for ``sources`` with times and bounds from the index."""
    times = frame.set_index("id").loc[[s.event_id for s in sources], "time_utc"]
    ds = build_dataset(
        root,
        modality,
        sources,
        list(times),
        _bounds(frame, sources, modality, root),
        str(meta["data_fingerprint"]),
    )
    ds.attrs["chunking"] = layout.describe()
    return ds


def _write_store(
    ds: xr.Dataset,
    modality: str,
    final: Path,
    root: Path,
    sources: Sequence[EventSource],
    layout: StoreLayout,
    workers: int,
    verify_events: int,
) -> tuple[tuple[str, ...], float]:
    """Write ``ds`` to a temporary store, verify it and rename it to ``final``.

    Returns:
        The ids of the verified events and the seconds taken (writing and verifying).
    """
    size = sources[0].size  # one size for all, checked by _load_sources
    encoding = {modality: layout.encoding(size)}
    start = time.perf_counter()
    logger.info(
        "converting %d %s events (%d x %d, %s) with %d worker(s) into %s",
        len(sources),
        modality,
        size,
        size,
        layout.describe(),
        workers,
        final,
    )
    with atomic_path(final) as tmp, _EventProgress(len(sources), modality):
        write = ds.to_zarr(
            tmp,
            mode="w",
            zarr_format=3,
            consolidated=False,
            compute=False,
            encoding=encoding,
            write_empty_chunks=True,
        )
        _compute(write, workers)
        verified = verify_store(tmp, root, modality, sources, verify_events)
    return verified, time.perf_counter() - start


def convert_modality(
    events_csv: str | os.PathLike[str],
    data_root: str | os.PathLike[str],
    modality: str,
    out: str | os.PathLike[str],
    *,
    verify_events: int = 3,
    workers: int = 1,
    layout: StoreLayout = DEFAULT_LAYOUT,
) -> ConversionSummary:
    """Convert the events of ``events_csv`` that have ``modality`` into the store ``out``.

    Args:
        events_csv: the event index (``events.json`` beside it gives the fingerprint).
        data_root: the raw archive root.
        modality: ``vil``, ``ir069``, ``ir107`` or ``lght``.
        out: the store to (re)write; replaced whole, only once complete and verified.
        verify_events: events compared with the source after writing (0: none).
        workers: threads reading, compressing and writing in parallel.
        layout: chunking and compression.

    Raises:
        StormFusionError: bad index, a missing, corrupt or truncated file (naming file and
            event), or a failed verification; no store is left behind.
    """
    events_path, root, final = Path(events_csv), Path(data_root), Path(out)
    _check_request(modality, workers)
    frame, meta, sources = _load_sources(events_path, root, modality)
    ds = _modality_dataset(root, modality, frame, meta, sources, layout)
    verified, seconds = _write_store(
        ds, modality, final, root, sources, layout, workers, verify_events
    )
    nbytes = int(ds[modality].nbytes)
    logger.info(
        "wrote %s: %d events, %.1f MB in %.1f s (%.1f MB/s)",
        final,
        len(sources),
        nbytes / 1e6,
        seconds,
        nbytes / 1e6 / max(seconds, 1e-9),
    )
    return ConversionSummary(final, modality, len(sources), nbytes, seconds, verified)


def open_archive(path: str | os.PathLike[str]) -> xr.Dataset:
    """Open a store written by :func:`convert_modality` with xarray (lazily, decoded).

    IR comes back in degrees C (``scale_factor``), VIL's 255 as NaN (``missing_value``);
    pass the store to ``xr.open_zarr(path, consolidated=False, mask_and_scale=False)`` for
    the stored integers.
    """
    p = Path(path)
    if not p.is_dir():
        raise StormFusionError(f"{p}: zarr store not found")
    return xr.open_zarr(p, consolidated=False)
