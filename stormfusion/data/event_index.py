"""Read the event index (``events.csv``) and its metadata (``events.json`` beside it).

The index has one row per event, in the order every later stage uses, with the columns
``id, time_utc, event_type, episode_id, event_id, kind`` and, for each selected modality
``m``, ``m_file`` (the catalog's ``file_name``, relative to ``<data root>/data``),
``m_index`` (position along axis 0 of a raster file; -1 for lightning, whose HDF5 key is
the event id) and ``m_size`` (native pixels per side). An event without an optional
modality has an empty ``m_file``.
``events.json`` holds ``data_fingerprint`` and the selection options. When the raw files
are on disk at selection time (the pipeline selects once they are), the fingerprint also
covers each selected raw file's identity (:func:`raw_identity`): size plus the S3 ETag
recorded at download, or a SHA-256 of the content for files made locally (the synthetic
twin, events-only subset files), so it changes when any selected raw file changes.

This module only reads; ``stormfusion select-events`` writes both files.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from stormfusion.data.sevir import MODALITIES
from stormfusion.errors import StormFusionError
from stormfusion.io import sha256_file
from stormfusion.provenance import stable_hash

logger = logging.getLogger(__name__)

#: Where ``stormfusion download`` records each verified file (key -> identity, mtime).
DOWNLOAD_STATE: str = ".download_state.json"

#: Columns every event index has, whatever the modalities.
BASE_COLUMNS: tuple[str, ...] = ("id", "time_utc")


@dataclass(frozen=True)
class EventSource:
    """Where one event's frames of one modality live in the raw archive."""

    event_id: str
    file: str  # the catalog's file_name, relative to <data root>/data
    index: int  # position along axis 0 (raster files); -1 for lightning
    size: int  # native pixels per side


#: Folder under the data root that the catalog's ``file_name`` is relative to.
DATA_PREFIX: str = "data"


def raw_file(data_root: str | os.PathLike[str], file: str) -> Path:
    """Where an index ``m_file`` lives: ``<data_root>/data/<file>`` (no escaping the root)."""
    rel = Path(file)
    if rel.is_absolute() or ".." in rel.parts:
        raise StormFusionError(f"file name {file!r} is absolute or leaves the data root")
    return Path(data_root) / DATA_PREFIX / rel


def read_event_index(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The event index as a DataFrame (``id`` as str, ``time_utc`` as datetime64).

    Raises:
        StormFusionError: the file is missing, lacks ``id``/``time_utc``, has duplicate
            ids or unparsable times.
    """
    p = Path(path)
    if not p.is_file():
        raise StormFusionError(f"{p}: event index not found")
    try:
        frame = pd.read_csv(p, dtype={"id": str}, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise StormFusionError(f"{p}: not a readable CSV event index: {exc}") from None
    missing = [c for c in BASE_COLUMNS if c not in frame.columns]
    if missing:
        raise StormFusionError(f"{p}: event index lacks column(s) {', '.join(missing)}")
    if frame.empty:
        raise StormFusionError(f"{p}: event index has no events")
    dupes = frame["id"][frame["id"].duplicated()].unique().tolist()
    if dupes:
        raise StormFusionError(f"{p}: event id(s) listed twice: {', '.join(dupes[:5])}")
    try:
        frame["time_utc"] = pd.to_datetime(frame["time_utc"], utc=False)
    except (ValueError, TypeError) as exc:
        raise StormFusionError(f"{p}: column time_utc has unparsable times: {exc}") from None
    return frame


def modalities_in_index(frame: pd.DataFrame) -> list[str]:
    """The modalities the index has columns for, in SEVIR's modality order."""
    return [m for m in MODALITIES if f"{m}_file" in frame.columns]


def event_sources(
    frame: pd.DataFrame, modality: str, where: str | os.PathLike[str] = "events.csv"
) -> list[EventSource]:
    """The events that have ``modality``, in index order, with their file, index and size.

    Args:
        frame: the event index (:func:`read_event_index`).
        modality: a SEVIR image type.
        where: the index's path, for error messages.

    Raises:
        StormFusionError: the index has no columns for ``modality`` or bad values in them.
    """
    cols = [f"{modality}_file", f"{modality}_index", f"{modality}_size"]
    absent = [c for c in cols if c not in frame.columns]
    if absent:
        have = ", ".join(modalities_in_index(frame)) or "none"
        raise StormFusionError(
            f"{where}: no column(s) {', '.join(absent)} for modality {modality!r} "
            f"(the index has modalities: {have})"
        )
    sources: list[EventSource] = []
    for row in frame[["id", *cols]].itertuples(index=False):
        event_id, file, index, size = row
        if not isinstance(file, str) or not file.strip():
            continue  # this event lacks the modality
        try:
            index_i, size_i = int(index), int(size)
        except (TypeError, ValueError):
            raise StormFusionError(
                f"{where}: event {event_id}: {modality}_index={index!r} / "
                f"{modality}_size={size!r} are not integers"
            ) from None
        if size_i <= 0:
            raise StormFusionError(f"{where}: event {event_id}: {modality}_size={size_i} <= 0")
        sources.append(EventSource(str(event_id), file.strip(), index_i, size_i))
    return sources


def read_events_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """An ``events.json`` (the event index's metadata); must hold ``data_fingerprint``."""
    meta_path = Path(path)
    if not meta_path.is_file():
        raise StormFusionError(f"{meta_path}: event index metadata not found")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StormFusionError(f"{meta_path}: not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or not meta.get("data_fingerprint"):
        raise StormFusionError(f"{meta_path}: no 'data_fingerprint' key")
    return meta


def read_event_meta(events_csv: str | os.PathLike[str]) -> dict[str, Any]:
    """``events.json`` beside the index ``events_csv`` (same stem)."""
    return read_events_json(Path(events_csv).with_suffix(".json"))


def _recorded(data_root: Path) -> dict[str, Any]:
    try:
        items = json.loads((data_root / DOWNLOAD_STATE).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return items if isinstance(items, dict) else {}


def raw_identity(data_root: str | os.PathLike[str], files: Iterable[str]) -> dict[str, Any]:
    """The identity of each raw file (``m_file`` names, relative to ``<data_root>/data``).

    Returns:
        file -> ``{"size", "etag"}`` for a file the downloader verified against the bucket
        (its record's size and mtime still match the file), ``{"size", "sha256"}`` for any
        other file (hashed here: made locally, or copied in), ``{"missing": true}`` for a
        file not on disk.
    """
    root = Path(data_root)
    state = _recorded(root)
    out: dict[str, Any] = {}
    for file in sorted(set(files)):
        path = raw_file(root, file)
        if not path.is_file():
            out[file] = {"missing": True}
            continue
        st = path.stat()
        found = state.get(f"{DATA_PREFIX}/{file}")
        item: dict[str, Any] = found if isinstance(found, dict) else {}
        fresh = item.get("size") == st.st_size and item.get("mtime_ns") == st.st_mtime_ns
        if fresh and item.get("sha256"):
            out[file] = {"size": st.st_size, "sha256": item["sha256"]}
        elif fresh and item.get("etag"):
            out[file] = {"size": st.st_size, "etag": item["etag"]}
        else:
            logger.info("hashing %s (no download record)", path)
            out[file] = {"size": st.st_size, "sha256": sha256_file(path)}
    missing = [f for f, v in out.items() if v.get("missing")]
    if missing:
        logger.warning(
            "%d selected raw file(s) not under %s yet (e.g. %s): the data fingerprint covers "
            "the catalog and event list for them, not their bytes",
            len(missing),
            root,
            missing[0],
        )
    return out


def fingerprint_with_raw(selection_fingerprint: str, identity: dict[str, Any]) -> str:
    """The data fingerprint of a selection together with its raw files' identity."""
    return stable_hash({"selection": selection_fingerprint, "raw_files": identity})
