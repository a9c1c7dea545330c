"""Event selection: rules, drop counts, the index columns and events.json."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from catalog_support import protocol_catalog

from stormfusion.cli import main
from stormfusion.data.catalog import read_catalog
from stormfusion.data.selection import (
    SelectionOptions,
    read_event_index,
    select_events,
)
from stormfusion.errors import StormFusionError


@pytest.fixture(scope="module")
def catalog(synthetic_archive: Path) -> pd.DataFrame:
    return read_catalog(synthetic_archive / "CATALOG.csv")


@pytest.fixture(scope="module")
def manifest(synthetic_archive: Path) -> dict:
    return json.loads((synthetic_archive / "synthetic_manifest.json").read_text())


def test_default_index(event_index: Path, manifest: dict, catalog: pd.DataFrame) -> None:
    index = read_event_index(event_index)
    meta = json.loads((event_index.parent / "events.json").read_text())
    assert list(index.columns[:6]) == [
        "id",
        "time_utc",
        "event_type",
        "episode_id",
        "event_id",
        "kind",
    ]
    for m in ("vil", "ir069", "ir107", "lght"):
        assert [f"{m}_file", f"{m}_index", f"{m}_size"] == [
            c for c in index.columns if c.startswith(f"{m}_")
        ]
    assert (index["kind"] == "storm").all()
    assert manifest["duplicated_id"] not in set(index["id"])
    assert not set(manifest["missing_ids"]) & set(index["id"])
    assert len(index) == 6 - 2
    assert index["time_utc"].is_monotonic_increasing
    assert (index["lght_index"] == -1).all()
    assert index["vil_size"].eq(32).all() and index["ir069_size"].eq(16).all()
    assert index["lght_size"].eq(4).all()
    for row in index.itertuples():  # the catalog's file_name and file_index, verbatim
        vil = catalog[(catalog["id"] == row.id) & (catalog["img_type"] == "vil")].iloc[0]
        assert row.vil_file == vil["file_name"] and row.vil_index == vil["file_index"]
        assert row.event_id == int(row.id[1:])
    assert meta["dropped"]["duplicate_rows"] == 1
    assert meta["dropped"]["pct_missing"] == 1
    assert meta["dropped"]["kind"] == 2
    assert meta["n_events"] == 4 and meta["selection"]["kind"] == "storm"
    assert len(meta["catalog_sha256"]) == 64 and len(meta["data_fingerprint"]) == 12


def test_filters(catalog: pd.DataFrame) -> None:
    every, drops = select_events(catalog, SelectionOptions(kind="all", require_complete=False))
    assert len(every) == 8 - 1 and drops["duplicate_rows"] == 1
    randoms, _ = select_events(catalog, SelectionOptions(kind="random"))
    assert len(randoms) == 2 and (randoms["event_type"] == "").all()
    assert randoms["episode_id"].isna().all()
    first, drops = select_events(
        catalog, SelectionOptions(kind="all", start="2019-01-01", end="2019-06-01")
    )
    assert ((first["time_utc"] >= "2019-01-01") & (first["time_utc"] < "2019-06-01")).all()
    assert drops["date"] > 0
    y2018, _ = select_events(catalog, SelectionOptions(kind="all", years=(2018,)))
    assert (y2018["time_utc"].dt.year == 2018).all() and len(y2018) > 0
    some_type = every.loc[every["kind"] == "storm", "event_type"].iloc[0]
    typed, drops = select_events(catalog, SelectionOptions(kind="all", event_types=(some_type,)))
    assert set(typed["event_type"]) == {some_type} and drops["event_type"] > 0


def test_max_events_is_a_seeded_choice(catalog: pd.DataFrame) -> None:
    pick = [
        select_events(catalog, SelectionOptions(kind="all", max_events=3, seed=s))[0]
        for s in (0, 0, 1, 2, 3)
    ]
    assert all(len(p) == 3 for p in pick)
    assert pick[0]["id"].tolist() == pick[1]["id"].tolist()
    assert len({tuple(p["id"]) for p in pick}) > 1


def test_missing_required_modality(catalog: pd.DataFrame) -> None:
    no_ir = catalog[~((catalog["img_type"] == "ir069") & catalog["id"].str.startswith("R"))]
    index, drops = select_events(no_ir, SelectionOptions(kind="random"))
    assert index.empty and drops["missing_modality"] == 2
    # not requested: kept, and the index has no columns for it (nothing downloads it)
    index, _ = select_events(no_ir, SelectionOptions(kind="random", modalities=("vil",)))
    assert len(index) == 2
    assert [c for c in index.columns if c.endswith("_file")] == ["vil_file"]
    vis, drops = select_events(catalog, SelectionOptions(modalities=("vil", "vis")))
    assert vis.empty and "vis_file" in vis.columns and drops["missing_modality"] > 0


def _official_keep(catalog: pd.DataFrame, types: set[str], complete: bool) -> set[str]:
    """The published readers' rule, restated: filter rows on pct_missing == 0, keep the rows
    of the requested img_types, then ids having every type and exactly len(types) rows."""
    rows = catalog[catalog["pct_missing"] == 0] if complete else catalog
    rows = rows[rows["img_type"].isin(types)]
    kept = set()
    for event_id, group in rows.groupby("id"):
        if types <= set(group["img_type"]) and len(group) == len(types):
            kept.add(str(event_id))
    return kept


@pytest.mark.parametrize(
    ("types", "complete"),
    [({"vil"}, True), ({"vil"}, False), ({"vil", "vis"}, True), ({"vil", "ir107"}, True)],
)
def test_duplicates_and_missing_pixels_follow_the_official_rule(
    tmp_path: Path, types: set[str], complete: bool
) -> None:
    path = protocol_catalog().write(tmp_path / "CATALOG.csv")
    catalog = read_catalog(path)
    options = SelectionOptions(kind="all", modalities=tuple(types), require_complete=complete)
    index, drops = select_events(catalog, options)
    assert set(index["id"]) == _official_keep(pd.read_csv(path), types, complete)
    assert sum(drops.values()) == catalog["id"].nunique() - len(index)
    assert sorted(c for c in index.columns if c.endswith("_file")) == sorted(
        f"{m}_file" for m in types
    )


def test_duplicate_rule_counts_only_the_requested_types(tmp_path: Path) -> None:
    catalog = read_catalog(protocol_catalog().write(tmp_path / "CATALOG.csv"))
    vil_only = SelectionOptions(kind="all", modalities=("vil",))
    index, drops = select_events(catalog, vil_only)
    ids = set(index["id"])
    assert "S900001" in ids  # its vis row is duplicated: irrelevant to a VIL-only request
    assert "R18032505027684" not in ids  # two vil rows: dropped, never one picked
    assert drops == {
        "kind": 0,
        "date": 0,
        "event_type": 0,
        "missing_modality": 1,  # S900004 has no vil row
        "pct_missing": 2,  # S900003, R19010100000001
        "duplicate_rows": 1,  # R18032505027684
        "max_events": 0,
    }
    # S900002: two vil rows, one with missing pixels; the complete one (index 7) is used
    row = index.set_index("id").loc["S900002"]
    assert row["vil_index"] == 7
    # with vis requested too, S900001's duplicated vis rows drop it
    both, drops = select_events(catalog, SelectionOptions(kind="all", modalities=("vil", "vis")))
    assert "S900001" not in set(both["id"]) and drops["duplicate_rows"] == 1
    # without the completeness filter S900002 has two counted vil rows: dropped
    loose, _ = select_events(
        catalog, SelectionOptions(kind="all", modalities=("vil",), require_complete=False)
    )
    assert "S900002" not in set(loose["id"]) and "S900003" in set(loose["id"])


def test_path_escape_refused_naming_the_row(catalog: pd.DataFrame) -> None:
    bad = catalog.copy()
    bad.loc[5, "file_name"] = "../../outside.h5"
    message = r"line 7 \(id .*\): file_name '../../outside.h5' escapes"
    with pytest.raises(StormFusionError, match=message):
        select_events(bad, SelectionOptions(), source="CATALOG.csv")
    bad.loc[5, "file_name"] = "/abs/x.h5"
    with pytest.raises(StormFusionError, match="is an absolute path"):
        select_events(bad, SelectionOptions())


def test_bad_options(catalog: pd.DataFrame) -> None:
    with pytest.raises(StormFusionError, match="--start '2019-13-01' is not a date"):
        select_events(catalog, SelectionOptions(start="2019-13-01"))
    with pytest.raises(StormFusionError, match="is not before"):
        select_events(catalog, SelectionOptions(start="2019-06-01", end="2019-01-01"))
    with pytest.raises(StormFusionError, match="unknown modality 'radar'"):
        select_events(catalog, SelectionOptions(modalities=("radar",)))


def test_cli_exact_rule_command_and_empty_selection(
    synthetic_archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, meta = tmp_path / "events.csv", tmp_path / "events.json"
    paths = [
        "--catalog",
        str(synthetic_archive / "CATALOG.csv"),
        "--data-root",
        str(synthetic_archive),
        "--out",
        str(out),
        "--meta",
        str(meta),
    ]
    base = [
        "select-events",
        *paths,
        *["--kind", "all", "--seed", "0", "--modalities", "vil", "ir069", "ir107", "lght"],
    ]
    types = [
        "Hail",
        "Tornado",
        "Heavy Rain",
        "Thunderstorm Wind",
        "Flash Flood",
        "Lightning",
        "Funnel Cloud",
        "Flood",
    ]
    filters = ["--years", "2018", "2019", "--start", "2018-01-01", "--end", "2020-01-01"]
    limits = ["--max-events", "50", "--allow-missing-pixels"]
    assert main([*base, *filters, "--event-types", *types, *limits]) == 0
    index = read_event_index(out)
    assert len(index) == 6 - 1  # storm events only (types given), duplicate dropped
    first = json.loads(meta.read_text())
    assert main(base) == 0
    assert json.loads(meta.read_text())["data_fingerprint"] != first["data_fingerprint"]
    out.unlink()
    assert main([*base, "--end", "2000-01-01"]) == 2
    assert "no event passes the selection" in capsys.readouterr().err
    assert not out.exists()
