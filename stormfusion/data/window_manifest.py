"""The split manifest (every window and its digest) and external window lists.

``windows_manifest.csv`` names every window of ``windows.csv``, in the same order, by where
its data lives in the raw archive, one row per window with the columns
:data:`MANIFEST_COLUMNS`: ``img_type`` (always ``vil``), ``file_name`` (the catalog's VIL
``file_name``, relative to ``data/``), ``file_index`` (the event's position in the bucket's
file; see :func:`with_source_indices` for events-only subset files),
``window`` (``k``: inputs start at frame ``k * stride``), ``window_start`` (that frame),
``split`` and ``event_id``. It is written as UTF-8 with ``\\n`` line ends.

``windows_manifest.json`` holds ``digest`` (the SHA-256, hex, of the manifest CSV's bytes:
two runs with the same digest cut the same windows from the same files into the same
splits), ``manifest`` (the CSV's file name, beside the JSON), ``strategy``, ``options``,
``window`` (frames in/out, stride) and ``counts`` (events and windows per split). Scores and
tables print the digest.

An external window list (one file per split) holds one window per line in the form a peer
project publishes, ``<img_type>-<year>-<file name>-<file_index>-<window>``, e.g.
``vil-2019-SEVIR_VIL_STORMEVENTS_2019_0701_1231-17-2`` (window 2 of the event at position
17 of ``vil/2019/SEVIR_VIL_STORMEVENTS_2019_0701_1231.h5``; the ``.h5`` may be written or
not). Blank lines and lines starting with ``#`` are ignored. Every entry must name an event
of the selection; the split then uses exactly the listed windows.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from stormfusion.data.splits import SPLITS, WINDOW_COLUMNS, SplitOptions, WindowSpec
from stormfusion.errors import StormFusionError
from stormfusion.io import atomic_path, write_json_atomic

logger = logging.getLogger(__name__)

#: The modality whose catalog rows name the windows.
KEY_MODALITY: Final = "vil"
#: Columns of windows_manifest.csv, in order.
MANIFEST_COLUMNS: Final = (
    "img_type",
    "file_name",
    "file_index",
    "window",
    "window_start",
    "split",
    "event_id",
)
_ENTRY = re.compile(
    r"(?P<img_type>[a-z0-9]+)-(?P<year>[0-9]{4})-(?P<name>[A-Za-z0-9_.]+?)(?:\.h5)?"
    r"-(?P<file_index>[0-9]+)-(?P<window>[0-9]+)"
)
ENTRY_FORMAT: Final = "<img_type>-<year>-<file name>-<file_index>-<window>"


@dataclass(frozen=True)
class WindowEntry:
    """One listed window and where it was listed (for messages)."""

    where: str  # "<file>:<line>"
    img_type: str
    file_name: str  # relative to data/, as in the catalog
    file_index: int
    window: int
    split: str


def manifest_paths(manifest_json: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(CSV, JSON) of a manifest: the CSV has the JSON's name with ``.csv``."""
    json_path = Path(manifest_json)
    return json_path.with_suffix(".csv"), json_path


def with_source_indices(
    events: pd.DataFrame, data_root: str | os.PathLike[str] | None
) -> pd.DataFrame:
    """The index with ``vil_source_index``: each event's position in the BUCKET's VIL file.

    For whole files that is ``vil_index``. An events-only download (``s3.events_only``)
    writes subset files whose catalog renumbers the events; their positions in the bucket's
    files are recorded in the subset files (:func:`stormfusion.data.subset.read_subset_record`)
    and used here, so manifests and window lists always name the bucket's files.

    Raises:
        StormFusionError: a subset file that does not record one of its events.
    """
    from stormfusion.data.event_index import raw_file
    from stormfusion.data.subset import read_subset_record

    out = events.copy()
    files_col, index_col = f"{KEY_MODALITY}_file", f"{KEY_MODALITY}_index"
    if files_col not in out.columns:
        return out
    files = out[files_col].fillna("").astype(str).to_numpy()
    source = out[index_col].astype("int64").to_numpy().copy()
    out[f"{KEY_MODALITY}_source_index"] = source
    if data_root is None:
        return out
    for file in sorted(set(files) - {""}):
        path = raw_file(data_root, file)
        record = read_subset_record(path) if path.is_file() else None
        if record is None:
            continue  # a whole file: its positions are the bucket's
        recorded = {str(e["id"]): int(e["source_index"]) for e in record.get("events", [])}
        for row in np.flatnonzero(files == file):
            event = str(out["id"].iloc[row])
            if event not in recorded:
                raise StormFusionError(f"{path}: the subset file does not record event {event}")
            source[row] = recorded[event]
    out[f"{KEY_MODALITY}_source_index"] = source
    return out


def _key_lookup(events: pd.DataFrame, img_type: str = KEY_MODALITY) -> dict[tuple[str, int], str]:
    """``(file_name, file_index) -> event id`` of the index's ``img_type`` rows, positions
    in the bucket's files (``<img_type>_source_index`` where present)."""
    cols = [f"{img_type}_file", f"{img_type}_index"]
    if any(c not in events.columns for c in cols):
        raise StormFusionError(
            f"the event index has no {img_type} columns: windows are named by their "
            f"{img_type} file, so the selection must include {img_type}"
        )
    if f"{img_type}_source_index" in events.columns:
        cols[1] = f"{img_type}_source_index"
    files = events[cols[0]].fillna("").astype(str)
    return {
        (f, int(i)): str(e)
        for f, i, e in zip(files, events[cols[1]], events["id"], strict=True)
        if f
    }


def manifest_table(events: pd.DataFrame, windows: pd.DataFrame, spec: WindowSpec) -> pd.DataFrame:
    """The manifest rows of ``windows`` (same order), named by each event's VIL row."""
    by_id = {e: k for k, e in _key_lookup(events).items()}
    missing = sorted(set(windows["event_id"]) - set(by_id))
    if missing:
        raise StormFusionError(
            f"event(s) without a {KEY_MODALITY} row cannot be named in the manifest: "
            + ", ".join(missing[:5])
        )
    keys = [by_id[e] for e in windows["event_id"]]
    starts = windows["window_start"].to_numpy(dtype=np.int64)
    return pd.DataFrame(
        {
            "img_type": KEY_MODALITY,
            "file_name": [k[0] for k in keys],
            "file_index": np.array([k[1] for k in keys], dtype=np.int64),
            "window": starts // spec.stride,
            "window_start": starts,
            "split": windows["split"].to_numpy(),
            "event_id": windows["event_id"].to_numpy(),
        },
        columns=list(MANIFEST_COLUMNS),
    )


def manifest_csv_bytes(table: pd.DataFrame) -> bytes:
    """The manifest as the exact bytes written (UTF-8, ``\\n`` line ends)."""
    buffer = io.StringIO()
    table.to_csv(buffer, index=False, lineterminator="\n")
    return buffer.getvalue().encode("utf-8")


def manifest_meta(
    table: pd.DataFrame, data: bytes, csv_name: str, strategy: str, opts: SplitOptions,
    spec: WindowSpec,
) -> dict[str, Any]:  # fmt: skip
    """The JSON beside the manifest: digest, strategy, options, window shape, counts."""
    counts = {
        split: {
            "events": int(table.loc[table["split"] == split, "event_id"].nunique()),
            "windows": int((table["split"] == split).sum()),
        }
        for split in SPLITS
    }
    return {
        "digest": hashlib.sha256(data).hexdigest(),
        "manifest": csv_name,
        "strategy": strategy,
        "options": json.loads(json.dumps(asdict(opts))),
        "window": asdict(spec),
        "counts": counts,
    }


def write_split_outputs(
    windows: pd.DataFrame,
    table: pd.DataFrame,
    meta: dict[str, Any],
    windows_csv: str | os.PathLike[str],
    manifest_json: str | os.PathLike[str],
) -> None:
    """Write ``windows.csv``, the manifest CSV and its JSON, each atomically (JSON last)."""
    csv_path, json_path = manifest_paths(manifest_json)
    data = manifest_csv_bytes(table)
    with atomic_path(windows_csv) as tmp:
        windows.to_csv(tmp, index=False)
    with atomic_path(csv_path) as tmp:
        tmp.write_bytes(data)
    write_json_atomic(json_path, meta)


def read_window_manifest(
    manifest_json: str | os.PathLike[str],
) -> tuple[dict[str, Any], pd.DataFrame]:
    """A manifest's JSON and its rows, after checking the CSV's bytes against the digest.

    Raises:
        StormFusionError: a missing file, JSON without ``digest``/``manifest``, a digest that
            does not match the CSV, or a malformed row (naming file and line).
    """
    json_path = Path(manifest_json)
    if not json_path.is_file():
        raise StormFusionError(f"{json_path}: window manifest not found")
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StormFusionError(f"{json_path}: not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or not all(
        isinstance(meta.get(k), str) for k in ("digest", "manifest")
    ):
        raise StormFusionError(f"{json_path}: needs the string keys 'digest' and 'manifest'")
    csv_path = json_path.parent / Path(meta["manifest"]).name
    if not csv_path.is_file():
        raise StormFusionError(f"{json_path}: its manifest {csv_path} is missing")
    data = csv_path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != meta["digest"]:
        raise StormFusionError(
            f"{json_path}: digest {meta['digest']} does not match {csv_path} "
            f"(its SHA-256 is {actual}): the manifest was changed after it was written"
        )
    return meta, _parse_manifest_csv(data, csv_path)


def _parse_manifest_csv(data: bytes, where: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise StormFusionError(f"{where}: not a readable manifest: {exc}") from None
    if list(table.columns) != list(MANIFEST_COLUMNS):
        raise StormFusionError(
            f"{where}: line 1: columns {', '.join(table.columns)}; expected "
            + ", ".join(MANIFEST_COLUMNS)
        )
    for col in ("file_index", "window", "window_start"):
        bad = ~table[col].str.fullmatch(r"[0-9]+")
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise StormFusionError(
                f"{where}:{row + 2}: {col} {table[col].iloc[row]!r} is not a whole number"
            )
        table[col] = table[col].astype(np.int64)
    bad = ~table["split"].isin(SPLITS)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise StormFusionError(
            f"{where}:{row + 2}: split {table['split'].iloc[row]!r}; expected one of "
            + ", ".join(SPLITS)
        )
    return table


def parse_window_list(path: str | os.PathLike[str], split: str) -> list[WindowEntry]:
    """The windows one list file names, for ``split``.

    Raises:
        StormFusionError: a missing or empty file, an unknown split, or a malformed line
            (naming file and line).
    """
    p = Path(path)
    if split not in SPLITS:
        raise StormFusionError(
            f"window list {p}: unknown split {split!r}; expected {', '.join(SPLITS)}"
        )
    if not p.is_file():
        raise StormFusionError(f"{p}: window list for split {split!r} not found")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise StormFusionError(f"{p}: not a UTF-8 text file: {exc}") from None
    entries = []
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        match = _ENTRY.fullmatch(text)
        if match is None:
            raise StormFusionError(
                f"{p}:{number}: malformed entry {text!r}; expected {ENTRY_FORMAT}"
            )
        g = match.groupdict()
        entries.append(
            WindowEntry(
                where=f"{p}:{number}",
                img_type=g["img_type"],
                file_name=f"{g['img_type']}/{g['year']}/{g['name']}.h5",
                file_index=int(g["file_index"]),
                window=int(g["window"]),
                split=split,
            )
        )
    if not entries:
        raise StormFusionError(f"{p}: the window list for split {split!r} names no window")
    return entries


def windows_from_entries(
    events: pd.DataFrame, entries: Iterable[WindowEntry], spec: WindowSpec
) -> pd.DataFrame:
    """The windows table (:data:`WINDOW_COLUMNS`) of exactly the listed windows.

    Rows follow the index's event order, then the window start.

    Raises:
        StormFusionError: an entry of another modality, one that matches no selected event,
            a window past the event's last, a window listed twice or an event in two splits
            (each naming file and line).
    """
    starts = spec.starts()
    lookup = _key_lookup(events)
    seen: dict[tuple[str, int], str] = {}
    split_of: dict[str, tuple[str, str]] = {}
    rows = []
    for entry in entries:
        event = _match(entry, lookup, starts)
        if (event, entry.window) in seen:
            raise StormFusionError(
                f"{entry.where}: window {entry.window} of event {event} is already listed at "
                f"{seen[(event, entry.window)]}"
            )
        seen[(event, entry.window)] = entry.where
        first = split_of.setdefault(event, (entry.split, entry.where))
        if first[0] != entry.split:
            raise StormFusionError(
                f"{entry.where}: event {event} is in split {entry.split!r} here and in "
                f"{first[0]!r} at {first[1]}: an event belongs to one split"
            )
        rows.append((event, starts[entry.window], entry.split))
    order = {str(e): i for i, e in enumerate(events["id"])}
    rows.sort(key=lambda r: (order[r[0]], r[1]))
    return pd.DataFrame(
        {
            "event_id": [r[0] for r in rows],
            "window_start": np.array([r[1] for r in rows], dtype=np.int64),
            "input_frames": spec.input_frames,
            "output_frames": spec.output_frames,
            "split": [r[2] for r in rows],
        },
        columns=list(WINDOW_COLUMNS),
    )


def _match(entry: WindowEntry, lookup: dict[tuple[str, int], str], starts: Sequence[int]) -> str:
    if entry.img_type != KEY_MODALITY:
        raise StormFusionError(
            f"{entry.where}: img_type {entry.img_type!r}: windows are named by their "
            f"{KEY_MODALITY} file"
        )
    event = lookup.get((entry.file_name, entry.file_index))
    if event is None:
        raise StormFusionError(
            f"{entry.where}: no selected event has {entry.img_type} file {entry.file_name} at "
            f"file_index {entry.file_index} (unknown to the catalog, or dropped by the selection)"
        )
    if entry.window >= len(starts):
        raise StormFusionError(
            f"{entry.where}: window {entry.window} does not exist: an event has "
            f"{len(starts)} windows (0 to {len(starts) - 1}) at these frames and stride"
        )
    return event


def windows_from_lists(
    events: pd.DataFrame, lists: Sequence[tuple[str, str]], spec: WindowSpec
) -> pd.DataFrame:
    """Exactly the windows of the ``(split, path)`` lists (see the module docstring)."""
    if not lists:
        raise StormFusionError("split strategy 'window_list' needs at least one --window-list")
    names = [split for split, _ in lists]
    twice = sorted({s for s in names if names.count(s) > 1})
    if twice:
        raise StormFusionError(f"--window-list: split(s) {', '.join(twice)} given twice")
    entries = [e for split, path in lists for e in parse_window_list(path, split)]
    return windows_from_entries(events, entries, spec)


def windows_from_manifest(
    events: pd.DataFrame, manifest_json: str | os.PathLike[str], spec: WindowSpec
) -> pd.DataFrame:
    """Exactly the windows of an earlier run's manifest (its digest checked first)."""
    _, table = read_window_manifest(manifest_json)
    csv_path = manifest_paths(manifest_json)[0]
    starts = spec.starts()
    entries = []
    columns = [table[c].tolist() for c in MANIFEST_COLUMNS[:-1]]
    for row, (img_type, file_name, file_index, window, start, split) in enumerate(
        zip(*columns, strict=True), start=2
    ):
        where = f"{csv_path}:{row}"
        if window < len(starts) and starts[window] != start:
            raise StormFusionError(
                f"{where}: window {window} starts at frame {start} in the manifest "
                f"but at frame {starts[window]} with stride {spec.stride}"
            )
        entries.append(
            WindowEntry(
                where, str(img_type), str(file_name), int(file_index), int(window), str(split)
            )
        )
    return windows_from_entries(events, entries, spec)
