"""The published SEVIR protocol presets (config/protocols/): a VIL-only DAG, and the exact
windows of the official selection and date split, computed through Snakemake from catalog
rows built from the archive's facts and compared with an independent restatement."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from catalog_support import TRAIN_END, VAL_END, protocol_catalog
from workflow_support import REPO, load_yaml, merge, planned_jobs, snakemake, study_config

SEVIR = REPO / "config" / "protocols" / "sevir.yaml"
SEVIR_PAPER = REPO / "config" / "protocols" / "sevir-paper.yaml"
PROTOCOL_RUNS = {"persistence", "optical_flow", "unet2d", "convlstm", "sgt", "sgt_advect"}


def _resolved(overlay: Path) -> dict:
    return merge(study_config(), load_yaml(overlay))


def _enabled_runs(config: dict) -> dict:
    return {k: v for k, v in config["models"].items() if v.get("enabled", True)}


@pytest.mark.parametrize("overlay", [SEVIR, SEVIR_PAPER])
def test_protocol_presets_are_vil_only(overlay: Path) -> None:
    config = _resolved(overlay)
    assert config["selection"]["modalities"] == ["vil"]
    assert config["selection"]["kind"] == "all"
    assert config["selection"]["require_complete"] is True
    assert config["selection"]["max_events"] is None and config["selection"]["start"] is None
    split = config["split"]
    assert (split["strategy"], split["input_frames"], split["output_frames"]) == ("date", 13, 12)
    assert split["stride"] == 12
    assert config["evaluation"]["split"] == "test"
    runs = _enabled_runs(config)
    assert set(runs) == PROTOCOL_RUNS
    assert all(spec["args"]["modalities"] == ["vil"] for spec in runs.values())


def test_the_two_protocol_presets_differ_only_in_the_split() -> None:
    sevir, paper = _resolved(SEVIR), _resolved(SEVIR_PAPER)
    assert {k: v for k, v in sevir.items() if k not in ("split", "paths")} == {
        k: v for k, v in paper.items() if k not in ("split", "paths")
    }
    assert (sevir["split"]["train_end"], sevir["split"]["val_end"]) == ("2019-01-01", "2019-06-01")
    assert (paper["split"]["train_end"], paper["split"]["val_end"]) == ("2019-06-01", "2019-06-01")
    assert paper["paths"] != sevir["paths"]
    cuts = ("train_end", "val_end", "val_fraction", "seed")
    assert {k: v for k, v in sevir["split"].items() if k not in cuts} == {
        k: v for k, v in paper["split"].items() if k not in cuts
    }
    assert sevir["split"]["window_sampling"] == "fixed"


def _work(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(REPO / "config.yaml", work / "config.yaml")
    return work


def test_protocol_dry_run_lists_a_vil_only_dag(tmp_path: Path) -> None:
    work = _work(tmp_path)
    out = snakemake(
        work, "--dry-run", "--printshellcmds", "--cores", "8", "--configfile", str(SEVIR)
    ).stdout
    counts = planned_jobs(out)
    assert counts["convert_to_zarr"] == 1
    assert counts["train_model"] == 4  # unet2d, convlstm, sgt, sgt_advect
    assert counts["predict_model"] == counts["score_model"] == 6
    assert "--modality vil" in out
    for other in ("ir069", "ir107", "lght", "vis"):
        assert other not in out, f"{other} appears in the VIL-only DAG"
    commands = [line for line in out.splitlines() if "stormfusion train" in line]
    assert len(commands) == 4
    assert all('"modalities": ["vil"]' in c for c in commands)


def _official_windows(catalog_csv: Path) -> set[tuple[str, int, str]]:
    """The published protocol restated: rows with pct_missing == 0, VIL rows, ids with
    exactly one of them, train time_utc <= 2019-01-01, val <= 2019-06-01, test after;
    windows start at frames 0, 12 and 24."""
    catalog = pd.read_csv(catalog_csv, parse_dates=["time_utc"], low_memory=False)
    catalog = catalog[catalog["pct_missing"] == 0]
    vil = catalog[catalog["img_type"] == "vil"]
    counts = vil.groupby("id").size()
    kept = vil[vil["id"].isin(counts[counts == 1].index)]
    windows = set()
    for event_id, t in zip(kept["id"], kept["time_utc"], strict=True):
        split = "train" if t <= TRAIN_END else "val" if t <= VAL_END else "test"
        windows |= {(event_id, start, split) for start in (0, 12, 24)}
    return windows


def test_sevir_preset_through_snakemake_gives_the_official_windows(tmp_path: Path) -> None:
    work = _work(tmp_path)
    catalog = protocol_catalog().write(work / "data" / "sevir" / "CATALOG.csv")
    # The raw archive stands in place as a local one (`source: synthetic` with its catalog
    # and manifest already there), so no download runs: the SEVIR preset's own
    # select_events and split_events rules run on the hand-built catalog.
    (work / "data" / "sevir" / "synthetic_manifest.json").write_text("{}")
    local = tmp_path / "local.yaml"
    local.write_text(json.dumps({"source": "synthetic"}))
    target = "data/sevir-protocol/interim/windows.csv"
    proc = snakemake(work, target, "--cores", "1", "--configfile", str(SEVIR), str(local))
    ran = planned_jobs(proc.stdout + proc.stderr)
    assert set(ran) == {"select_events", "split_events"}, ran

    interim = work / "data" / "sevir-protocol" / "interim"
    windows = pd.read_csv(work / target, dtype={"event_id": str})
    got = set(zip(windows["event_id"], windows["window_start"], windows["split"], strict=True))
    expected = _official_windows(catalog)
    assert got == expected
    assert len(windows) == len(expected)  # no window twice
    assert set(windows["input_frames"]) == {13} and set(windows["output_frames"]) == {12}
    # the events on the cut instants: train on the first, val on the second
    split_of = dict(zip(windows["event_id"], windows["split"], strict=False))
    assert split_of["S827403"] == split_of["R19000000111"] == "train"  # 2019-01-01 00:00:00
    assert split_of["S827404"] == "val"  # one second later
    assert split_of["S827407"] == split_of["S900002"] == "val"  # 2019-06-01 00:00:00
    assert split_of["S827408"] == "test"
    assert "S900001" in split_of and "R18032505027684" not in split_of

    # the manifest beside windows.csv: the VIL file and index of every window, and its digest
    meta = json.loads((interim / "windows_manifest.json").read_text())
    data = (interim / "windows_manifest.csv").read_bytes()
    assert meta["digest"] == hashlib.sha256(data).hexdigest()
    assert meta["strategy"] == "date"
    manifest = pd.read_csv(interim / "windows_manifest.csv", dtype={"event_id": str})
    rows = pd.read_csv(catalog)
    rows = rows[(rows["img_type"] == "vil") & (rows["pct_missing"] == 0)].set_index("id")
    assert manifest["file_name"].tolist() == rows.loc[manifest["event_id"], "file_name"].tolist()
    assert manifest["file_index"].tolist() == rows.loc[manifest["event_id"], "file_index"].tolist()
    assert np.array_equal(manifest["window"], manifest["window_start"] // 12)
    by_split = manifest.groupby("split")["event_id"]
    assert {s: int(n) for s, n in by_split.size().items()} == {
        s: c["windows"] for s, c in meta["counts"].items() if c["windows"]
    }
    assert {s: int(n) for s, n in by_split.nunique().items()} == {
        s: c["events"] for s, c in meta["counts"].items() if c["events"]
    }


@pytest.mark.parametrize(
    ("overlay", "key"),
    [
        ({"split": {"strategy": "date", "cut": "2019-01-01"}}, "cut"),
        ({"selection": {"modality": ["vil"]}}, "modality"),
        ({"models": {"sgt": {"model": "sgt", "arguments": {}}}}, "arguments"),
    ],
)
def test_an_overlay_with_an_unknown_key_is_refused(tmp_path: Path, overlay: dict, key: str) -> None:
    work = _work(tmp_path)
    path = tmp_path / "overlay.yaml"
    path.write_text(json.dumps(merge(load_yaml(SEVIR), overlay)))
    proc = snakemake(work, "--dry-run", "--cores", "1", "--configfile", str(path), check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "validat" in text.lower() and f"'{key}'" in text
    assert not (work / "data").exists() and not (work / "results").exists()


def test_window_lists_and_manifests_are_inputs_of_the_split(tmp_path: Path) -> None:
    work = _work(tmp_path)
    (work / "lists").mkdir()
    for split in ("train", "test"):
        (work / "lists" / f"{split}.txt").write_text("vil-2019-SEVIR_VIL_X-0-0\n")
    overlay = tmp_path / "lists.yaml"
    lists = {"train": "lists/train.txt", "test": "lists/test.txt"}
    overlay.write_text(json.dumps({"split": {"strategy": "window_list", "window_lists": lists}}))
    out = snakemake(
        work, "--dry-run", "--printshellcmds", "--cores", "1",
        "--configfile", str(SEVIR), str(overlay),
    ).stdout  # fmt: skip
    assert "--window-list train=lists/train.txt --window-list test=lists/test.txt" in out
    assert "--manifest data/sevir-protocol/interim/windows_manifest.json" in out

    overlay.write_text(
        json.dumps({"split": {"strategy": "manifest", "window_manifest": "old/m.json"}})
    )
    (work / "old").mkdir()
    (work / "old" / "m.json").write_text("{}")
    (work / "old" / "m.csv").write_text("")
    out = snakemake(
        work, "--dry-run", "--printshellcmds", "--cores", "1",
        "--configfile", str(SEVIR), str(overlay),
    ).stdout  # fmt: skip
    assert "--window-manifest old/m.json" in out
