"""The multimodal training loader: windows of the Zarr archive as PyTorch samples.

Each item of :class:`SevirWindowDataset` is one row of the windows table (in table order):

- ``inputs``: ``{modality: float32 (T_in, S, S)}`` for the requested modalities, frames
  ``[start, start + T_in)`` on the model grid (``S = image_size``), normalised with the
  published SEVIR constants (:mod:`stormfusion.data.normalization`) unless
  ``normalize=False``;
- ``mask``: float32 ``(4,)`` in ``STUDY_MODALITIES`` order, 1 where the modality is
  requested and present for the event, 0 otherwise;
- ``target``: float32 ``(T_out, S, S)``, VIL frames ``[start + T_in, start + T_in + T_out)``
  on the 0..255 scale (never normalised);
- ``event_id``: str, ``window_start``: int.

Regridding (:mod:`stormfusion.data.regrid`): VIL and IR bilinear when enlarging, area
average when shrinking, identity at the native size; lightning count-preserving (the flash
total of every frame is kept). Lightning is normalised after regridding, with the
constants of the native 8 km grid.

Missing VIL (digital value 255): read as 0 (no echo) in inputs and in targets alike, before
regridding, so that no 255 leaks into averages or scores. The VIL store counts such pixels
per event (``missing_pixels``); the dataset logs how many of its events have any.

A missing modality (the event index had no file for it, so its store lacks the event)
gives zeros (after normalisation) and ``mask`` 0; the dataset logs the counts per modality
when it is built. A store whose shape or dtype does not fit the archive's contract, or that
was built from another event index than the VIL store, is an error.

Augmentation (``augment=True``): one of the 8 symmetries of the square (rotations by
multiples of 90 degrees, optionally followed by a left-right flip), the same for every
modality and the target of an item, drawn from ``numpy.random.default_rng((seed, epoch,
index))``: reproducible, different per epoch (call :meth:`SevirWindowDataset.set_epoch`
before each epoch; with ``persistent_workers=True`` the workers keep the epoch they
started with).

DataLoader workers: stores are opened lazily in each process on first use, never pickled.
Windows are read chunk file by chunk file (:class:`stormfusion.data.chunks.WindowReader`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import zarr
from torch.utils.data import Dataset

from stormfusion.data.chunks import WindowReader
from stormfusion.data.normalization import SEVIR_NORMALIZATION
from stormfusion.data.regrid import regrid
from stormfusion.data.sevir import MODALITIES, N_FRAMES, STUDY_MODALITIES, VIL_MISSING
from stormfusion.data.splits import SPLITS, check_windows, read_windows
from stormfusion.errors import StormFusionError

logger = logging.getLogger(__name__)

#: The modality whose frames are the target.
TARGET_MODALITY = "vil"
#: Stored "missing" value per modality, and what the loader reads it as.
MISSING_AS: dict[str, tuple[int, float]] = {"vil": (VIL_MISSING, 0.0)}


@dataclass(frozen=True)
class StoreInfo:
    """What the dataset checked about one store when it was built."""

    modality: str
    path: Path
    events: dict[str, int]  # event id -> row
    size: int  # native pixels per side
    data_fingerprint: str
    missing_pixels: np.ndarray | None  # per row, where the store counts them


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
    )


def _dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """Rotate ``(..., H, W)`` by ``k`` quarter turns (counter-clockwise, as ``torch.rot90``),
    then flip left-right if asked; one copy (numpy views), none for the identity."""
    if not k and not flip:
        return x
    view = np.rot90(x.numpy(), k, axes=(-2, -1))
    if flip:
        view = np.flip(view, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(view))


class SevirWindowDataset(Dataset[dict[str, Any]]):
    """Windows of the Zarr archive as training samples (see the module docstring).

    Args:
        zarr_dir: folder holding ``<modality>.zarr`` stores (always ``vil.zarr``).
        windows: ``windows.csv`` path or its DataFrame.
        split: ``train``, ``val``, ``test``, or None for every window.
        modalities: input modalities (subset of ``STUDY_MODALITIES``); ``()`` for targets
            only (scoring).
        image_size: model grid, pixels per side.
        augment: random dihedral symmetries (see the module docstring).
        normalize: normalise inputs with the SEVIR constants.
        seed: augmentation seed.
    """

    def __init__(
        self,
        zarr_dir: str | os.PathLike[str],
        windows: str | os.PathLike[str] | pd.DataFrame,
        split: str | None,
        modalities: Sequence[str] = STUDY_MODALITIES,
        image_size: int = 384,
        augment: bool = False,
        normalize: bool = True,
        seed: int = 0,
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
        self.normalize = bool(normalize)
        self.seed = int(seed)
        self.split = split
        self._epoch = 0
        table, where = self._read_table(windows)
        if split is not None:
            table = table[table["split"] == split]
        if table.empty:
            raise StormFusionError(f"{where}: no windows in split {split!r}")
        self.windows = table.reset_index(drop=True)
        self._input_frames = self._single(where, "input_frames")
        self._output_frames = self._single(where, "output_frames")
        self.stores = {
            m: inspect_store(self.zarr_dir, m)
            for m in dict.fromkeys((TARGET_MODALITY, *self.modalities))
        }
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
        self._event_ids: list[str] = [str(e) for e in ids]
        self._starts = self.windows["window_start"].to_numpy(dtype=np.int64)
        self.missing_windows = {m: int((self._rows[m] < 0).sum()) for m in self.modalities}
        self._log_summary(where)
        self._readers: dict[str, WindowReader] | None = None

    # -- construction helpers ---------------------------------------------------------

    @staticmethod
    def _read_table(
        windows: str | os.PathLike[str] | pd.DataFrame,
    ) -> tuple[pd.DataFrame, str]:
        if isinstance(windows, pd.DataFrame):
            return check_windows(windows, "windows table"), "windows table"
        return read_windows(windows), str(windows)

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
        return state

    def _reader(self, modality: str) -> WindowReader:
        if self._readers is None:
            self._readers = {}
        reader = self._readers.get(modality)
        if reader is None:
            array = zarr.open_array(self.stores[modality].path / modality, mode="r")
            self._readers[modality] = reader = WindowReader(array)
        return reader

    def _frames(self, modality: str, row: int, start: int, stop: int) -> torch.Tensor:
        """Frames ``[start, stop)`` of one store row as float32 on the model grid."""
        raw = self._reader(modality).read(row, start, stop)
        frames = raw.astype(np.float32)
        if modality in MISSING_AS:
            value, replacement = MISSING_AS[modality]
            frames[raw == value] = replacement
        return regrid(modality, torch.from_numpy(frames), self.image_size)

    def augmentation(self, index: int) -> tuple[int, bool]:
        """The (quarter turns, flip) of item ``index`` this epoch; (0, False) without it."""
        if not self.augment:
            return 0, False
        rng = np.random.default_rng((self.seed, self._epoch, index))
        return int(rng.integers(4)), bool(rng.integers(2))

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self.windows):
            raise IndexError(f"window {index} out of range for {len(self.windows)} windows")
        event_id = self._event_ids[index]
        start = int(self._starts[index])
        t_in, t_out = self._input_frames, self._output_frames
        k, flip = self.augmentation(index)
        size = self.image_size
        vil_row = int(self._rows[TARGET_MODALITY][index])
        vil = self._frames(TARGET_MODALITY, vil_row, start, start + t_in + t_out)
        inputs: dict[str, torch.Tensor] = {}
        mask = torch.zeros(len(STUDY_MODALITIES), dtype=torch.float32)
        for m in self.modalities:
            row = int(self._rows[m][index])
            if row < 0:
                x = torch.zeros(t_in, size, size, dtype=torch.float32)
            else:
                # VIL inputs and target are disjoint slices of one read: in-place is safe
                x = (
                    vil[:t_in]
                    if m == TARGET_MODALITY
                    else self._frames(m, row, start, start + t_in)
                )
                if self.normalize:
                    offset, scale = SEVIR_NORMALIZATION[m]
                    x.sub_(offset).div_(scale)
                mask[STUDY_MODALITIES.index(m)] = 1.0
            inputs[m] = _dihedral(x, k, flip)
        target = _dihedral(vil[t_in:], k, flip)
        return {
            "inputs": inputs,
            "mask": mask,
            "target": target,
            "event_id": event_id,
            "window_start": start,
        }
