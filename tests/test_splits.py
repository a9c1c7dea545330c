"""Splits by event and the windows cut from each event (stormfusion.data.splits, CLI split)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stormfusion.cli import main
from stormfusion.data.event_index import read_event_index
from stormfusion.data.splits import (
    PRESETS,
    SplitOptions,
    WindowSpec,
    assign_splits,
    check_windows,
    make_windows,
    read_windows,
)
from stormfusion.errors import StormFusionError


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


def test_random_split_is_by_event_deterministic_and_matches_the_seed_study() -> None:
    events = _events(541)
    opts = SplitOptions(seed=0, val_fraction=0.2)
    labels = assign_splits(events, "random", opts)
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


def test_date_split_puts_every_event_on_its_side_of_the_cuts() -> None:
    events = _events(60, start="2018-10-01")
    cut = pd.DataFrame(
        {"id": ["S1", "S2"], "time_utc": pd.to_datetime(["2019-01-01 00:00", "2019-06-01 00:00"])}
    )  # exactly on the cuts
    events = pd.concat([events, cut], ignore_index=True)
    opts = SplitOptions(train_end="2019-01-01", val_end="2019-06-01")
    labels = assign_splits(events, "date", opts)
    t = events.set_index("id")["time_utc"]
    assert (t[labels[labels == "train"].index] < pd.Timestamp("2019-01-01")).all()
    val_t = t[labels[labels == "val"].index]
    assert ((val_t >= pd.Timestamp("2019-01-01")) & (val_t < pd.Timestamp("2019-06-01"))).all()
    assert (t[labels[labels == "test"].index] >= pd.Timestamp("2019-06-01")).all()
    assert labels["S1"] == "val" and labels["S2"] == "test"


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
        expected = (
            "train"
            if t < pd.Timestamp("2019-01-01")
            else "val"
            if t < pd.Timestamp("2019-06-01")
            else "test"
        )
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
