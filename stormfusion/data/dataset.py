"""The multimodal training loader: windows of the Zarr archive as PyTorch samples.

Each item of :class:`SevirWindowDataset` is one training window (by default one row of the
windows table, in table order; see *window sampling*):

- ``inputs``: ``{modality: (T_in, n_m, n_m)}`` for the requested modalities, frames
  ``[start, start + T_in)`` in the archive's stored units at each modality's own
  resolution (native-resolution batch contract, :mod:`stormfusion.models.base`): with
  ``image_size`` S, VIL S x S uint8, IR S/2 x S/2 int16, lightning S/8 x S/8 int32 flash
  counts. Models normalise and regrid on their device
  (:meth:`stormfusion.models.base.ForecastModel.prepare_inputs`), so the loader moves 4x
  fewer bytes than float32 and never interpolates IR or lightning up to S;
- ``mask``: float32 ``(4,)`` in ``STUDY_MODALITIES`` order, 1 where the modality is
  requested and present for the event, 0 otherwise;
- ``target``: ``(T_out, S, S)`` VIL frames ``[start + T_in, start + T_in + T_out)`` on the
  0..255 scale, stored uint8 (missing read as 0); the trainer makes it float32 on its
  device, scoring in float64;
- ``event_id``: str, ``window_start``: int.

A store whose grid is not the modality's grid at S (a store of 384-pixel VIL read at
S = 64, say) is regridded on the CPU with :mod:`stormfusion.data.regrid` (continuous fields
bilinear up / area-averaged down, lightning count-preserving) and then arrives (inputs
and target) as float32 stored units.

Missing VIL (digital value 255, :data:`stormfusion.data.sevir.MISSING_VALUES`): read as 0
(no echo) in inputs and in targets alike, before any regridding, so that no 255 leaks into
averages or scores. The VIL store counts such pixels per event (``missing_pixels``); the
dataset logs how many of its events have any.

A missing modality (the event index had no file for it, so its store lacks the event)
gives zeros and ``mask`` 0; the dataset logs the counts per modality when it is built. A
store whose shape or dtype does not fit the archive's contract, or that was built from
another event index than the VIL store, is an error.

Lightning frames (``lightning_frames``): ``official`` reads the store's frames as SEVIR
grids them (frame k holds [T_k, T_k + 5 min), flashes after the frame's time);
``causal`` gives frame k the 5 minutes before T_k, [T_k - 5 min, T_k), which is the
official frame k - 1 (zeros at k = 0), so no input holds a flash later than the last
input time.

Window sampling (``window_sampling``): ``fixed`` yields the windows of the table;
``random`` yields one window per event (the events of the table, in order): in the
``train`` split with a start drawn uniformly among the event's possible starts
(0 .. 49 - T_in - T_out): ``numpy.random.default_rng((seed, epoch, 1)).integers(0, last + 1,
n_events)[event number]``, so deterministic from (seed, epoch, event); in any other split
the window starting at frame 0 (as the seed study validated).

Augmentation (``augment=True``): one of the 8 symmetries of the square (rotations by
multiples of 90 degrees, optionally followed by a left-right flip), the same for every
modality (each at its own resolution) and the target of an item, drawn from
``numpy.random.default_rng((seed, epoch, 0)).integers(0, 8, n_items)[index]`` (quarter
turns = draw % 4, flip = draw >= 4): reproducible, different per epoch
(call :meth:`SevirWindowDataset.set_epoch` before each epoch; with
``persistent_workers=True`` the workers keep the epoch they started with).

DataLoader workers: stores are opened lazily in each process on first use, never pickled.
Windows are read chunk file by chunk file (:class:`stormfusion.data.chunks.WindowReader`).
The batched fetch writes each batch into a reused slot (:mod:`stormfusion.data.batch_slots`):
private memory in the main process; inside a worker, shared memory that the main process
maps without a copy and hands back when its last tensor on it is gone.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np
import pandas as pd
import torch
import zarr
from torch.utils.data import Dataset, default_collate

from stormfusion.data.batch_slots import allocate
from stormfusion.data.chunks import WindowReader
from stormfusion.data.regrid import native_size, regrid
from stormfusion.data.sevir import (
    MISSING_VALUES,
    MODALITIES,
    N_FRAMES,
    STUDY_MODALITIES,
    VIL_MISSING,
)
from stormfusion.data.splits import SPLITS, check_windows, read_windows
from stormfusion.errors import StormFusionError
from stormfusion.registry import Registry

logger = logging.getLogger(__name__)

#: The modality whose frames are the target.
TARGET_MODALITY = "vil"
#: What the loader reads a stored "missing" value (:data:`MISSING_VALUES`) as.
MISSING_READ_AS: Final = 0

#: Defaults of the loader's named options (the schema documents the same).
DEFAULT_LIGHTNING_FRAMES: Final = "official"
DEFAULT_WINDOW_SAMPLING: Final = "fixed"

#: ``lightning_frames`` -> how many frames the lightning inputs lag the official grid.
LIGHTNING_FRAMES: Registry[int] = Registry("lightning_frames")
LIGHTNING_FRAMES.register("official")(0)
LIGHTNING_FRAMES.register("causal")(1)

#: ``window_sampling`` -> whether a training epoch draws one random window per event.
WINDOW_SAMPLING: Registry[bool] = Registry("window_sampling")
WINDOW_SAMPLING.register("fixed")(False)
WINDOW_SAMPLING.register("random")(True)


@dataclass(frozen=True)
class StoreInfo:
    """What the dataset checked about one store when it was built."""

    modality: str
    path: Path
    events: dict[str, int]  # event id -> row
    size: int  # native pixels per side
    data_fingerprint: str
    missing_pixels: np.ndarray | None  # per row, where the store counts them
    store_format: int  # ALL_CHUNKS_FORMAT and later: every chunk written


def store_path(zarr_dir: str | os.PathLike[str], modality: str) -> Path:
    """Where the store of ``modality`` lives under ``zarr_dir``."""
    return Path(zarr_dir) / f"{modality}.zarr"


def _array(group: zarr.Group, name: str, path: Path) -> zarr.Array:
    node = group[name]
    if not isinstance(node, zarr.Array):
        raise StormFusionError(f"{path}: {name!r} is not an array")
    return node


def inspect_store(zarr_dir: str | os.PathLike[str], modality: str) -> StoreInfo:
    """Open a store's metadata and check it against the archive's contract.

    Raises:
        StormFusionError: missing store or variable, wrong dims, dtype or shape, or an
            event coordinate that does not match the data.
    """
    path = store_path(zarr_dir, modality)
    if not path.is_dir():
        raise StormFusionError(f"{path}: zarr store for modality {modality!r} not found")
    try:
        group = zarr.open_group(path, mode="r")
    except (FileNotFoundError, ValueError, zarr.errors.NodeTypeValidationError) as exc:
        raise StormFusionError(f"{path}: not a readable zarr store: {exc}") from None
    if modality not in group or "event" not in group:
        raise StormFusionError(f"{path}: no variable {modality!r} or no 'event' coordinate")
    arr = _array(group, modality, path)
    spec = MODALITIES[modality]
    dims = tuple(arr.metadata.dimension_names or ()) if arr.metadata.zarr_format == 3 else ()
    if dims != ("event", "time", "y", "x"):
        raise StormFusionError(
            f"{path}: {modality!r} has dims {dims}, expected (event, time, y, x)"
        )
    if np.dtype(arr.dtype) != np.dtype(spec.dtype):
        raise StormFusionError(
            f"{path}: {modality!r} has dtype {np.dtype(arr.dtype)}, expected {np.dtype(spec.dtype)}"
        )
    events = [str(e) for e in np.asarray(_array(group, "event", path)[:])]
    n, t, h, w = arr.shape
    if n != len(events) or t != N_FRAMES or h != w:
        raise StormFusionError(
            f"{path}: {modality!r} has shape {arr.shape}, expected ({len(events)} events, "
            f"{N_FRAMES}, n, n)"
        )
    missing = None
    if "missing_pixels" in group:
        missing = np.asarray(_array(group, "missing_pixels", path)[:], dtype=np.int64)
    return StoreInfo(
        modality,
        path,
        {e: i for i, e in enumerate(events)},
        int(h),
        str(group.attrs.get("data_fingerprint", "")),
        missing,
        _store_format(group, path),
    )


#: The first store format that writes every chunk (:data:`stormfusion.data.convert.STORE_FORMAT`).
ALL_CHUNKS_FORMAT: Final = 2


def _store_format(group: zarr.Group, path: Path) -> int:
    """The store's format. Older than :data:`ALL_CHUNKS_FORMAT` (or written by other tools)
    it may lack chunks that were all fill value, so a missing chunk file reads as the fill
    value there: logged, since damage then cannot be told from empty data."""
    value = group.attrs.get("store_format", 0)
    fmt = value if isinstance(value, int) else 0
    if fmt < ALL_CHUNKS_FORMAT:
        logger.warning(
            "%s: store_format %s predates format %d, which writes every chunk: a missing "
            "chunk file reads as the fill value (convert the store again to have it refused)",
            path,
            value,
            ALL_CHUNKS_FORMAT,
        )
    return fmt


#: One frame's copy under each symmetry (k quarter turns counter-clockwise, as
#: ``np.rot90`` on (H, W), then a left-right flip if asked) with cv2's blocked kernels.
_SYMMETRY: Final[dict[tuple[int, bool], Callable[[np.ndarray, np.ndarray], object]]] = {
    (0, True): lambda src, dst: cv2.flip(src, 1, dst=dst),
    (1, False): lambda src, dst: cv2.rotate(src, cv2.ROTATE_90_COUNTERCLOCKWISE, dst=dst),
    (1, True): lambda src, dst: cv2.flip(cv2.transpose(src), -1, dst=dst),
    (2, False): lambda src, dst: cv2.rotate(src, cv2.ROTATE_180, dst=dst),
    (2, True): lambda src, dst: cv2.flip(src, 0, dst=dst),
    (3, False): lambda src, dst: cv2.rotate(src, cv2.ROTATE_90_CLOCKWISE, dst=dst),
    (3, True): lambda src, dst: cv2.transpose(src, dst=dst),
}


def _dihedral(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Frames ``(T, H, W)`` rotated by ``k`` quarter turns counter-clockwise (as
    ``np.rot90`` over the last two axes), then flipped left-right if asked.

    One contiguous copy, frame by frame (cv2's blocked transposition is several times
    faster than numpy's strided copy); none for the identity. Dtypes: uint8, int16, int32,
    float32.
    """
    if not k and not flip:
        return x
    copy = _SYMMETRY[(k, flip)]
    out = np.empty_like(x)
    for t in range(x.shape[0]):
        copy(x[t], out[t])
    return out


class SevirWindowDataset(Dataset[dict[str, Any]]):
    """Windows of the Zarr archive as training samples (see the module docstring).

    Args:
        zarr_dir: folder holding ``<modality>.zarr`` stores (always ``vil.zarr``).
        windows: ``windows.csv`` path or its DataFrame.
        split: ``train``, ``val``, ``test``, or None for every window.
        modalities: input modalities (subset of ``STUDY_MODALITIES``); ``()`` for targets
            only (scoring).
        image_size: VIL pixels per side S of the batch (IR S/2, lightning S/8).
        augment: random dihedral symmetries (see the module docstring).
        seed: augmentation and window-sampling seed.
        lightning_frames: ``official`` or ``causal`` (see the module docstring).
        window_sampling: ``fixed`` or ``random`` (see the module docstring).
    """

    def __init__(
        self,
        zarr_dir: str | os.PathLike[str],
        windows: str | os.PathLike[str] | pd.DataFrame,
        split: str | None,
        modalities: Sequence[str] = STUDY_MODALITIES,
        image_size: int = 384,
        augment: bool = False,
        seed: int = 0,
        lightning_frames: str = DEFAULT_LIGHTNING_FRAMES,
        window_sampling: str = DEFAULT_WINDOW_SAMPLING,
    ) -> None:
        self.zarr_dir = Path(zarr_dir)
        self.modalities = tuple(modalities)
        unknown = [m for m in self.modalities if m not in STUDY_MODALITIES]
        if unknown or len(set(self.modalities)) != len(self.modalities):
            raise StormFusionError(
                f"modalities {list(self.modalities)}: each must appear once and be one of "
                f"{', '.join(STUDY_MODALITIES)}"
            )
        if image_size < 1:
            raise StormFusionError(f"image_size must be >= 1, got {image_size}")
        if split is not None and split not in SPLITS:
            raise StormFusionError(f"split {split!r} is none of {', '.join(SPLITS)} (or None)")
        self.image_size = int(image_size)
        self.augment = bool(augment)
        self.seed = int(seed)
        self.split = split
        self.lightning_frames = lightning_frames
        self._lag = LIGHTNING_FRAMES.get(lightning_frames)
        self.window_sampling = window_sampling
        self._random_starts = WINDOW_SAMPLING.get(window_sampling) and split == "train"
        self._epoch = 0
        self._draw_cache: dict[tuple[int, int], np.ndarray] = {}
        table, where = self._read_table(windows)
        if split is not None:
            table = table[table["split"] == split]
        if table.empty:
            raise StormFusionError(f"{where}: no windows in split {split!r}")
        if WINDOW_SAMPLING.get(window_sampling):
            table = table.drop_duplicates("event_id").assign(window_start=0)
        self.windows = table.reset_index(drop=True)
        self._input_frames = self._single(where, "input_frames")
        self._output_frames = self._single(where, "output_frames")
        self._open_stores(where)
        self._event_ids: list[str] = [str(e) for e in self.windows["event_id"]]
        self._starts = self.windows["window_start"].to_numpy(dtype=np.int64)
        self.missing_windows = {m: int((self._rows[m] < 0).sum()) for m in self.modalities}
        self._log_summary(where)
        self._readers: dict[str, WindowReader] | None = None
        self._buffers: dict[str, np.ndarray] | None = None

    # -- construction helpers ---------------------------------------------------------

    @staticmethod
    def _read_table(
        windows: str | os.PathLike[str] | pd.DataFrame,
    ) -> tuple[pd.DataFrame, str]:
        if isinstance(windows, pd.DataFrame):
            return check_windows(windows, "windows table"), "windows table"
        return read_windows(windows), str(windows)

    def _open_stores(self, where: str) -> None:
        """Check the stores and find each window's row in each of them."""
        self.stores = {
            m: inspect_store(self.zarr_dir, m)
            for m in dict.fromkeys((TARGET_MODALITY, *self.modalities))
        }
        self._sizes = {m: native_size(m, self.image_size) for m in self.stores}
        self._check_fingerprints()
        ids = self.windows["event_id"].tolist()
        self._rows = {
            m: np.array([info.events.get(e, -1) for e in ids], dtype=np.int64)
            for m, info in self.stores.items()
        }
        absent = sorted({e for e, r in zip(ids, self._rows[TARGET_MODALITY], strict=True) if r < 0})
        if absent:
            raise StormFusionError(
                f"{self.stores[TARGET_MODALITY].path}: no target frames for {len(absent)} "
                f"event(s) of {where}: {', '.join(absent[:5])}"
            )

    def _single(self, where: str, column: str) -> int:
        values = sorted(self.windows[column].unique().tolist())
        if len(values) != 1:
            raise StormFusionError(
                f"{where}: {column} takes several values {values} in split {self.split!r}"
            )
        return int(values[0])

    def _check_fingerprints(self) -> None:
        target = self.stores[TARGET_MODALITY]
        for info in self.stores.values():
            if info.data_fingerprint != target.data_fingerprint:
                raise StormFusionError(
                    f"{info.path}: data_fingerprint {info.data_fingerprint!r} differs from "
                    f"{target.path}'s {target.data_fingerprint!r} (built from another "
                    "event index: reconvert)"
                )

    def _log_summary(self, where: str) -> None:
        n = len(self.windows)
        events = self.windows["event_id"].nunique()
        logger.info(
            "%s: %d windows of %d events in split %s, %d in / %d out frames, grid %d, "
            "modalities %s",
            where,
            n,
            events,
            self.split,
            self._input_frames,
            self._output_frames,
            self.image_size,
            ", ".join(self.modalities) or "(target only)",
        )
        for m, count in self.missing_windows.items():
            if count:
                lacking = self.windows["event_id"][self._rows[m] < 0].nunique()
                logger.warning(
                    "modality %s missing for %d of %d windows (%d events): zeros, mask 0",
                    m,
                    count,
                    n,
                    lacking,
                )
        counts = self.stores[TARGET_MODALITY].missing_pixels
        if counts is not None:
            rows = np.unique(self._rows[TARGET_MODALITY])
            hit = rows[counts[rows] > 0]
            if hit.size:
                logger.warning(
                    "%d of %d events have missing VIL pixels (value %d, %d in all): read as 0 "
                    "in inputs and targets",
                    hit.size,
                    rows.size,
                    VIL_MISSING,
                    int(counts[hit].sum()),
                )

    # -- public properties --------------------------------------------------------------

    @property
    def input_frames(self) -> int:
        """Input frames per window (T_in)."""
        return self._input_frames

    @property
    def output_frames(self) -> int:
        """Target frames per window (T_out)."""
        return self._output_frames

    @property
    def data_fingerprint(self) -> str:
        """Fingerprint of the event index the stores were built from."""
        return self.stores[TARGET_MODALITY].data_fingerprint

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (call before iterating an epoch)."""
        self._epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.windows)

    # -- reading ------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_readers"] = None  # each worker opens its own handles
        state["_buffers"] = None
        return state

    def _reader(self, modality: str) -> WindowReader:
        if self._readers is None:
            self._readers = {}
        reader = self._readers.get(modality)
        if reader is None:
            info = self.stores[modality]
            array = zarr.open_array(info.path / modality, mode="r")
            events = sorted(info.events, key=info.events.__getitem__)
            all_chunks = info.store_format >= ALL_CHUNKS_FORMAT
            reader = WindowReader(array, events, all_chunks=all_chunks)
            self._readers[modality] = reader
        return reader

    def _scratch(self, modality: str, frames: int) -> np.ndarray:
        """A reused read buffer of ``frames`` stored frames (valid until the next read)."""
        if self._buffers is None:
            self._buffers = {}
        buffer = self._buffers.get(modality)
        if buffer is None or buffer.shape[0] < frames:
            n = self.stores[modality].size
            buffer = np.empty((frames, n, n), dtype=MODALITIES[modality].dtype)
            self._buffers[modality] = buffer
        return buffer[:frames]

    def _raw(self, modality: str, row: int, start: int, stop: int) -> np.ndarray:
        """Stored frames ``[start, stop)`` of one store row (lightning lagged as asked).

        Returns a view of a reused buffer: copy it before the next read of ``modality``.
        """
        lag = self._lag if modality == "lght" else 0
        reader = self._reader(modality)
        if not lag:
            return reader.read(row, start, stop, out=self._scratch(modality, stop - start))
        first = max(start - lag, 0)
        frames = reader.read(row, first, stop - lag)
        if first == start - lag:
            return frames
        out = np.zeros((stop - start, *frames.shape[1:]), dtype=frames.dtype)
        out[stop - start - frames.shape[0] :] = frames  # frames before the event: none
        return out

    def _frames(self, modality: str, row: int, start: int, stop: int) -> np.ndarray:
        """Frames ``[start, stop)`` of one store row on the modality's batch grid.

        Stored units and dtype when the store's grid is the batch's (a view of a reused
        buffer); float32 stored units regridded on the CPU otherwise. Missing values read
        as :data:`MISSING_READ_AS`.
        """
        raw = self._raw(modality, row, start, stop)
        missing = MISSING_VALUES.get(modality)
        counts = self.stores[modality].missing_pixels
        if missing is not None and (counts is None or counts[row] > 0):
            raw[raw == missing] = MISSING_READ_AS  # only events the store counts any in
        size = self._sizes[modality]
        if raw.shape[-1] == size:
            return raw
        frames = torch.from_numpy(raw.astype(np.float32))
        return regrid(modality, frames, size).numpy()

    def _dtype(self, modality: str) -> torch.dtype:
        """The batch dtype of ``modality``: stored, or float32 where the loader regrids."""
        if self.stores[modality].size != self._sizes[modality]:
            return torch.float32
        return torch.from_numpy(np.zeros(0, dtype=MODALITIES[modality].dtype)).dtype

    def augmentation(self, index: int) -> tuple[int, bool]:
        """The (quarter turns, flip) of item ``index`` this epoch; (0, False) without it."""
        if not self.augment:
            return 0, False
        draw = int(self._draws(0, 8)[index])
        return draw % 4, draw >= 4

    def window_start(self, index: int) -> int:
        """First frame of item ``index`` this epoch (random window sampling draws it)."""
        if not self._random_starts:
            return int(self._starts[index])
        last = N_FRAMES - self._input_frames - self._output_frames
        return int(self._draws(1, last + 1)[index])

    def _draws(self, stream: int, high: int) -> np.ndarray:
        """This epoch's draws in [0, high) for every item, one stream per purpose."""
        key = (self._epoch, stream)
        draws = self._draw_cache.get(key)
        if draws is None:
            rng = np.random.default_rng((self.seed, self._epoch, stream))
            draws = rng.integers(0, high, len(self.windows))
            self._draw_cache = {k: v for k, v in self._draw_cache.items() if k[0] == key[0]}
            self._draw_cache[key] = draws
        return draws

    def _fill(self, index: int, inputs: dict[str, np.ndarray], target: np.ndarray) -> int:
        """Write item ``index`` into ``inputs`` (per modality ``(T_in, n_m, n_m)``) and
        ``target`` (``(T_out, S, S)``); returns the window's first frame."""
        start = self.window_start(index)
        t_in, t_out = self._input_frames, self._output_frames
        k, flip = self.augmentation(index)
        vil_row = int(self._rows[TARGET_MODALITY][index])
        vil = self._frames(TARGET_MODALITY, vil_row, start, start + t_in + t_out)
        _dihedral_into(vil[t_in:], k, flip, target)
        for m, out in inputs.items():
            row = int(self._rows[m][index])
            if row < 0:
                out.fill(0)
            elif m == TARGET_MODALITY:
                _dihedral_into(vil[:t_in], k, flip, out)
            else:
                _dihedral_into(self._frames(m, row, start, start + t_in), k, flip, out)
        return start

    def _mask(self, index: int) -> list[float]:
        mask = [0.0] * len(STUDY_MODALITIES)
        for m in self.modalities:
            mask[STUDY_MODALITIES.index(m)] = float(self._rows[m][index] >= 0)
        return mask

    def _specs(self, batch: tuple[int, ...]) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Shape and dtype of the inputs (``inputs/<modality>``) and the target of
        ``batch`` items (``()``: one item, unbatched)."""
        t_in, t_out, s = self._input_frames, self._output_frames, self.image_size
        specs = {
            f"inputs/{m}": ((*batch, t_in, self._sizes[m], self._sizes[m]), self._dtype(m))
            for m in self.modalities
        }
        specs["target"] = ((*batch, t_out, s, s), self._dtype(TARGET_MODALITY))
        return specs

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self.windows):
            raise IndexError(f"window {index} out of range for {len(self.windows)} windows")
        item = {k: torch.empty(shape, dtype=dt) for k, (shape, dt) in self._specs(()).items()}
        inputs = {m: item[f"inputs/{m}"] for m in self.modalities}
        start = self._fill(index, {m: x.numpy() for m, x in inputs.items()}, item["target"].numpy())
        return {
            "inputs": inputs,
            "mask": torch.tensor(self._mask(index), dtype=torch.float32),
            "target": item["target"],
            "event_id": self._event_ids[index],
            "window_start": start,
        }

    def __getitems__(self, indices: Sequence[int]) -> WindowBatch:
        """Items ``indices`` written straight into batch tensors (the DataLoader's batched
        fetch): :func:`collate_windows` returns that batch without copying, any other
        collate function stacks the items (views of it) as usual. The batch lives in a
        reused slot (:mod:`stormfusion.data.batch_slots`): private memory here, shared
        memory that crosses to the main process without a copy inside a DataLoader worker."""
        for index in indices:
            if not 0 <= index < len(self.windows):
                raise IndexError(f"window {index} out of range for {len(self.windows)} windows")
        n = len(indices)
        specs = self._specs((n,))
        specs["mask"] = ((n, len(STUDY_MODALITIES)), torch.float32)
        specs["window_start"] = ((n,), torch.int64)
        tensors, lease = allocate(specs)
        inputs = {m: tensors[f"inputs/{m}"] for m in self.modalities}
        arrays = {m: x.numpy() for m, x in inputs.items()}
        target = tensors["target"]
        target_array = target.numpy()
        starts = [
            self._fill(index, {m: a[i] for m, a in arrays.items()}, target_array[i])
            for i, index in enumerate(indices)
        ]
        tensors["mask"].copy_(torch.tensor([self._mask(i) for i in indices]))
        tensors["window_start"].copy_(torch.tensor(starts))
        batch: dict[str, Any] = {
            "inputs": inputs,
            "mask": tensors["mask"],
            "target": target,
            "event_id": [self._event_ids[i] for i in indices],
            "window_start": tensors["window_start"],
        }
        items = [
            {
                "inputs": {m: x[i] for m, x in inputs.items()},
                "mask": batch["mask"][i],
                "target": target[i],
                "event_id": batch["event_id"][i],
                "window_start": starts[i],
            }
            for i in range(n)
        ]
        return WindowBatch(items, lease.wrap(batch) if lease is not None else batch)


class WindowBatch(list[dict[str, Any]]):
    """The items of one batch (views) and, in :attr:`batch`, the batch they are views of."""

    def __init__(self, items: list[dict[str, Any]], batch: dict[str, Any]) -> None:
        super().__init__(items)
        self.batch = batch


def collate_windows(data: Sequence[Any]) -> Any:
    """``collate_fn`` for :class:`SevirWindowDataset` loaders: the batch its batched fetch
    already built (no copy), else ``default_collate`` of the items."""
    if isinstance(data, WindowBatch):
        return data.batch
    return default_collate(list(data))


def _dihedral_into(src: np.ndarray, k: int, flip: bool, out: np.ndarray) -> None:
    """``out[...] = _dihedral(src, k, flip)`` without an intermediate array."""
    if not k and not flip:
        np.copyto(out, src, casting="same_kind")
        return
    copy = _SYMMETRY[(k, flip)]
    for t in range(src.shape[0]):
        copy(src[t], out[t])
