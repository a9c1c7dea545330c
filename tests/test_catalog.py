"""CATALOG.csv parsing (faithful dtypes, clear errors naming the file, line and value)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stormfusion.data.catalog import (
    check_file_name,
    parse_minute_offsets,
    raw_path,
    read_catalog,
)
from stormfusion.data.sevir import CATALOG_COLUMNS
from stormfusion.errors import StormFusionError

OFFSETS = ":".join(str(o) for o in range(-120, 121, 5))
ROWS = [
    # a storm event (two sensors) and a random event with empty episode/event/type
    [
        "S827433",
        "vil/2019/SEVIR_VIL_STORMEVENTS_2019_0701_1231.h5",
        3,
        "vil",
        "2019-07-02 20:05:00",
        OFFSETS,
        136851,
        827433,
        "Hail",
        33.1,
        -101.2,
        36.4,
        -96.9,
        "+proj=laea +lat_0=38 +lon_0=-98",
        384,
        384,
        384000,
        384000,
        0,
        254,
        0.0,
    ],
    [
        "S827433",
        "lght/2019/SEVIR_LGHT_ALLEVENTS_2019_0701_0801.h5",
        0,
        "lght",
        "2019-07-02 20:05:00",
        "",
        136851,
        827433,
        "Hail",
        33.1,
        -101.2,
        36.4,
        -96.9,
        "+proj=laea +lat_0=38 +lon_0=-98",
        48,
        48,
        384000,
        384000,
        0,
        12,
        0.0,
    ],
    [
        "R19070112345",
        "vil/2019/SEVIR_VIL_RANDOMEVENTS_2019_0501_0831.h5",
        0,
        "vil",
        "2019-07-01 12:34:00",
        OFFSETS,
        "",
        "",
        "",
        40.1,
        -90.2,
        43.4,
        -85.9,
        "+proj=laea +lat_0=38 +lon_0=-98",
        384,
        384,
        384000,
        384000,
        0,
        80,
        1.5,
    ],
]


def _write(path: Path, rows: list[list[object]], columns: list[str] | None = None) -> Path:
    pd.DataFrame(rows, columns=columns or list(CATALOG_COLUMNS)).to_csv(path, index=False)
    return path


def test_parse_faithfully(tmp_path: Path) -> None:
    cat = read_catalog(_write(tmp_path / "CATALOG.csv", ROWS))
    assert list(cat.columns) == list(CATALOG_COLUMNS)
    assert cat["id"].tolist() == ["S827433", "S827433", "R19070112345"]
    assert cat["file_index"].dtype == np.int64
    assert cat["time_utc"].iloc[0] == pd.Timestamp("2019-07-02 20:05:00")
    assert np.isnan(cat.loc[2, "episode_id"]) and np.isnan(cat.loc[2, "event_id"])
    assert pd.isna(cat.loc[2, "event_type"])
    assert cat.loc[0, "event_id"] == 827433.0 and cat["event_id"].dtype == np.float64
    assert cat.loc[1, "minute_offsets"] == ""
    assert parse_minute_offsets(cat.loc[0, "minute_offsets"]) == tuple(range(-120, 121, 5))
    assert cat.loc[2, "pct_missing"] == 1.5


def test_missing_column_named(tmp_path: Path) -> None:
    cols = [c for c in CATALOG_COLUMNS if c != "pct_missing"]
    rows = [r[:-1] for r in ROWS]
    message = r"CATALOG\.csv: catalog lacks column\(s\) pct_missing"
    with pytest.raises(StormFusionError, match=message):
        read_catalog(_write(tmp_path / "CATALOG.csv", rows, cols))


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("time_utc", "yesterday", r"line 3: time_utc 'yesterday' is not a time"),
        ("file_index", "x", r"line 3: file_index is not an integer"),
        ("img_type", "radar", r"line 3: unknown img_type 'radar'"),
        ("size_x", "big", r"line 3: size_x 'big' is not a number"),
    ],
)
def test_bad_values_named(tmp_path: Path, column: str, value: str, message: str) -> None:
    rows = [list(r) for r in ROWS]
    rows[1][CATALOG_COLUMNS.index(column)] = value
    with pytest.raises(StormFusionError, match=message):
        read_catalog(_write(tmp_path / "CATALOG.csv", rows))


def test_lightning_rows_may_lack_a_file_index(tmp_path: Path) -> None:
    rows = [list(r) for r in ROWS]
    rows[1][CATALOG_COLUMNS.index("file_index")] = ""  # the lght row
    assert read_catalog(_write(tmp_path / "CATALOG.csv", rows))["file_index"].tolist() == [3, -1, 0]
    rows[0][CATALOG_COLUMNS.index("file_index")] = ""  # a raster row: an error
    with pytest.raises(StormFusionError, match="line 2: file_index is not an integer"):
        read_catalog(_write(tmp_path / "CATALOG.csv", rows))


def test_unreadable_and_missing(tmp_path: Path) -> None:
    with pytest.raises(StormFusionError, match="catalog not found"):
        read_catalog(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(StormFusionError, match="not a readable CSV"):
        read_catalog(tmp_path / "empty.csv")


def test_minute_offsets_checked() -> None:
    assert parse_minute_offsets(OFFSETS.replace("-120", "-122"))[0] == -122
    with pytest.raises(StormFusionError, match="has 3 values, expected 49"):
        parse_minute_offsets("-5:0:5")
    with pytest.raises(StormFusionError, match="not colon-separated"):
        parse_minute_offsets("a:b")


def test_file_names_stay_inside_the_root(tmp_path: Path) -> None:
    assert raw_path(tmp_path, "vil/2019/x.h5") == tmp_path / "data" / "vil" / "2019" / "x.h5"
    for bad, why in [
        ("/etc/passwd", "absolute"),
        ("../secret.h5", "escapes"),
        ("vil/../../x.h5", "escapes"),
        ("C:\\x.h5", "absolute"),
        ("\\\\server\\x.h5", "absolute"),
    ]:
        with pytest.raises(StormFusionError, match=why):
            check_file_name(bad)
