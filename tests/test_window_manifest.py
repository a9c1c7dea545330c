"""The split manifest (windows_manifest.csv + .json with its digest) and external window
lists (stormfusion.data.window_manifest, `stormfusion split`)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import h5py
import pandas as pd
import pytest
from catalog_support import protocol_catalog

from stormfusion.cli import main
from stormfusion.data.selection import SelectionOptions, run_selection
from stormfusion.data.subset import SUBSET_ATTR
from stormfusion.data.window_manifest import read_window_manifest
from stormfusion.errors import StormFusionError

SEVIR_WINDOWS = ["--input-frames", "13", "--output-frames", "12", "--stride", "12"]


@pytest.fixture
def index(tmp_path: Path) -> Path:
    """events.csv of the protocol catalog, VIL only, storm and random events."""
    catalog = protocol_catalog().write(tmp_path / "raw" / "CATALOG.csv")
    out = tmp_path / "interim"
    run_selection(
        catalog,
        SelectionOptions(kind="all", modalities=("vil",)),
        out / "events.csv",
        out / "events.json",
    )
    return out / "events.csv"


def _split(index: Path, out_dir: Path, *options: str) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    return main(
        [
            "split",
            "--events",
            str(index),
            *SEVIR_WINDOWS,
            *options,
            "--out",
            str(out_dir / "windows.csv"),
            "--manifest",
            str(out_dir / "windows_manifest.json"),
        ]
    )


def _date_split(index: Path, out_dir: Path) -> Path:
    assert _split(index, out_dir, "--strategy", "date") == 0
    return out_dir


def _peer_lines(manifest: pd.DataFrame) -> dict[str, list[str]]:
    """The manifest's windows written as a peer project's lists, one per split."""
    lines: dict[str, list[str]] = {}
    for row in manifest.itertuples():
        img_type, year, name = row.file_name.split("/")
        entry = f"{img_type}-{year}-{name.removesuffix('.h5')}-{row.file_index}-{row.window}"
        lines.setdefault(row.split, []).append(entry)
    return lines


def _write_lists(folder: Path, lines: dict[str, list[str]]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    options = []
    for split, entries in lines.items():
        path = folder / f"{split}.txt"
        path.write_text("\n".join(entries) + "\n")
        options += ["--window-list", f"{split}={path}"]
    return options


def test_manifest_names_every_window_with_its_digest(index: Path, tmp_path: Path) -> None:
    out = _date_split(index, tmp_path / "a")
    windows = pd.read_csv(out / "windows.csv", dtype={"event_id": str})
    data = (out / "windows_manifest.csv").read_bytes()
    meta = json.loads((out / "windows_manifest.json").read_text())
    assert meta["digest"] == hashlib.sha256(data).hexdigest()
    assert meta["manifest"] == "windows_manifest.csv" and meta["strategy"] == "date"
    assert meta["window"] == {"input_frames": 13, "output_frames": 12, "stride": 12}
    manifest = pd.read_csv(out / "windows_manifest.csv", dtype={"event_id": str})
    assert manifest.columns.tolist() == [
        "img_type",
        "file_name",
        "file_index",
        "window",
        "window_start",
        "split",
        "event_id",
    ]
    assert manifest["event_id"].tolist() == windows["event_id"].tolist()
    assert manifest["window_start"].tolist() == windows["window_start"].tolist()
    assert manifest["split"].tolist() == windows["split"].tolist()
    assert sorted(set(manifest["window"])) == [0, 1, 2]
    events = pd.read_csv(index, dtype={"id": str}).set_index("id")
    assert manifest["file_name"].tolist() == events.loc[manifest["event_id"], "vil_file"].tolist()
    for split in ("train", "val", "test"):
        part = manifest[manifest["split"] == split]
        assert meta["counts"][split] == {
            "events": part["event_id"].nunique(),
            "windows": len(part),
        }
    # the same inputs give the same bytes, hence the same digest
    again = _date_split(index, tmp_path / "b")
    assert (again / "windows_manifest.csv").read_bytes() == data


def test_a_peer_window_list_is_used_exactly(index: Path, tmp_path: Path) -> None:
    first = _date_split(index, tmp_path / "a")
    manifest = pd.read_csv(first / "windows_manifest.csv", dtype={"event_id": str})
    options = _write_lists(tmp_path / "lists", _peer_lines(manifest))
    out = tmp_path / "b"
    assert _split(index, out, "--strategy", "window_list", *options) == 0
    assert (out / "windows.csv").read_bytes() == (first / "windows.csv").read_bytes()
    digest = json.loads((out / "windows_manifest.json").read_text())["digest"]
    assert digest == json.loads((first / "windows_manifest.json").read_text())["digest"]

    # a part of the windows, with comments, blank lines and the .h5 written out
    lines = _peer_lines(manifest)
    test_entries = [e for e in lines["test"] if e.endswith("-0")]
    picked = {"train": lines["train"][:4], "test": ["# window 0 only", "", *test_entries]}
    picked["train"][0] = picked["train"][0].replace("-0-", ".h5-0-", 1)
    options = _write_lists(tmp_path / "part", picked)
    out = tmp_path / "c"
    assert _split(index, out, "--strategy", "window_list", *options) == 0
    windows = pd.read_csv(out / "windows.csv", dtype={"event_id": str})
    assert len(windows) == 4 + len(test_entries)
    assert set(windows.loc[windows["split"] == "test", "window_start"]) == {0}
    assert "val" not in set(windows["split"])


def _first_line(manifest: pd.DataFrame, split: str) -> str:
    return _peer_lines(manifest)[split][0]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda e: e.rsplit("-", 1)[0], r"train\.txt:2: malformed entry"),
        (lambda e: e.replace("vil-", "vil_", 1), r"train\.txt:2: malformed entry"),
        (lambda e: e.rsplit("-", 2)[0] + "-999-0", r"train\.txt:2: no selected event has vil"),
        (
            lambda e: "vil-2016-" + e.split("-", 2)[2],
            r"train\.txt:2: no selected event has vil",
        ),
        (lambda e: e.rsplit("-", 1)[0] + "-3", r"train\.txt:2: window 3 does not exist"),
        (lambda e: e.replace("vil", "ir107"), r"train\.txt:2: img_type 'ir107'"),
    ],
)
def test_bad_list_lines_are_named_and_nothing_is_written(
    index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], edit, message: str
) -> None:
    manifest = pd.read_csv(
        _date_split(index, tmp_path / "a") / "windows_manifest.csv", dtype={"event_id": str}
    )
    lines = _peer_lines(manifest)
    train = [lines["train"][0], edit(lines["train"][1]), *lines["train"][2:]]
    options = _write_lists(tmp_path / "lists", {"train": train, "test": lines["test"]})
    out = tmp_path / "b"
    capsys.readouterr()
    assert _split(index, out, "--strategy", "window_list", *options) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert "Traceback" not in err
    assert list(out.iterdir()) == []


def test_list_contradictions_are_named(
    index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = pd.read_csv(
        _date_split(index, tmp_path / "a") / "windows_manifest.csv", dtype={"event_id": str}
    )
    lines = _peer_lines(manifest)
    cases = [
        (
            {"train": [lines["train"][0], lines["train"][0]]},
            r"train\.txt:2: window 0 of event .* already listed at .*train\.txt:1",
        ),
        (
            {"train": lines["train"][:1], "test": [lines["train"][1]]},
            r"test\.txt:1: event \S+ is in split 'test' here and in 'train' at .*train\.txt:1",
        ),
        (
            {"train": ["# nothing here", ""]},
            r"train\.txt: the window list for split 'train' names no",
        ),
    ]
    for k, (lists, message) in enumerate(cases):
        options = _write_lists(tmp_path / f"lists{k}", lists)
        out = tmp_path / f"out{k}"
        capsys.readouterr()
        assert _split(index, out, "--strategy", "window_list", *options) == 2
        assert re.search(message, capsys.readouterr().err)
        assert list(out.iterdir()) == []
    out = tmp_path / "bad-option"
    assert _split(index, out, "--strategy", "window_list", "--window-list", "train") == 2
    assert "expected SPLIT=FILE" in capsys.readouterr().err
    assert _split(index, out, "--strategy", "window_list", "--window-list", "later=x.txt") == 2
    assert "unknown split 'later'" in capsys.readouterr().err


def test_a_manifest_is_reused_and_its_digest_checked(
    index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = _date_split(index, tmp_path / "a")
    source = str(first / "windows_manifest.json")
    out = tmp_path / "b"
    assert _split(index, out, "--strategy", "manifest", "--window-manifest", source) == 0
    assert (out / "windows.csv").read_bytes() == (first / "windows.csv").read_bytes()

    # one window moved to another split after the digest was taken
    csv = first / "windows_manifest.csv"
    text = csv.read_text().splitlines()
    text[1] = text[1].replace(",train,", ",test,")
    csv.write_text("\n".join(text) + "\n")
    with pytest.raises(StormFusionError, match="does not match"):
        read_window_manifest(source)
    out = tmp_path / "c"
    capsys.readouterr()
    assert _split(index, out, "--strategy", "manifest", "--window-manifest", source) == 2
    err = capsys.readouterr().err
    assert "windows_manifest.json: digest" in err and "does not match" in err
    assert list(out.iterdir()) == []


def test_events_only_subset_files_are_named_by_the_buckets_positions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An events-only download renumbers the events of a subset file in its catalog; the
    manifest and window lists still use the positions in the bucket's file, which the
    subset file records."""
    raw = tmp_path / "raw"
    builder = protocol_catalog()
    subset = "vil/2019/SEVIR_VIL_STORMEVENTS_2019_0101_0630.h5"
    rows = [r for r in builder.rows if r["file_name"] == subset]
    source = {r["id"]: 1000 + 7 * r["file_index"] for r in rows}  # positions in the bucket
    for position, row in enumerate(rows):
        row["file_index"] = position  # the subset catalog's numbering
    catalog = builder.write(raw / "CATALOG.csv")
    path = raw / "data" / subset
    path.parent.mkdir(parents=True)
    record = {"events": [{"id": e, "source_index": i} for e, i in source.items()]}
    with h5py.File(path, "w") as f:
        f.attrs[SUBSET_ATTR] = json.dumps(record)
    out = tmp_path / "interim"
    options = SelectionOptions(kind="all", modalities=("vil",))
    run_selection(catalog, options, out / "events.csv", out / "events.json", data_root=raw)

    first = _date_split(out / "events.csv", tmp_path / "a")
    manifest = pd.read_csv(first / "windows_manifest.csv", dtype={"event_id": str})
    in_subset = manifest[manifest["file_name"] == subset]
    assert len(in_subset) > 0
    assert in_subset["file_index"].tolist() == [source[e] for e in in_subset["event_id"]]
    others = manifest[manifest["file_name"] != subset]
    events = pd.read_csv(out / "events.csv", dtype={"id": str}).set_index("id")
    assert others["file_index"].tolist() == events.loc[others["event_id"], "vil_index"].tolist()

    # a published list names the bucket's positions, and matches
    options_ = _write_lists(tmp_path / "lists", _peer_lines(manifest))
    assert _split(out / "events.csv", tmp_path / "b", "--strategy", "window_list", *options_) == 0
    assert (tmp_path / "b" / "windows.csv").read_bytes() == (first / "windows.csv").read_bytes()

    # a subset file that does not record one of its events is an error
    record["events"] = record["events"][1:]
    with h5py.File(path, "w") as f:
        f.attrs[SUBSET_ATTR] = json.dumps(record)
    capsys.readouterr()
    assert _split(out / "events.csv", tmp_path / "c", "--strategy", "date") == 2
    assert "the subset file does not record event" in capsys.readouterr().err
