"""Event selection: from CATALOG.csv to the event index every later stage reads.

The rules reproduce the official SEVIR readers (the dataset's own generator, and Earthformer's
loader that the published benchmark uses), stated here as the code applies them:

1. any catalog row whose ``file_name`` is absolute or contains ``..`` is refused (error);
2. ``kind``: storm (``S`` ids), random (``R`` ids) or all;
3. ``date``: ``years`` (of ``time_utc``), ``start`` (``time_utc >= start``) and ``end``
   (``time_utc < end``);
4. ``event_type``: NWS types to keep (random events have none and are dropped by it);
5. per requested modality (img_type), the event's catalog rows are counted: all rows, and
   with ``require_complete`` only those with ``pct_missing == 0`` (a missing value is not
   0). An event is kept when every requested modality has exactly one counted row. This is
   the official rule: rows are first filtered on ``pct_missing == 0``, then an id is kept
   if it has every requested img_type and its number of rows among the REQUESTED img_types
   equals the number of requested types. So a duplicate row of a modality that was not
   requested (e.g. ``vis`` in a VIL-only selection) does not matter, and a duplicated
   requested row whose twin has ``pct_missing > 0`` leaves one counted row and is kept.
   Drops are counted as ``missing_modality`` (a requested modality has no row at all),
   else ``pct_missing`` (no complete row), else ``duplicate_rows`` (two or more counted
   rows: the reader never silently picks one);
6. ``max_events``: a seeded choice without replacement (``numpy.random.default_rng(seed)``).

The index is sorted by ``time_utc`` then ``id``. Columns: ``id, time_utc, event_type,
episode_id, event_id, kind`` and for each requested modality ``m`` (in the order ``vil, ir069,
ir107, lght, vis``): ``m_file`` (the catalog's ``file_name``, relative to
``<data root>/data``; resolve it with :func:`stormfusion.data.catalog.raw_path`),
``m_index`` (the catalog's ``file_index``; -1 for lightning, whose datasets are keyed by id)
and ``m_size`` (the catalog's ``size_x``). Modalities that were not requested have no
columns, so nothing downstream (download, conversion) touches their files.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stormfusion.data.catalog import catalog_sha256, check_file_names, read_catalog
from stormfusion.data.event_index import fingerprint_with_raw, raw_identity
from stormfusion.data.sevir import MODALITIES, STUDY_MODALITIES
from stormfusion.errors import StormFusionError
from stormfusion.io import atomic_path, write_json_atomic
from stormfusion.provenance import stable_hash

logger = logging.getLogger(__name__)

KINDS = ("storm", "random", "all")
#: Drop reasons, in the order the rules apply.
DROP_REASONS = (
    "kind",
    "date",
    "event_type",
    "missing_modality",
    "pct_missing",
    "duplicate_rows",
    "max_events",
)
BASE_COLUMNS = ("id", "time_utc", "event_type", "episode_id", "event_id", "kind")


@dataclass(frozen=True)
class SelectionOptions:
    """What to select (recorded in ``events.json``)."""

    kind: str = "storm"
    modalities: tuple[str, ...] = STUDY_MODALITIES
    years: tuple[int, ...] | None = None
    start: str | None = None
    end: str | None = None
    event_types: tuple[str, ...] | None = None
    require_complete: bool = True
    max_events: int | None = None
    seed: int = 0

    def date(self, name: str) -> pd.Timestamp | None:
        """``start`` or ``end`` as a timestamp (None when unset)."""
        value = getattr(self, name)
        if value is None:
            return None
        try:
            return pd.Timestamp(dt.date.fromisoformat(value))
        except ValueError:
            raise StormFusionError(f"--{name} {value!r} is not a date (YYYY-MM-DD)") from None

    def check(self) -> None:
        """Raise :class:`StormFusionError` for options that make no sense."""
        if self.kind not in KINDS:
            raise StormFusionError(f"--kind {self.kind!r}: expected one of {', '.join(KINDS)}")
        if not self.modalities:
            raise StormFusionError("--modalities: at least one modality is required")
        for m in self.modalities:
            if m not in MODALITIES:
                raise StormFusionError(
                    f"--modalities: unknown modality {m!r}; expected {', '.join(MODALITIES)}"
                )
        start, end = self.date("start"), self.date("end")
        if start is not None and end is not None and start >= end:
            raise StormFusionError(f"--start {self.start} is not before --end {self.end}")
        if self.max_events is not None and self.max_events < 1:
            raise StormFusionError(f"--max-events must be >= 1, got {self.max_events}")

    def record(self) -> dict[str, Any]:
        """The options as plain JSON values."""
        out = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def requested_modalities(required: Sequence[str]) -> tuple[str, ...]:
    """Modalities with columns in the index: the requested ones, in SEVIR's order."""
    return tuple(m for m in MODALITIES if m in set(required))


def _event_table(catalog: pd.DataFrame) -> pd.DataFrame:
    """One row of event-level fields per id (the event's first catalog row), plus ``kind``."""
    events = catalog.drop_duplicates(subset=["id"]).set_index("id")
    ids = events.index.to_series()
    events["kind"] = np.where(
        ids.str.startswith("S"), "storm", np.where(ids.str.startswith("R"), "random", "")
    )
    return events


def _event_filters(events: pd.DataFrame, options: SelectionOptions) -> dict[str, pd.Series]:
    """The event-level rules (kind, date, event type) as boolean masks by id, in order."""
    masks = {
        "kind": events["kind"].isin(
            ["storm", "random"] if options.kind == "all" else [options.kind]
        )
    }
    times = events["time_utc"]
    date_ok = pd.Series(True, index=events.index)
    if options.years:
        date_ok &= times.dt.year.isin(list(options.years))
    start, end = options.date("start"), options.date("end")
    if start is not None:
        date_ok &= times >= start
    if end is not None:
        date_ok &= times < end
    masks["date"] = date_ok
    if options.event_types:
        masks["event_type"] = events["event_type"].isin(list(options.event_types))
    return masks


def _row_counts(
    catalog: pd.DataFrame, options: SelectionOptions, ids: pd.Index
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Catalog rows per (id, requested modality): all of them, and the counted ones.

    Returns:
        Two (len(ids), n_modalities) integer tables indexed by id: every row, and the rows
        that count (``pct_missing == 0`` with ``require_complete``, else every row).
    """
    requested = list(requested_modalities(options.modalities))
    rows = catalog[catalog["img_type"].isin(requested)]
    counted = rows[rows["pct_missing"] == 0.0] if options.require_complete else rows

    def table(frame: pd.DataFrame) -> pd.DataFrame:
        counts = frame.groupby(["id", "img_type"]).size().unstack(fill_value=0)
        return counts.reindex(index=ids, columns=requested, fill_value=0).astype("int64")

    return table(rows), table(counted)


def _modality_rows(
    catalog: pd.DataFrame, options: SelectionOptions, chosen: pd.Index
) -> dict[str, pd.DataFrame]:
    """For each requested modality, the one counted catalog row of every chosen id."""
    present = {}
    for m in requested_modalities(options.modalities):
        rows = catalog[(catalog["img_type"] == m) & catalog["id"].isin(chosen)]
        if options.require_complete:
            rows = rows[rows["pct_missing"] == 0.0]
        present[m] = rows.set_index("id").reindex(chosen)
    return present


def select_events(
    catalog: pd.DataFrame, options: SelectionOptions, source: str = "catalog"
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Apply the selection rules to a parsed catalog.

    Args:
        catalog: from :func:`stormfusion.data.catalog.read_catalog`.
        options: the filters.
        source: name of the catalog file, for error messages.

    Returns:
        The event index (see the module docstring) and the count of dropped events by
        reason (every reason present, 0 where nothing was dropped).
    """
    options.check()
    check_file_names(catalog, source)
    drops = dict.fromkeys(DROP_REASONS, 0)
    events = _event_table(catalog)
    keep = pd.Series(True, index=events.index)

    def apply(reason: str, mask: pd.Series) -> None:
        nonlocal keep
        drops[reason] = int((keep & ~mask).sum())
        keep = keep & mask

    for reason, mask in _event_filters(events, options).items():
        apply(reason, mask)
    every, counted = _row_counts(catalog, options, events.index)
    apply("missing_modality", (every > 0).all(axis=1))
    apply("pct_missing", (counted > 0).all(axis=1))
    apply("duplicate_rows", (counted == 1).all(axis=1))
    if drops["duplicate_rows"]:
        logger.warning(
            "%s: dropping %d event(s) with two or more rows of a requested img_type",
            source,
            drops["duplicate_rows"],
        )

    chosen = events.index[keep.to_numpy()]
    if options.max_events is not None and len(chosen) > options.max_events:
        order = np.sort(chosen.to_numpy(dtype=str))
        rng = np.random.default_rng(options.seed)
        picked = set(rng.choice(order, size=options.max_events, replace=False))
        drops["max_events"] = len(chosen) - options.max_events
        chosen = pd.Index([i for i in chosen if i in picked], name="id")
    return _index_table(events.loc[chosen], _modality_rows(catalog, options, chosen)), drops


def _index_table(sel: pd.DataFrame, present: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The event index of the chosen events ``sel`` and their modality rows ``present``."""
    index = pd.DataFrame(
        {
            "id": sel.index.astype(str),
            "time_utc": sel["time_utc"].to_numpy(),
            "event_type": sel["event_type"].fillna("").to_numpy(),
            "episode_id": sel["episode_id"].round().astype("Int64").reset_index(drop=True),
            "event_id": sel["event_id"].round().astype("Int64").reset_index(drop=True),
            "kind": sel["kind"].to_numpy(),
        }
    )
    for m, info in present.items():
        index[f"{m}_file"] = info["file_name"].astype(str).to_numpy()
        file_index = info["file_index"].astype("int64").to_numpy()
        index[f"{m}_index"] = file_index if MODALITIES[m].raster else -1
        index[f"{m}_size"] = info["size_x"].fillna(-1).astype("int64").to_numpy()
    return index.sort_values(["time_utc", "id"], kind="stable").reset_index(drop=True)


def write_event_index(
    index: pd.DataFrame,
    drops: dict[str, int],
    options: SelectionOptions,
    catalog_path: str | os.PathLike[str],
    out_csv: str | os.PathLike[str],
    out_json: str | os.PathLike[str],
) -> dict[str, Any]:
    """Write ``events.csv`` and ``events.json`` (atomically) and return the metadata."""
    sha = catalog_sha256(catalog_path)
    stamps = pd.to_datetime(index["time_utc"]).dt.strftime("%Y-%m-%dT%H:%M:%S")
    listing = [[str(i), str(t)] for i, t in zip(index["id"], stamps, strict=True)]
    meta: dict[str, Any] = {
        "catalog": str(catalog_path),
        "catalog_sha256": sha,
        "selection": options.record(),
        "dropped": drops,
        "n_events": len(index),
        "n_storm": int((index["kind"] == "storm").sum()),
        "n_random": int((index["kind"] == "random").sum()),
        "modalities": list(requested_modalities(options.modalities)),
        "data_fingerprint": stable_hash({"catalog_sha256": sha, "events": listing}),
    }
    out = index.copy()
    out["time_utc"] = pd.to_datetime(out["time_utc"]).dt.strftime("%Y-%m-%d %H:%M:%S")
    with atomic_path(out_csv) as tmp:
        out.to_csv(tmp, index=False)
    write_json_atomic(out_json, meta)
    return meta


def read_event_index(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read ``events.csv`` back with the dtypes :func:`select_events` produced."""
    p = Path(path)
    if not p.is_file():
        raise StormFusionError(f"{p}: event index not found")
    df = pd.read_csv(p, dtype={"id": str, "event_type": str, "kind": str}, keep_default_na=False)
    missing = [c for c in BASE_COLUMNS if c not in df.columns]
    if missing:
        raise StormFusionError(f"{p}: event index lacks column(s) {', '.join(missing)}")
    df["time_utc"] = pd.to_datetime(df["time_utc"])
    for col in ("episode_id", "event_id"):
        df[col] = pd.to_numeric(df[col].replace("", np.nan)).astype("Int64")
    for col in df.columns:
        if col.endswith("_file"):
            df[col] = df[col].astype(str)
    return df


def run_selection(
    catalog_path: str | os.PathLike[str],
    options: SelectionOptions,
    out_csv: str | os.PathLike[str],
    out_json: str | os.PathLike[str],
    data_root: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Read the catalog, select, write the index and its metadata; return the metadata.

    ``data_root`` is recorded; file names are checked against escaping it (they are
    resolved as ``<data_root>/data/<file_name>`` by the readers), and the data fingerprint
    then also covers the selected raw files' identity (``event_index.raw_identity``).
    """
    catalog = read_catalog(catalog_path)
    index, drops = select_events(catalog, options, source=str(catalog_path))
    if index.empty:
        raise StormFusionError(
            f"{catalog_path}: no event passes the selection (dropped: "
            + ", ".join(f"{k}={v}" for k, v in drops.items() if v)
            + ")"
        )
    meta = write_event_index(index, drops, options, catalog_path, out_csv, out_json)
    if data_root is not None:
        files = [f for m in options.modalities if f"{m}_file" in index for f in index[f"{m}_file"]]
        meta["raw_files"] = raw_identity(data_root, [f for f in files if f])
        meta["data_fingerprint"] = fingerprint_with_raw(meta["data_fingerprint"], meta["raw_files"])
        meta["data_root"] = str(data_root)
        write_json_atomic(out_json, meta)
    logger.info(
        "selected %d events (%d storm, %d random); dropped %s",
        meta["n_events"],
        meta["n_storm"],
        meta["n_random"],
        {k: v for k, v in drops.items() if v},
    )
    return meta
