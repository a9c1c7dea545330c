"""Splits by event and the windows cut from each event (stormfusion.data.splits, CLI split)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from catalog_support import CatalogBuilder

from stormfusion.cli import main
from stormfusion.data.event_index import read_event_index
from stormfusion.data.splits import (
    PRESETS,
    STRATEGIES,
    SplitOptions,
    WindowSpec,
    assign_splits,
    check_windows,
    make_windows,
    read_windows,
)
from stormfusion.errors import StormFusionError

REPO = Path(__file__).resolve().parents[1]

TRAIN_END = pd.Timestamp("2019-01-01 00:00:00")
VAL_END = pd.Timestamp("2019-06-01 00:00:00")


def _events(n: int, start: str = "2018-01-01", freq: str = "7D") -> pd.DataFrame:
    times = pd.date_range(start, periods=n, freq=freq)
    return pd.DataFrame({"id": [f"S{100000 + i}" for i in range(n)], "time_utc": times})


def test_sevir_preset_gives_the_published_three_windows() -> None:
    spec = PRESETS["sevir"]
    starts = spec.starts()
    assert starts == [0, 12, 24]
    windows = [
        (s, s + spec.input_frames, s + spec.input_frames + spec.output_frames) for s in starts
    ]
    # inputs [0:13], [12:25], [24:37] -> targets [13:25], [25:37], [37:49]
    assert windows == [(0, 13, 25), (12, 25, 37), (24, 37, 49)]


def test_seed_preset_and_custom_stride() -> None:
    assert (PRESETS["seed"].input_frames, PRESETS["seed"].output_frames) == (12, 6)
    assert PRESETS["seed"].starts() == [0, 12, 24]  # 36 + 18 = 54 > 49
    assert WindowSpec(12, 6, 6).starts() == [0, 6, 12, 18, 24, 30]
    assert WindowSpec(24, 25, 1).starts() == [0]


def test_window_longer_than_an_event_is_an_error() -> None:
    with pytest.raises(StormFusionError, match="50 is longer than an event's 49 frames"):
        WindowSpec(40, 10, 12).starts()


def test_random_split_is_by_event_and_deterministic() -> None:
    events = _events(541)
    opts = SplitOptions(seed=0, val_fraction=0.2)
    labels = assign_splits(events, "random", opts)
    # 541 events at 0.2: 432 / 109 (the seed's runs printed 438 / 103: seed_catalog)
    assert labels.value_counts().to_dict() == {"train": 432, "val": 109}
    assert labels.equals(assign_splits(events, "random", opts))
    # the row order of the index does not matter, the seed does
    shuffled = events.sample(frac=1.0, random_state=3)
    assert assign_splits(shuffled, "random", opts).sort_index().equals(labels.sort_index())
    other = assign_splits(events, "random", SplitOptions(seed=1, val_fraction=0.2))
    assert not other.sort_index().equals(labels.sort_index())
    windows = make_windows(events, labels, PRESETS["seed"])
    assert len(windows) == 3 * 541
    assert (windows.groupby("event_id")["split"].nunique() == 1).all()


def test_random_split_with_test_fraction() -> None:
    labels = assign_splits(
        _events(100), "random", SplitOptions(val_fraction=0.1, test_fraction=0.25)
    )
    assert labels.value_counts().to_dict() == {"train": 65, "test": 25, "val": 10}


def test_date_split_is_inclusive_on_the_earlier_side() -> None:
    events = _events(60, start="2018-10-01")
    on_cuts = pd.DataFrame(
        {
            "id": ["S1", "S2", "S3", "S4"],
            "time_utc": pd.to_datetime(
                [
                    "2019-01-01 00:00:00",
                    "2019-01-01 00:00:01",
                    "2019-06-01 00:00:00",
                    "2019-06-01 00:00:01",
                ]
            ),
        }
    )
    events = pd.concat([events, on_cuts], ignore_index=True)
    opts = SplitOptions(train_end="2019-01-01", val_end="2019-06-01")
    labels = assign_splits(events, "date", opts)
    # the published loaders: time_utc <= 2019-01-01 trains, <= 2019-06-01 validates
    expected = [
        "train" if t <= TRAIN_END else "val" if t <= VAL_END else "test" for t in events["time_utc"]
    ]
    assert labels.tolist() == expected
    assert labels[["S1", "S2", "S3", "S4"]].tolist() == ["train", "val", "val", "test"]


def test_date_split_with_equal_cuts_draws_validation_from_the_training_side() -> None:
    events = _events(80, start="2018-10-01")
    opts = SplitOptions(train_end="2019-06-01", val_end="2019-06-01", val_fraction=0.1, seed=3)
    labels = assign_splits(events, "date", opts)
    t = events.set_index("id")["time_utc"]
    before = t[t <= VAL_END].index
    assert (labels[t[t > VAL_END].index] == "test").all()
    assert set(labels[before]) == {"train", "val"}
    assert (labels[before] == "val").sum() == int(np.ceil(len(before) * 0.1))
    again = assign_splits(events.iloc[::-1], "date", opts)
    assert again.sort_index().equals(labels.sort_index())
    no_val = assign_splits(
        events, "date", SplitOptions(train_end="2019-06-01", val_end="2019-06-01", val_fraction=0.0)
    )
    assert set(no_val) == {"train", "test"}


def test_empty_split_is_an_error() -> None:
    with pytest.raises(StormFusionError, match="split 'train' is empty"):
        assign_splits(_events(1), "random", SplitOptions(val_fraction=0.2))
    early = _events(5, start="2017-01-01")
    with pytest.raises(StormFusionError, match="split 'val' is empty"):
        assign_splits(early, "date", SplitOptions())
    # val not asked for: no error for an empty val
    labels = assign_splits(_events(3), "random", SplitOptions(val_fraction=0.0))
    assert set(labels) == {"train"}


def test_split_cli_on_the_twin_index(event_index: Path, tmp_path: Path) -> None:
    out = tmp_path / "windows.csv"
    # the command line of workflow/rules (split_options), date strategy, sevir windows
    rc = main(
        [
            "split",
            "--events",
            str(event_index),
            "--strategy",
            "date",
            "--seed",
            "0",
            "--val-fraction",
            "0.2",
            "--test-fraction",
            "0.0",
            "--train-end",
            "2019-01-01",
            "--val-end",
            "2019-06-01",
            "--input-frames",
            "13",
            "--output-frames",
            "12",
            "--stride",
            "12",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    windows = read_windows(out)
    assert list(windows.columns) == [
        "event_id",
        "window_start",
        "input_frames",
        "output_frames",
        "split",
    ]
    index = read_event_index(event_index)
    assert windows["event_id"].drop_duplicates().tolist() == index["id"].tolist()
    assert sorted(set(windows["window_start"])) == [0, 12, 24]
    when = index.set_index("id")["time_utc"]
    for row in windows.itertuples():
        t = when[row.event_id]
        expected = "train" if t <= TRAIN_END else "val" if t <= VAL_END else "test"
        assert row.split == expected
    assert set(windows["split"]) == {"train", "val", "test"}


def test_split_cli_preset_and_errors(
    event_index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "w.csv"
    assert (
        main(
            [
                "split",
                "--events",
                str(event_index),
                "--preset",
                "sevir",
                "--output-frames",
                "6",
                "--val-fraction",
                "0.25",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    w = read_windows(out)
    assert set(w["input_frames"]) == {13} and set(w["output_frames"]) == {6}
    assert (
        main(
            [
                "split",
                "--events",
                str(event_index),
                "--input-frames",
                "30",
                "--output-frames",
                "20",
                "--out",
                str(tmp_path / "x.csv"),
            ]
        )
        == 2
    )
    assert "longer than an event's 49 frames" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_check_windows_refuses_an_event_in_two_splits() -> None:
    table = pd.DataFrame(
        {
            "event_id": ["S1", "S1"],
            "window_start": [0, 12],
            "input_frames": 12,
            "output_frames": 6,
            "split": ["train", "val"],
        }
    )
    with pytest.raises(StormFusionError, match="in two splits: S1"):
        check_windows(table)
    table["split"] = "train"
    table.loc[1, "window_start"] = 40
    with pytest.raises(StormFusionError, match="beyond an event's 49 frames"):
        check_windows(table)
    assert np.array_equal(check_windows(table.iloc[:1])["window_start"], [0])


def _seed_recipe(catalog_csv: Path) -> tuple[set[str], set[str]]:
    """The seed study's split, restated from its description: numpy's legacy RandomState(42)
    permutes the unique VIL ids of the whole catalog in pandas' unique() order; the first
    int(0.8 * n) are training ids, the rest validation ids."""
    catalog = pd.read_csv(catalog_csv, low_memory=False)
    ids = np.asarray(catalog[catalog["img_type"] == "vil"]["id"].unique(), dtype=object)
    permuted = np.random.RandomState(42).permutation(ids)
    n_train = int(0.8 * len(permuted))
    return set(permuted[:n_train]), set(permuted[n_train:])


def _seed_catalog(path: Path) -> Path:
    """52 unique VIL ids (0.8 * 52 = 41.6: int() and round() differ) in an unsorted order,
    other sensors' rows interleaved, one vil row duplicated, one id without vil."""
    b = CatalogBuilder()
    rng = np.random.default_rng(5)
    days = pd.Timestamp("2019-07-01") + pd.to_timedelta(rng.integers(0, 180, 52), unit="D")
    for k, day in enumerate(days):
        event = f"S{800000 + int(rng.integers(0, 99999))}{k:02d}" if k % 3 else f"R{190000 + k}"
        when = str(day + pd.Timedelta(minutes=int(rng.integers(0, 1440))))
        if k % 4 == 0:
            b.add(event, when, "ir107")  # an event's first row need not be its vil row
        b.add(event, when, "vil")
        if k == 7:
            b.add(event, when, "vil")  # duplicated: one id all the same
        if k % 4 == 1:
            b.add(event, when, "ir069")
    b.add("S999999", "2019-08-01 10:00:00", "ir107")  # no vil row
    return b.write(path)


def test_seed_catalog_split_follows_the_recipe(tmp_path: Path) -> None:
    path = _seed_catalog(tmp_path / "CATALOG.csv")
    train_ids, val_ids = _seed_recipe(path)
    assert len(train_ids) == 41 and len(val_ids) == 11
    catalog = pd.read_csv(path)
    vil = catalog[catalog["img_type"] == "vil"].drop_duplicates("id")
    events = pd.DataFrame({"id": vil["id"], "time_utc": pd.to_datetime(vil["time_utc"])})
    opts = SplitOptions(seed=42, val_fraction=0.2, catalog=str(path))
    labels = assign_splits(events, "seed_catalog", opts)
    assert set(labels[labels == "train"].index) == train_ids
    assert set(labels[labels == "val"].index) == val_ids
    # then filtered to the selected events: a subset keeps each event's label
    subset = events.iloc[::3]
    sub = assign_splits(subset, "seed_catalog", opts)
    assert sub.to_dict() == {e: "train" if e in train_ids else "val" for e in subset["id"]}


def test_seed_catalog_split_errors(tmp_path: Path) -> None:
    path = _seed_catalog(tmp_path / "CATALOG.csv")
    events = pd.DataFrame({"id": ["S999999"], "time_utc": pd.to_datetime(["2019-08-01"])})
    with pytest.raises(StormFusionError, match=r"have no vil row.*S999999"):
        assign_splits(events, "seed_catalog", SplitOptions(seed=42, catalog=str(path)))
    with pytest.raises(StormFusionError, match="needs the catalog"):
        assign_splits(events, "seed_catalog", SplitOptions(seed=42))
    with pytest.raises(StormFusionError, match="train and val only"):
        assign_splits(events, "seed_catalog", SplitOptions(catalog=str(path), test_fraction=0.1))


def test_split_strategies_are_one_registry() -> None:
    with pytest.raises(
        StormFusionError,
        match="unknown split strategy 'sideways'; valid names: "
        "date, manifest, random, seed_catalog, window_list",
    ):
        assign_splits(_events(5), "sideways", SplitOptions())
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    enum = schema["properties"]["split"]["properties"]["strategy"]["enum"]
    assert sorted(enum) == STRATEGIES.names()
