"""SEVIR's CATALOG.csv, parsed faithfully.

One row per (event, sensor), 21 columns (see :data:`stormfusion.data.sevir.CATALOG_COLUMNS`).
Facts the parser relies on:

- ``id`` is ``S<NWS event id>`` for storm events and ``R<digits>`` for random events; random
  events have empty ``episode_id``, ``event_id`` and ``event_type`` (read as NaN, so the two
  id columns are float);
- ``file_name`` is relative to the bucket's ``data/`` prefix, i.e. the file lives at
  ``<data root>/data/<file_name>`` (:func:`raw_path`); ``file_index`` is the event's position
  in a raster file (unused for ``lght``, whose datasets are keyed by id);
- ``minute_offsets`` holds 49 colon-separated minute offsets (empty for ``lght``);
- some (id, img_type) pairs occur twice (the archive's known defect; see
  :mod:`stormfusion.data.selection`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path, PurePosixPath

import pandas as pd

from stormfusion.data.sevir import CATALOG_COLUMNS, MODALITIES, N_FRAMES
from stormfusion.errors import StormFusionError
from stormfusion.io import sha256_file

logger = logging.getLogger(__name__)

#: Prefix under the data root that the catalog's ``file_name`` is relative to.
DATA_PREFIX = "data"

#: Columns read as text, as integers or as times; every other catalog column is a number.
_TEXT_COLUMNS = ("id", "file_name", "img_type", "minute_offsets", "event_type", "proj")
_FLOAT_COLUMNS = tuple(
    c for c in CATALOG_COLUMNS if c not in (*_TEXT_COLUMNS, "file_index", "time_utc")
)


def _csv_line(index: int) -> int:
    """Line number in the CSV file of DataFrame row ``index`` (line 1 is the header)."""
    return int(index) + 2


def read_catalog(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and check CATALOG.csv.

    Returns:
        A DataFrame with the 21 columns in order: ``id``, ``file_name``, ``img_type``,
        ``minute_offsets``, ``proj`` and ``event_type`` as str (``event_type`` NaN for random
        events, ``file_name`` and ``minute_offsets`` "" where empty), ``file_index`` int64,
        ``time_utc`` datetime64 (UTC-naive), the other columns float64.

    Raises:
        StormFusionError: file missing or unreadable, a column missing, an unknown
            ``img_type``, or a value that does not parse (naming the line).
    """
    p = Path(path)
    if not p.is_file():
        raise StormFusionError(f"{p}: catalog not found")
    try:
        df = pd.read_csv(
            p,
            dtype=dict.fromkeys(_TEXT_COLUMNS, str),
            keep_default_na=True,
            low_memory=False,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise StormFusionError(f"{p}: not a readable CSV catalog: {exc}") from None
    missing = [c for c in CATALOG_COLUMNS if c not in df.columns]
    if missing:
        raise StormFusionError(
            f"{p}: catalog lacks column(s) {', '.join(missing)} "
            f"(expected the 21 SEVIR columns {', '.join(CATALOG_COLUMNS)})"
        )
    df = df.loc[:, list(CATALOG_COLUMNS)].copy()
    if df["id"].isna().any():
        line = _csv_line(df.index[df["id"].isna()][0])
        raise StormFusionError(f"{p}: line {line}: empty id")
    unknown = ~df["img_type"].isin(list(MODALITIES))
    if unknown.any():
        line = _csv_line(df.index[unknown][0])
        raise StormFusionError(
            f"{p}: line {line}: unknown img_type {df.loc[unknown, 'img_type'].iloc[0]!r}; "
            f"expected one of {', '.join(MODALITIES)}"
        )
    return _parse_values(df, p)


def _parse_values(df: pd.DataFrame, p: Path) -> pd.DataFrame:
    """Typed columns of a catalog read as text (see :func:`read_catalog`), naming bad lines."""
    df["file_name"] = df["file_name"].fillna("")
    df["minute_offsets"] = df["minute_offsets"].fillna("")
    index = pd.to_numeric(df["file_index"], errors="coerce")
    # lightning datasets are keyed by id: an empty file_index there is harmless (-1)
    index = index.mask(index.isna() & df["file_index"].isna() & (df["img_type"] == "lght"), -1)
    if index.isna().any():
        line = _csv_line(df.index[index.isna()][0])
        raise StormFusionError(f"{p}: line {line}: file_index is not an integer")
    df["file_index"] = index.astype("int64")
    times = pd.to_datetime(df["time_utc"], errors="coerce", utc=True)
    if times.isna().any():
        line = _csv_line(df.index[times.isna()][0])
        raise StormFusionError(
            f"{p}: line {line}: time_utc {df['time_utc'][times.isna()].iloc[0]!r} is not a time"
        )
    df["time_utc"] = times.dt.tz_localize(None)
    for col in _FLOAT_COLUMNS:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna()
        if bad.any():
            line = _csv_line(df.index[bad][0])
            raise StormFusionError(
                f"{p}: line {line}: {col} {df.loc[bad, col].iloc[0]!r} is not a number"
            )
        df[col] = values.astype("float64")
    return df


def parse_minute_offsets(text: str) -> tuple[int, ...]:
    """The 49 minute offsets of a raster row, e.g. ``"-120:-115:...:120"``."""
    try:
        offsets = tuple(int(float(v)) for v in str(text).split(":"))
    except ValueError:
        raise StormFusionError(f"minute_offsets {text!r} is not colon-separated numbers") from None
    if len(offsets) != N_FRAMES:
        raise StormFusionError(
            f"minute_offsets {text!r} has {len(offsets)} values, expected {N_FRAMES}"
        )
    return offsets


def check_file_name(file_name: str, where: str = "catalog") -> PurePosixPath:
    """The catalog ``file_name`` as a relative path that stays inside the data root.

    Raises:
        StormFusionError: absolute paths and paths with ``..`` (naming ``where``).
    """
    rel = PurePosixPath(file_name.replace("\\", "/"))
    if (
        rel.is_absolute()
        or file_name.startswith(("/", "\\"))
        or (len(file_name) > 1 and file_name[1] == ":")
    ):
        raise StormFusionError(f"{where}: file_name {file_name!r} is an absolute path")
    if ".." in rel.parts:
        raise StormFusionError(f"{where}: file_name {file_name!r} escapes the data root")
    if not file_name:
        raise StormFusionError(f"{where}: empty file_name")
    return rel


def raw_path(data_root: str | os.PathLike[str], file_name: str) -> Path:
    """Where a catalog ``file_name`` lives: ``<data_root>/data/<file_name>``."""
    return Path(data_root) / DATA_PREFIX / check_file_name(file_name)


def check_file_names(catalog: pd.DataFrame, source: str | os.PathLike[str]) -> None:
    """Refuse any row whose ``file_name`` is absolute or escapes the data root."""
    names = catalog["file_name"].astype(str)
    suspicious = (
        names.str.startswith(("/", "\\"))
        | names.str.match(r"^[A-Za-z]:")
        | names.str.contains(r"(?:^|[/\\])\.\.(?:[/\\]|$)", regex=True)
    )
    if suspicious.any():
        idx = catalog.index[suspicious][0]
        row = catalog.loc[idx]
        check_file_name(
            str(row["file_name"]),
            where=f"{source}: line {_csv_line(idx)} (id {row['id']}, {row['img_type']})",
        )


def catalog_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of the catalog file's bytes."""
    return sha256_file(path)
