"""What ``train`` and ``predict`` read besides the Zarr stores: model arguments, the frame
counts of the windows table and the event index's metadata, each checked with a clear error.

The windows table itself is read with :func:`stormfusion.data.splits.read_windows`.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pandas as pd

from stormfusion.errors import StormFusionError


def parse_model_args(text: str) -> dict[str, Any]:
    """``--model-args`` JSON text to a dictionary of constructor arguments."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StormFusionError(f"--model-args is not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise StormFusionError(f"--model-args must be a JSON object, got {text!r}")
    return value


def window_frames(table: pd.DataFrame, path: str | os.PathLike[str]) -> tuple[int, int]:
    """The (input_frames, output_frames) every window of the table shares."""
    frames = table[["input_frames", "output_frames"]].drop_duplicates()
    if len(frames) != 1:
        pairs = sorted(map(tuple, frames.to_numpy().tolist()))
        raise StormFusionError(
            f"windows table {path} mixes (input_frames, output_frames) pairs {pairs}; "
            "one model needs one pair"
        )
    first = frames.to_numpy()[0]
    return int(first[0]), int(first[1])


def with_frames(
    model_args: dict[str, Any], frames: tuple[int, int], path: str | os.PathLike[str]
) -> dict[str, Any]:
    """``model_args`` with input_frames/output_frames from the windows table merged in."""
    merged = dict(model_args)
    for key, value in zip(("input_frames", "output_frames"), frames, strict=True):
        if key in merged and merged[key] != value:
            raise StormFusionError(
                f"--model-args sets {key}={merged[key]!r} but windows table {path} has {value}"
            )
        merged[key] = value
    return merged


def events_in_splits(table: pd.DataFrame, splits: tuple[str, ...]) -> tuple[str, ...]:
    """Event ids of the given splits, in table order, each once."""
    rows = table[table["split"].isin(splits)]
    return tuple(dict.fromkeys(rows["event_id"].astype(str)))


def catalog_hash(meta: dict[str, Any]) -> str:
    """The catalog's SHA-256 recorded in ``events.json`` (``unknown`` when absent)."""
    value = meta.get("catalog_sha256")
    return value if isinstance(value, str) else "unknown"


def check_fingerprint(
    store_fingerprint: str,
    meta_fingerprint: str,
    zarr_dir: str | os.PathLike[str],
    events_meta: str | os.PathLike[str],
) -> None:
    """Refuse Zarr stores converted for another event index than ``events_meta``'s."""
    if store_fingerprint != meta_fingerprint:
        raise StormFusionError(
            f"the Zarr stores in {zarr_dir} carry data fingerprint {store_fingerprint}, but "
            f"{events_meta} has {meta_fingerprint}: convert the stores again for this event "
            "index"
        )
