"""Event selection: from CATALOG.csv to the event index every later stage reads.

Rules, applied in this order (each drop is counted by reason in ``events.json``):

1. any catalog row whose ``file_name`` is absolute or contains ``..`` is refused (error);
2. ``duplicate_rows``: ids with a repeated (id, img_type) row are dropped whole, as the
   official SEVIR reader does (never silently pick one of the rows);
3. ``kind``: storm (``S`` ids), random (``R`` ids) or all;
4. ``date``: ``years`` (of ``time_utc``), ``start`` (``time_utc >= start``) and ``end``
   (``time_utc < end``);
5. ``event_type``: NWS types to keep (random events have none and are dropped by it);
6. ``missing_modality``: every required modality needs a catalog row;
7. ``pct_missing``: with ``require_complete`` every required modality has ``pct_missing == 0``;
8. ``max_events``: a seeded choice without replacement (``numpy.random.default_rng(seed)``).

The index is sorted by ``time_utc`` then ``id``. Columns: ``id, time_utc, event_type,
episode_id, event_id, kind`` and for each modality ``m`` of the study (vil, ir069, ir107,
lght) plus any other required one: ``m_file`` (the catalog's ``file_name``, relative to
``<data root>/data``; resolve it with :func:`stormfusion.data.catalog.raw_path`), ``m_index``
(the catalog's ``file_index``; -1 for lightning, whose datasets are keyed by id) and
``m_size`` (the catalog's ``size_x``). A modality that is not required and absent for an
event has ``m_file`` "" and ``m_index`` and ``m_size`` -1.
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
    "duplicate_rows",
    "kind",
    "date",
    "event_type",
    "missing_modality",
    "pct_missing",
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


def index_modalities(required: Sequence[str]) -> tuple[str, ...]:
    """Modalities with columns in the index: the study's four, then other required ones."""
    return (*STUDY_MODALITIES, *(m for m in required if m not in STUDY_MODALITIES))


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

    dup_mask = catalog.duplicated(subset=["id", "img_type"], keep=False)
    dup_ids = set(catalog.loc[dup_mask, "id"])
    if dup_ids:
        logger.warning(
            "%s: dropping %d event(s) with a duplicated (id, img_type) row (%d rows)",
            source,
            len(dup_ids),
            int(dup_mask.sum()),
        )
    drops["duplicate_rows"] = len(dup_ids)
    cat = catalog[~catalog["id"].isin(dup_ids)]

    # one row of event-level fields per id (taken from the first row of the event)
    events = cat.drop_duplicates(subset=["id"]).set_index("id")
    keep = pd.Series(True, index=events.index)

    def apply(reason: str, mask: pd.Series) -> None:
        nonlocal keep
        dropped = keep & ~mask
        drops[reason] = int(dropped.sum())
        keep = keep & mask

    ids = events.index.to_series()
    kind = np.where(
        ids.str.startswith("S"), "storm", np.where(ids.str.startswith("R"), "random", "")
    )
    kind_s = pd.Series(kind, index=events.index)
    apply("kind", kind_s.isin(["storm", "random"] if options.kind == "all" else [options.kind]))

    times = events["time_utc"]
    date_ok = pd.Series(True, index=events.index)
    if options.years:
        date_ok &= times.dt.year.isin(list(options.years))
    start, end = options.date("start"), options.date("end")
    if start is not None:
        date_ok &= times >= start
    if end is not None:
        date_ok &= times < end
    apply("date", date_ok)

    if options.event_types:
        apply("event_type", events["event_type"].isin(list(options.event_types)))

    # each modality's catalog rows by id (ids are unique per img_type after the drop above)
    present = {
        m: cat[cat["img_type"] == m].set_index("id") for m in index_modalities(options.modalities)
    }
    has_all = pd.Series(True, index=events.index)
    for m in options.modalities:
        has_all &= events.index.isin(present[m].index)
    apply("missing_modality", has_all)

    if options.require_complete:
        complete = pd.Series(True, index=events.index)
        for m in options.modalities:
            pct = present[m]["pct_missing"].reindex(events.index)
            complete &= pct.fillna(0.0) == 0.0
        apply("pct_missing", complete)

    chosen = events.index[keep.to_numpy()]
    if options.max_events is not None and len(chosen) > options.max_events:
        order = np.sort(chosen.to_numpy(dtype=str))
        rng = np.random.default_rng(options.seed)
        picked = set(rng.choice(order, size=options.max_events, replace=False))
        drops["max_events"] = len(chosen) - options.max_events
        chosen = pd.Index([i for i in chosen if i in picked], name="id")

    sel = events.loc[chosen]
    index = pd.DataFrame(
        {
            "id": sel.index.astype(str),
            "time_utc": sel["time_utc"].to_numpy(),
            "event_type": sel["event_type"].fillna("").to_numpy(),
            "episode_id": sel["episode_id"].round().astype("Int64").reset_index(drop=True),
            "event_id": sel["event_id"].round().astype("Int64").reset_index(drop=True),
            "kind": kind_s.loc[chosen].to_numpy(),
        }
    )
    for m in index_modalities(options.modalities):
        info = present[m].reindex(sel.index)
        has = info["file_name"].notna().to_numpy()
        index[f"{m}_file"] = np.where(has, info["file_name"].fillna("").to_numpy(), "")
        file_index = info["file_index"].fillna(-1).astype("int64").to_numpy()
        index[f"{m}_index"] = -1 if not MODALITIES[m].raster else np.where(has, file_index, -1)
        index[f"{m}_size"] = np.where(has, info["size_x"].fillna(-1).to_numpy(), -1).astype("int64")
    index = index.sort_values(["time_utc", "id"], kind="stable").reset_index(drop=True)
    return index, drops


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
        "modalities": list(index_modalities(options.modalities)),
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
