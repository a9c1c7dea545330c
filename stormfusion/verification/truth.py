"""The truth of the score step: the VIL store's target frames with missing values kept.

The training loader reads missing VIL (255) as 0; scoring must not, so the truth is read here
straight from ``INTERIM/zarr/vil.zarr`` (the store's contract is checked by the loader's
:func:`~stormfusion.data.dataset.inspect_store`), frames ``[start + T_in, start + T_in +
T_out)`` of each window of the split, in windows-table order. On the forecast's grid
(``image_size`` other than the store's) the frames are regridded as the loader regrids them
and every target pixel that any missing source pixel touches is set to 255 (missing).

A store written with every chunk (``store_format`` 2 and later, as ``convert`` writes it)
must hold each chunk file a window needs: an absent one (which would read as zeros) is
refused by :class:`~stormfusion.data.chunks.WindowReader`, naming the store and event.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import zarr
from torch import Tensor

from stormfusion.data.chunks import WindowReader
from stormfusion.data.dataset import ALL_CHUNKS_FORMAT, TARGET_MODALITY, inspect_store
from stormfusion.data.regrid import regrid
from stormfusion.data.sevir import VIL_MISSING
from stormfusion.data.splits import read_windows
from stormfusion.errors import StormFusionError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TruthWindow:
    """One window of the split: its event, first frame and store row."""

    event_id: str
    window_start: int
    row: int


class TruthWindows:
    """The split's target frames, (T_out, S, S) float32 with 255 where the truth is missing.

    Args:
        truth: the VIL store, ``.../vil.zarr``.
        windows: ``windows.csv``.
        split: the split the forecasts were made for.
        image_size: the forecasts' grid (S pixels per side).
    """

    def __init__(
        self,
        truth: str | os.PathLike[str],
        windows: str | os.PathLike[str],
        split: str,
        image_size: int,
    ) -> None:
        self.path = Path(truth)
        if self.path.name != f"{TARGET_MODALITY}.zarr":
            raise StormFusionError(f"{self.path}: the truth must be the VIL store 'vil.zarr'")
        if not self.path.exists():
            raise StormFusionError(f"{self.path}: truth store does not exist")
        info = inspect_store(self.path.parent, TARGET_MODALITY)
        self.data_fingerprint = info.data_fingerprint
        self.missing_pixels = info.missing_pixels
        self.image_size = int(image_size)
        table = read_windows(windows)
        table = table[table["split"] == split].reset_index(drop=True)
        self.split = split
        self.input_frames = int(table["input_frames"].iloc[0]) if len(table) else 0
        self.output_frames = int(table["output_frames"].iloc[0]) if len(table) else 0
        absent = sorted({e for e in table["event_id"] if e not in info.events})
        if absent:
            raise StormFusionError(
                f"{self.path}: {len(absent)} event(s) of split {split!r} in {windows} are not in "
                f"the truth store, e.g. {absent[:3]}"
            )
        self.windows = [
            TruthWindow(str(e), int(s), info.events[str(e)])
            for e, s in zip(table["event_id"], table["window_start"], strict=True)
        ]
        array = zarr.open_array(self.path / TARGET_MODALITY, mode="r")
        by_row = sorted(info.events, key=info.events.__getitem__)
        # stores that write every chunk: an absent chunk file is refused, naming the event
        complete = info.store_format >= ALL_CHUNKS_FORMAT
        self._reader = WindowReader(array, events=by_row, all_chunks=complete)

    def __len__(self) -> int:
        return len(self.windows)

    def read(self, index: int) -> Tensor:
        """Target frames of window ``index``: (T_out, S, S) float32, 255 = missing."""
        w = self.windows[index]
        start = w.window_start + self.input_frames
        stop = start + self.output_frames
        raw = self._reader.read(w.row, start, stop)
        missing = raw == VIL_MISSING
        frames = np.where(missing, 0, raw).astype(np.float32)
        out = regrid(TARGET_MODALITY, torch.from_numpy(frames), self.image_size)
        if missing.any():
            touched = regrid(
                TARGET_MODALITY, torch.from_numpy(missing.astype(np.float32)), self.image_size
            )
            out = torch.where(touched > 0, torch.tensor(float(VIL_MISSING)), out)
        return out
