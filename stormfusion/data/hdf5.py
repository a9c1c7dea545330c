"""Read (and, for the synthetic twin and tests, write) SEVIR's raw HDF5 files.

Raster files (vil, ir069, ir107, vis) hold a dataset ``id`` of byte strings, shape (N,),
and a dataset named after the type, shape (N, H, W, 49): time is the last axis and row 0
is the south edge. Lightning files hold one dataset per event, keyed by the event id, of
shape (n_flashes, 5) with columns ``[t, lat, lon, x, y]`` (t in seconds from ``time_utc``,
x and y in pixels of the 48 x 48 grid).

Real files and the synthetic twin go through exactly these functions.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np

from stormfusion.data.sevir import FRAME_MINUTES, MODALITIES, N_FRAMES
from stormfusion.errors import StormFusionError
from stormfusion.io import atomic_path

logger = logging.getLogger(__name__)

#: Size of the native lightning grid (8 km pixels).
LIGHTNING_GRID: int = MODALITIES["lght"].size
#: Frame edges in seconds, T_k = (-120 + 5 k) minutes, k = 0..48 (the official binning).
LIGHTNING_FRAME_EDGES_S: np.ndarray = np.arange(-120, 121, FRAME_MINUTES, dtype=np.float64) * 60.0


def _open(path: Path) -> h5py.File:
    if not path.is_file():
        raise StormFusionError(f"{path}: HDF5 file not found")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise StormFusionError(
            f"{path}: not a readable HDF5 file (truncated or corrupt?): {exc}"
        ) from None


def _decode_id(raw: bytes | str) -> str:
    return raw.decode("ascii") if isinstance(raw, bytes) else str(raw)


def read_ids(path: str | os.PathLike[str]) -> list[str]:
    """The event ids of a raster file, in file order (decoded from byte strings)."""
    p = Path(path)
    with _open(p) as f:
        if "id" not in f:
            raise StormFusionError(f"{p}: no 'id' dataset (is this a lightning file?)")
        try:
            return [_decode_id(x) for x in f["id"][()]]
        except OSError as exc:
            raise StormFusionError(f"{p}: cannot read dataset 'id': {exc}") from None


def read_raster_event(
    path: str | os.PathLike[str],
    img_type: str,
    index: int,
    expected_id: str | None = None,
    frames: slice | None = None,
) -> np.ndarray:
    """One event's frames from a raster file, as stored: shape (H, W, T), time last.

    Args:
        path: the HDF5 file.
        img_type: ``vil``, ``ir069``, ``ir107`` or ``vis`` (the dataset name).
        index: the event's position along axis 0 (the catalog's ``file_index``).
        expected_id: if given, the ``id`` at ``index`` must equal it.
        frames: optional slice along the time axis (default: all 49 frames).

    Returns:
        The stored array (uint8 VIL, int16 IR/VIS), rows south to north.
    """
    p = Path(path)
    spec = MODALITIES.get(img_type)
    if spec is None or not spec.raster:
        raise StormFusionError(f"{img_type!r} is not a raster SEVIR image type")
    with _open(p) as f:
        if img_type not in f:
            raise StormFusionError(f"{p}: no dataset {img_type!r}; found {sorted(f.keys())}")
        dset = f[img_type]
        if dset.ndim != 4 or dset.shape[3] != N_FRAMES:
            raise StormFusionError(
                f"{p}: dataset {img_type!r} has shape {dset.shape}, expected (N, H, W, {N_FRAMES})"
            )
        if dset.dtype != np.dtype(spec.dtype):
            raise StormFusionError(
                f"{p}: dataset {img_type!r} has dtype {dset.dtype}, expected {np.dtype(spec.dtype)}"
            )
        if not 0 <= index < dset.shape[0]:
            raise StormFusionError(
                f"{p}: event index {index} out of range for {dset.shape[0]} events"
            )
        what = f"event {expected_id or ''} at index {index}".replace("  ", " ")
        if expected_id is not None and "id" not in f:
            raise StormFusionError(
                f"{p}: no 'id' dataset, so {what} cannot be checked (not a SEVIR raster file?)"
            )
        try:
            if expected_id is not None:
                found = _decode_id(f["id"][index])
                if found != expected_id:
                    raise StormFusionError(
                        f"{p}: index {index} holds event {found!r}, expected {expected_id!r}"
                    )
            data = dset[index, :, :, frames if frames is not None else slice(None)]
        except OSError as exc:
            raise StormFusionError(f"{p}: cannot read {what}: {exc} (truncated file?)") from None
    return np.asarray(data)


def read_lightning_event(path: str | os.PathLike[str], event_id: str) -> np.ndarray:
    """The flashes of one event: shape (n_flashes, 5), columns [t, lat, lon, x, y].

    Flashes with a NaN or infinite time or x/y position are dropped, and their number is
    logged as a warning naming the file and the event (a NaN time cannot be binned: SEVIR's
    own code would count it in the last frame).
    """
    p = Path(path)
    with _open(p) as f:
        if event_id not in f:
            raise StormFusionError(f"{p}: no lightning dataset for event {event_id!r}")
        try:
            data = np.asarray(f[event_id][()], dtype=np.float64)
        except OSError as exc:
            raise StormFusionError(
                f"{p}: cannot read lightning of event {event_id!r}: {exc} (truncated file?)"
            ) from None
    if data.ndim != 2 or data.shape[1] != 5:
        if data.size == 0:
            return np.zeros((0, 5), dtype=np.float64)
        raise StormFusionError(
            f"{p}: lightning of event {event_id!r} has shape {data.shape}, expected (n, 5)"
        )
    unusable = ~np.isfinite(data[:, [0, 3, 4]]).all(axis=1)
    if unusable.any():
        logger.warning(
            "%s: dropped %d of %d flashes of event %s with a NaN or infinite time or position",
            p,
            int(unusable.sum()),
            len(data),
            event_id,
        )
        data = data[~unusable]
    return data


def grid_lightning(flashes: np.ndarray, size: int = LIGHTNING_GRID) -> np.ndarray:
    """Count flashes per (y, x, frame) exactly as SEVIR's reference code does.

    Flashes outside ``0 <= x < size``, ``0 <= y < size`` are dropped, and so are flashes
    with a NaN or infinite time or position (:func:`read_lightning_event` counts those in
    the log): SEVIR's binning would put a NaN time in frame 48. The frame of a flash
    is ``digitize(t, T) - 1`` with edges ``T_k = (-120 + 5 k)`` minutes, and -1 (earlier
    than -120 min) mapped to 0: frame k counts ``T_k <= t < T_{k+1}``, frame 48 counts
    ``t >= +120`` min and frame 0 also takes flashes before -120 min.

    Returns:
        int32 array of shape (size, size, 49), rows south to north like the rasters.
    """
    counts = np.zeros((size, size, N_FRAMES), dtype=np.int32)
    if flashes.shape[0] == 0:
        return counts
    t, x, y = flashes[:, 0], flashes[:, 3], flashes[:, 4]
    inside = np.isfinite(t) & (x >= 0) & (x < size) & (y >= 0) & (y < size)
    t, x, y = t[inside], x[inside].astype(np.int64), y[inside].astype(np.int64)
    frame = np.digitize(t, LIGHTNING_FRAME_EDGES_S) - 1
    frame[frame == -1] = 0
    flat = np.ravel_multi_index((y, x, frame), counts.shape)
    counts.reshape(-1)[:] = np.bincount(flat, minlength=counts.size)
    return counts


def write_raster_file(
    path: str | os.PathLike[str], img_type: str, ids: Sequence[str], data: np.ndarray
) -> None:
    """Write a raster file in SEVIR's layout (atomically): ``id`` and ``img_type`` datasets,
    the image stored contiguously without filters, as in the bucket (one event is one byte
    range, which the events-only download relies on)."""
    spec = MODALITIES[img_type]
    if data.ndim != 4 or data.shape[0] != len(ids) or data.shape[3] != N_FRAMES:
        raise ValueError(f"data of shape {data.shape} does not fit {len(ids)} events x 49 frames")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("id", data=np.array([i.encode("ascii") for i in ids], dtype="S"))
        f.create_dataset(img_type, data=data.astype(spec.dtype, copy=False))


def write_lightning_file(path: str | os.PathLike[str], flashes: Mapping[str, np.ndarray]) -> None:
    """Write a lightning file in SEVIR's layout (atomically): one (n, 5) dataset per event."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for event_id, arr in flashes.items():
            arr = np.asarray(arr, dtype=np.float32).reshape(-1, 5)
            f.create_dataset(event_id, data=arr)
