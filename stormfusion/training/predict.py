"""Forecasts of one model over one split, written to a Zarr store chunked for scoring.

The store (``docs/architecture.md``): variable ``forecast``, dims (sample, lead, y, x),
uint8 VIL 0..255 (the model's output clamped and rounded); coordinates ``event_id`` and
``window_start`` (sample) and ``lead_time`` (lead, minutes after the last input frame);
attributes ``run``, ``model``, ``model_args`` (JSON), ``split`` and ``provenance``. Samples
are in windows-table order, one chunk per :data:`CHUNK_SAMPLES` samples with the full
lead/y/x extent, so a scorer reads whole chunks batch by batch.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask.array
import numpy as np
import torch
import xarray as xr
import zarr
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from stormfusion.data.dataset import collate_windows
from stormfusion.data.sevir import FRAME_MINUTES, VIL_MAX
from stormfusion.errors import StormFusionError
from stormfusion.io import atomic_path
from stormfusion.models import ForecastModel

logger = logging.getLogger(__name__)

#: Samples per chunk of the forecast store.
CHUNK_SAMPLES = 8


def to_uint8(forecast: torch.Tensor) -> np.ndarray:
    """VIL forecasts (any real dtype) to uint8: clamped to [0, 255] and rounded."""
    return forecast.float().clamp(0.0, float(VIL_MAX)).round().to(torch.uint8).cpu().numpy()


def predict_to_zarr(
    model: ForecastModel,
    dataset: Dataset[Any],
    out: str | os.PathLike[str],
    *,
    event_ids: Sequence[str],
    window_starts: Sequence[int],
    attrs: dict[str, Any],
    batch_size: int = 8,
    workers: int = 0,
    device: torch.device | None = None,
    chunk_samples: int = CHUNK_SAMPLES,
) -> Path:
    """Run ``model.forecast`` over ``dataset`` and write the forecast store ``out`` atomically.

    Args:
        model: any forecast model (eval mode is set here).
        dataset: the split's windows (augmentation off), items in windows-table order.
        out: the ``.zarr`` directory to write (replaced whole on success).
        event_ids, window_starts: the split's windows in table order; every batch is
            checked against them.
        attrs: store attributes (``run``, ``model``, ``model_args``, ``split``, ...).
        batch_size, workers: DataLoader settings.
        device: default CUDA when available, else the CPU.
        chunk_samples: samples per chunk.

    Returns:
        ``out`` as a Path.
    """
    n = len(dataset)  # type: ignore[arg-type]
    _check_request(n, len(event_ids), len(window_starts), attrs, batch_size, chunk_samples)
    device = device or _default_device()
    model = model.to(device).eval()
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_windows,  # batched fetch: no copy
        pin_memory=device.type == "cuda",
    )
    with atomic_path(out) as tmp:
        writer: _ChunkWriter | None = None
        clock: list[float] = []  # seconds per batch
        with tqdm(total=n, unit="sample", desc="forecast", mininterval=30.0) as bar:
            for batch in loader:
                _check_batch(batch, event_ids, window_starts, int(bar.n))
                pred = _forecast(model, batch, device, clock)
                if writer is None:
                    array = _create_store(
                        tmp, n, pred.shape[1:], event_ids, window_starts, attrs, chunk_samples
                    )
                    writer = _ChunkWriter(array, chunk_samples)
                writer.add(pred)
                bar.update(len(pred))
        if writer is None or writer.close() != n:
            raise StormFusionError(f"the loader stopped before all {n} windows were forecast")
        _record_latency(tmp, sum(clock) / n, device)
    logger.info("wrote %d forecasts of %s to %s", n, attrs.get("model"), out)
    return Path(out)


def _forecast(
    model: ForecastModel, batch: dict[str, Any], device: torch.device, clock: list[float]
) -> np.ndarray:
    """One batch's uint8 forecasts; appends to ``clock`` the seconds from inputs to device to
    forecast on the host (``to_uint8`` waits for the device)."""
    start = time.perf_counter()
    inputs = {k: v.to(device) for k, v in batch["inputs"].items()}
    pred = to_uint8(model.forecast(inputs, batch["mask"].to(device)))
    clock.append(time.perf_counter() - start)
    return pred


def _record_latency(store: Path, per_sample: float, device: torch.device) -> None:
    """Forecast latency (inputs to the device, forecast, back as uint8) in the store's
    attributes ``latency_s_per_sample`` and ``latency_device``; the score step reports it."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    zarr.open_group(str(store), mode="r+").attrs.update(
        {"latency_s_per_sample": per_sample, "latency_device": f"{device.type} ({name})"}
    )


def _default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    logger.info("CUDA is not available: forecasting on the CPU")
    return torch.device("cpu")


def _check_request(
    n: int, n_ids: int, n_starts: int, attrs: dict[str, Any], batch_size: int, chunk: int
) -> None:
    if n == 0:
        raise StormFusionError(f"split {attrs.get('split')!r} has no windows to forecast")
    if n_ids != n or n_starts != n:
        raise StormFusionError(f"the dataset has {n} windows but {n_ids} event ids were given")
    if batch_size < 1 or chunk < 1:
        raise StormFusionError(f"batch size {batch_size} and chunk size must be >= 1")


class _ChunkWriter:
    """Buffers forecasts and writes them to the Zarr array one whole chunk at a time."""

    def __init__(self, array: zarr.Array, chunk_samples: int) -> None:
        self.array = array
        self.chunk = chunk_samples
        self.buffer: list[np.ndarray] = []
        self.written = 0

    def _flush(self, final: bool) -> None:
        block = np.concatenate(self.buffer)
        size = len(block) if final else len(block) // self.chunk * self.chunk
        if size:
            self.array[self.written : self.written + size] = block[:size]
            self.written += size
        self.buffer = [block[size:]] if size < len(block) else []

    def add(self, block: np.ndarray) -> None:
        """Queue ``block`` (B, L, H, W); write every chunk that is complete."""
        self.buffer.append(block)
        if sum(len(b) for b in self.buffer) >= self.chunk:
            self._flush(final=False)

    def close(self) -> int:
        """Write what is left; return the number of samples written."""
        if self.buffer:
            self._flush(final=True)
        return self.written


def _check_batch(
    batch: dict[str, Any], event_ids: Sequence[str], window_starts: Sequence[int], lo: int
) -> None:
    got = [(str(e), int(s)) for e, s in zip(batch["event_id"], batch["window_start"], strict=True)]
    want = [(str(event_ids[i]), int(window_starts[i])) for i in range(lo, lo + len(got))]
    if got != want:
        raise StormFusionError(
            f"the loader's windows {got[:2]}... at sample {lo} differ from the windows table's "
            f"{want[:2]}...: the dataset is not in windows-table order"
        )


def _create_store(
    path: Path,
    n: int,
    shape: tuple[int, ...],
    event_ids: Sequence[str],
    window_starts: Sequence[int],
    attrs: dict[str, Any],
    chunk_samples: int,
) -> zarr.Array:
    """Write the store's metadata and coordinates; return the empty ``forecast`` array."""
    leads, height, width = shape
    data = dask.array.zeros(
        (n, leads, height, width),
        dtype=np.uint8,
        chunks=(min(chunk_samples, n), leads, height, width),
    )
    template = xr.Dataset(
        {"forecast": (("sample", "lead", "y", "x"), data)},
        coords={
            "event_id": ("sample", np.asarray([str(e) for e in event_ids], dtype=object)),
            "window_start": ("sample", np.asarray(window_starts, dtype=np.int64)),
            "lead_time": ("lead", np.arange(1, leads + 1, dtype=np.int64) * FRAME_MINUTES),
        },
        attrs={
            k: (json.dumps(v, sort_keys=True) if k == "model_args" else v) for k, v in attrs.items()
        },
    )
    template["forecast"].attrs.update(
        {"units": "1", "long_name": "forecast VIL (digital VIL 0..255)", "valid_range": [0, 255]}
    )
    template["lead_time"].attrs.update({"units": "minutes", "long_name": "lead time"})
    template.to_zarr(path, mode="w", compute=False, consolidated=False, zarr_format=3)
    return zarr.open_array(str(path / "forecast"), mode="r+")
