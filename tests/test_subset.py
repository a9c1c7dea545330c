"""Events-only download (``stormfusion download --events-only``) against loopback S3 (moto).

Fast tests use the session's tiny twin (bucket ``twin``). The slow ones use a full-size twin
(40 storm events at 384 x 384 x 49, the real event size: 7,225,344 bytes of VIL per event)
whose three VIL STORMEVENTS files (2018 H2, 2019 H1, 2019 H2) are served in 8 MiB parts, as
on the real bucket. Three events, one from each file, are 3 of the 40 events those three
whole files hold: the bytes ratio is then the real case's ratio (the events a whole-file
download would fetch along with them), and the subset's Zarr is compared with the Zarr
converted from the whole files.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from stormfusion.cli import main
from stormfusion.data.convert import convert_modality
from stormfusion.data.download import RemoteObject, S3Options, download_events, make_client
from stormfusion.data.hdf5 import read_ids, read_raster_event
from stormfusion.data.selection import SelectionOptions, run_selection
from stormfusion.data.subset import (
    SUBSET_ATTR,
    Traffic,
    download_events_only,
    get_range,
    read_subset_record,
)
from stormfusion.data.synthetic import synthesize_archive
from stormfusion.errors import StormFusionError
from stormfusion.testing import (
    ThrottledRelay,
    archive_files,
    loopback_client,
    loopback_s3,
    upload_public,
)

REPO = Path(__file__).resolve().parents[1]
PART = 8 * 1024 * 1024
VIL_ONLY = SelectionOptions(kind="storm", modalities=["vil"], require_complete=False)


def _tree(root: Path, only: str | None = None) -> dict[str, Path]:
    return {
        p.relative_to(root).as_posix(): p
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and p.name != "synthetic_manifest.json"
        and (only is None or p.name == "CATALOG.csv" or f"/{only}/" in p.as_posix())
    }


@pytest.fixture(scope="module")
def s3(synthetic_archive: Path) -> Iterator[dict]:
    with loopback_s3() as (endpoint, port):
        client = loopback_client(endpoint)
        client.create_bucket(Bucket="twin")
        upload_public(client, "twin", archive_files(synthetic_archive), PART)
        yield {"endpoint": endpoint, "port": port, "client": client}


def _opts(s3: dict, bucket: str = "twin", **kw: object) -> S3Options:
    base: dict = {"bucket": bucket, "endpoint_url": s3["endpoint"], "region": "us-east-1"}
    base.update(kw)
    return S3Options(retries=0, backoff_s=0.05, **base)


def _select(
    catalog: Path, out: Path, options: SelectionOptions = VIL_ONLY, root: Path | None = None
) -> Path:
    run_selection(catalog, options, out / "events.csv", out / "events.json", data_root=root)
    return out / "events.csv"


def _same_store(a: Path, b: Path, modality: str) -> None:
    """Every data variable and coordinate equal; attributes too, except provenance."""
    with xr.open_zarr(a, consolidated=False) as x, xr.open_zarr(b, consolidated=False) as y:
        x, y = x.load(), y.load()
    assert x[modality].dtype == y[modality].dtype
    np.testing.assert_array_equal(x[modality].values, y[modality].values)
    assert set(x.coords) == set(y.coords)
    for name in x.coords:
        if name == "source_index":  # position in the whole file vs in the subset file
            continue
        np.testing.assert_array_equal(x[name].values, y[name].values, err_msg=name)
    skip = {"data_fingerprint", "created", "created_utc"}
    assert {k: v for k, v in x.attrs.items() if k not in skip} == {
        k: v for k, v in y.attrs.items() if k not in skip
    }


# -- the tiny twin: layout, overlay, downstream unchanged -------------------------------------


def _check_downloaded(entry: dict, out: Path, source: Path, index: pd.DataFrame) -> None:
    """One file of an events-only download: a lightning file as on the bucket; a subset
    file contiguous, holding exactly the planned events, byte for byte, with its record."""
    key = entry["key"]
    if "/lght/" in key:
        assert (out / key).read_bytes() == (source / key).read_bytes()
        return
    modality = key.split("/")[1]
    wanted = index[index[f"{modality}_file"] == key.removeprefix("data/")]
    ids = read_ids(out / key)
    assert sorted(ids) == sorted(wanted["id"])
    with h5py.File(out / key) as f, h5py.File(source / key) as g:
        assert f[modality].chunks is None and f[modality].compression is None  # contiguous
        assert f["id"].dtype == g["id"].dtype
    for row in wanted.itertuples():
        whole = read_raster_event(source / key, modality, int(getattr(row, f"{modality}_index")))
        sub = read_raster_event(out / key, modality, ids.index(row.id), row.id)
        np.testing.assert_array_equal(sub, whole)
    record = read_subset_record(out / key)
    assert record is not None and record["source_etag"] == entry["etag"]
    for ev in record["events"]:
        assert ev["stop"] - ev["start"] == sub.nbytes


def test_subset_files_and_catalog_run_downstream_unchanged(
    s3: dict, synthetic_archive: Path, tmp_path: Path
) -> None:
    options = SelectionOptions(kind="all", require_complete=False)
    plan = _select(synthetic_archive / "CATALOG.csv", tmp_path / "plan", options)
    out = tmp_path / "raw"
    code = main([
        "download", "--bucket", "twin", "--region", "us-east-1", "--endpoint-url",
        s3["endpoint"], "--out", str(out), "--events", str(plan), "--events-only",
        "--source-catalog", str(synthetic_archive / "CATALOG.csv"),
        "--manifest", str(tmp_path / "manifest.json"),
    ])  # fmt: skip
    assert code == 0
    record = json.loads((tmp_path / "manifest.json").read_text())
    index = pd.read_csv(plan, dtype={"id": str})
    for entry in record["files"]:
        _check_downloaded(entry, out, synthetic_archive, index)
    # select-events on the overlay picks the same events; convert gives the same store
    again = _select(out / "CATALOG.csv", tmp_path / "again", options, root=out)
    # the fingerprint covers the subset files by content, the lightning files by ETag
    raw = json.loads((tmp_path / "again" / "events.json").read_text())["raw_files"]
    for entry in record["files"]:
        name = entry["key"].removeprefix("data/")
        if name in raw:
            ident = {"sha256": entry["sha256"]} if "sha256" in entry else {"etag": entry["etag"]}
            assert raw[name] == {"size": (out / entry["key"]).stat().st_size, **ident}
    cols = ["id", "time_utc", "kind"]
    pd.testing.assert_frame_equal(
        pd.read_csv(again, dtype={"id": str})[cols], index[cols], check_dtype=False
    )
    for modality in ("vil", "ir107", "lght"):
        convert_modality(plan, synthetic_archive, modality, tmp_path / f"whole_{modality}.zarr")
        convert_modality(again, out, modality, tmp_path / f"sub_{modality}.zarr")
        _same_store(
            tmp_path / f"whole_{modality}.zarr", tmp_path / f"sub_{modality}.zarr", modality
        )
    # a rerun keeps everything
    rerun = download_events_only(_opts(s3), plan, synthetic_archive / "CATALOG.csv", out)
    assert {f["status"] for f in rerun["files"]} == {"skipped"}
    assert rerun["range_bytes"] == 0


# -- bad input: one clear error naming key and event, nothing partial --------------------------


def _one_event_index(path: Path, file: str, event_id: str, index: int, size: int) -> Path:
    path.write_text(
        "id,time_utc,event_type,episode_id,event_id,kind,vil_file,vil_index,vil_size\n"
        f"{event_id},2019-07-01 00:00:00,Hail,1,1,storm,{file},{index},{size}\n"
    )
    return path


def _vil_key(root: Path) -> str:
    return next(k for k in _tree(root) if "/vil/" in k and "STORM" in k)


def test_event_index_out_of_range(s3: dict, synthetic_archive: Path, tmp_path: Path) -> None:
    key = _vil_key(synthetic_archive)
    ev = read_ids(synthetic_archive / key)[0]
    events = _one_event_index(tmp_path / "e.csv", key.removeprefix("data/"), ev, 999, 32)
    out = tmp_path / "raw"
    with pytest.raises(StormFusionError, match=rf"{key}: event {ev}: index 999 out of range"):
        download_events_only(_opts(s3), events, synthetic_archive / "CATALOG.csv", out)
    assert not (out / key).exists() and not list(out.rglob("*.h5"))
    wrong = _one_event_index(tmp_path / "w.csv", key.removeprefix("data/"), "S1", 0, 32)
    with pytest.raises(StormFusionError, match=rf"{key}: event S1: index 0 holds event"):
        download_events_only(_opts(s3), wrong, synthetic_archive / "CATALOG.csv", out)


def test_wrong_length_answer_named(s3: dict, synthetic_archive: Path) -> None:
    key = _vil_key(synthetic_archive)
    size = (synthetic_archive / key).stat().st_size
    client = make_client(_opts(s3))
    head = client.head_object(Bucket="twin", Key=key)
    obj = RemoteObject(key, size, head["ETag"].strip('"'))
    # a range past the end: S3 answers with the bytes it has, fewer than asked
    with pytest.raises(
        StormFusionError,
        match=rf"{key}: range request for bytes .* answered with 10 bytes, expected 100",
    ):
        get_range(client, _opts(s3), obj, size - 10, size + 90, Traffic())
    stale = RemoteObject(key, size, "0" * 32)
    with pytest.raises(StormFusionError, match=rf"{key}: the object changed while it was read"):
        get_range(client, _opts(s3), stale, 0, 10, Traffic())


def test_object_changed_between_requests(
    s3: dict, synthetic_archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The object is replaced after its layout was read: an error, no mixed file."""
    import stormfusion.data.subset as subset

    src = tmp_path / "src"
    synthesize_archive(src, n_storm=3, n_random=0, image_size=32, seed=5)
    s3["client"].create_bucket(Bucket="changing")
    upload_public(s3["client"], "changing", _tree(src, "vil"), PART)
    plan = _select(src / "CATALOG.csv", tmp_path / "plan")
    real = subset.read_layout

    def layout_then_replace(fileobj: object, img_type: str, key: str) -> object:
        layout = real(fileobj, img_type, key)
        s3["client"].put_object(Bucket="changing", Key=key, Body=b"new version", ACL="public-read")
        return layout

    monkeypatch.setattr(subset, "read_layout", layout_then_replace)
    out = tmp_path / "raw"
    with pytest.raises(StormFusionError, match="the object changed while it was read"):
        download_events_only(_opts(s3, "changing"), plan, src / "CATALOG.csv", out)
    assert not list(out.rglob("*.h5")) and not list(out.rglob(".*events-*"))
    assert not (out / "CATALOG.csv").exists()


def test_compressed_dataset_refused(s3: dict, tmp_path: Path) -> None:
    key = "data/vil/2019/SEVIR_VIL_STORMEVENTS_2019_0701_1231.h5"
    path = tmp_path / "gz.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("id", data=np.array([b"S1", b"S2"]))
        f.create_dataset("vil", data=np.zeros((2, 8, 8, 49), np.uint8), compression="gzip")
    s3["client"].create_bucket(Bucket="gzipped")
    upload_public(s3["client"], "gzipped", {key: path}, PART)
    catalog = tmp_path / "CATALOG.csv"
    catalog.write_text(
        "id,file_name,file_index,img_type\nS2,vil/2019/SEVIR_VIL_STORMEVENTS_2019_0701_1231.h5,1,vil\n"
    )
    events = _one_event_index(tmp_path / "e.csv", key.removeprefix("data/"), "S2", 1, 8)
    with pytest.raises(
        StormFusionError,
        match=rf"{key}: dataset '/vil' is filtered \(.*deflate.*\).*s3.events_only: false",
    ):
        download_events_only(_opts(s3, "gzipped"), events, catalog, tmp_path / "raw")
    assert not (tmp_path / "raw" / key).exists()


def test_whole_file_in_the_way_is_not_overwritten(
    s3: dict, synthetic_archive: Path, tmp_path: Path
) -> None:
    plan = _select(synthetic_archive / "CATALOG.csv", tmp_path / "plan")
    out = tmp_path / "raw"
    download_events(_opts(s3), plan, out)  # whole files
    key = _vil_key(synthetic_archive)
    before = (out / key).read_bytes()
    with pytest.raises(StormFusionError, match="is not an events-only subset file"):
        download_events_only(_opts(s3), plan, synthetic_archive / "CATALOG.csv", out)
    assert (out / key).read_bytes() == before
    with pytest.raises(StormFusionError, match="source catalog cannot be"):
        download_events_only(_opts(s3), plan, out / "CATALOG.csv", out)


# -- the full-size twin: bytes, Zarr identity, kill and resume ---------------------------------


@pytest.fixture(scope="module")
def full(s3: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """40 storm events at full size; VIL files and the catalog in bucket ``full``."""
    root = tmp_path_factory.mktemp("full_twin")
    src = root / "src"
    synthesize_archive(src, n_storm=40, n_random=0, image_size=384, seed=11)
    s3["client"].create_bucket(Bucket="full")
    files = _tree(src, "vil")
    upload_public(s3["client"], "full", files, PART)
    index = pd.read_csv(_select(src / "CATALOG.csv", root / "all"), dtype={"id": str})
    picks = index.groupby("vil_file", sort=True).head(1)  # one event in each VIL file
    assert len(picks) == 3 and index["vil_file"].nunique() == 3
    plan = root / "plan"
    plan.mkdir()
    picks.to_csv(plan / "events.csv", index=False)
    (plan / "events.json").write_text((root / "all" / "events.json").read_text())
    return {"src": src, "plan": plan / "events.csv", "files": files, "n_events": len(index)}


@pytest.mark.slow
def test_three_of_forty_events_cost_under_15_percent_and_convert_identically(
    s3: dict, full: dict, tmp_path: Path
) -> None:
    src, plan = full["src"], full["plan"]
    whole = download_events(_opts(s3, "full"), plan, tmp_path / "whole")
    shutil.copyfile(src / "CATALOG.csv", tmp_path / "whole" / "CATALOG.csv")  # as the DAG has
    whole_bytes = whole["downloaded_bytes"]
    assert whole_bytes == sum(p.stat().st_size for k, p in full["files"].items() if "/vil/" in k)
    sub = download_events_only(_opts(s3, "full"), plan, src / "CATALOG.csv", tmp_path / "sub")
    ratio = sub["downloaded_bytes"] / whole_bytes
    assert sub["range_bytes"] == sub["downloaded_bytes"] > 3 * 7_225_344
    assert ratio < 0.15, f"events-only fetched {ratio:.1%} of the whole files' bytes"
    again = _select(tmp_path / "sub" / "CATALOG.csv", tmp_path / "again")
    convert_modality(plan, tmp_path / "whole", "vil", tmp_path / "whole.zarr")
    convert_modality(again, tmp_path / "sub", "vil", tmp_path / "sub.zarr")
    _same_store(tmp_path / "whole.zarr", tmp_path / "sub.zarr", "vil")


@pytest.mark.slow
def test_kill_midway_then_rerun_gives_identical_files(s3: dict, full: dict, tmp_path: Path) -> None:
    src, plan = full["src"], full["plan"]
    reference = tmp_path / "reference"
    download_events_only(_opts(s3, "full"), plan, src / "CATALOG.csv", reference)
    relay = ThrottledRelay(("127.0.0.1", s3["port"]), bytes_per_s=4e6)
    threading.Thread(target=relay.serve_forever, daemon=True).start()
    out = tmp_path / "raw"
    cmd = [
        sys.executable, "-m", "stormfusion", "download", "--bucket", "full", "--region",
        "us-east-1", "--endpoint-url", f"http://127.0.0.1:{relay.server_address[1]}",
        "--retries", "0", "--out", str(out), "--events", str(plan), "--events-only",
        "--source-catalog", str(src / "CATALOG.csv"), "--concurrency", "1",
    ]  # fmt: skip
    try:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        # one file at a time, each event taking about 1.8 s through the relay: the kill
        # lands while a later file's event is on the wire, with an earlier one done
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if _left_over(out):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the download finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        relay.shutdown()
        relay.server_close()
    assert _left_over(out) and not (out / "CATALOG.csv").exists()
    # whatever the kill left (staged events, a half-written subset file), the rerun ends
    # with the files of an uninterrupted run and no temporaries
    rerun = download_events_only(_opts(s3, "full"), plan, src / "CATALOG.csv", out)
    first = download_events_only(_opts(s3, "full"), plan, src / "CATALOG.csv", tmp_path / "x")
    assert rerun["range_bytes"] < first["range_bytes"]  # staged events were not fetched again
    produced = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    expected = sorted(p.relative_to(reference) for p in reference.rglob("*") if p.is_file())
    # the download state records mtimes; every data file and the catalog must be identical
    assert produced == expected
    for rel in (r for r in expected if r.name != ".download_state.json"):
        assert (out / rel).read_bytes() == (reference / rel).read_bytes(), rel
    assert not list(out.rglob(".*events-*"))
    with h5py.File(out / next(k for k in full["files"] if "/vil/" in k)) as f:
        assert SUBSET_ATTR in f.attrs


def _left_over(out: Path) -> list[Path]:
    """What a killed events-only download has finished: staged events, subset files."""
    staged = list(out.rglob(".*events-*/*.bin"))
    subsets = [p for p in out.rglob("*.h5") if not p.name.startswith(".")]
    return staged + subsets


def test_temporaries_of_a_killed_run_are_swept(
    s3: dict, synthetic_archive: Path, tmp_path: Path
) -> None:
    plan = _select(synthetic_archive / "CATALOG.csv", tmp_path / "plan")
    out = tmp_path / "raw"
    first = download_events_only(_opts(s3), plan, synthetic_archive / "CATALOG.csv", out)
    entry = next(e for e in first["files"] if "/vil/" in e["key"])
    final = out / entry["key"]
    expected = final.read_bytes()
    final.unlink()
    half = final.with_name(f".{final.name}.tmp-99999-deadbeef")  # a half-written subset
    half.write_bytes(expected[:1000])
    stage = final.with_name(f".{final.name}.events-{entry['etag'][:16]}")
    stage.mkdir()
    (stage / ".0.bin.tmp-99999-deadbeef").write_bytes(b"x")  # a half-written event
    (out / ".CATALOG.csv.tmp-99999-deadbeef").write_text("id\n")
    again = download_events_only(_opts(s3), plan, synthetic_archive / "CATALOG.csv", out)
    assert {e["key"]: e["status"] for e in again["files"]}[entry["key"]] == "downloaded"
    assert final.read_bytes() == expected
    assert not list(out.rglob("*.tmp-*")) and not stage.exists()


def test_one_unfiltered_chunk_per_event_is_read_by_ranges(s3: dict, tmp_path: Path) -> None:
    """Older writers chunk one event per chunk without filters: still one range per event."""
    key = "data/vil/2019/SEVIR_VIL_STORMEVENTS_2019_0701_1231.h5"
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, size=(4, 8, 8, 49), dtype=np.uint8)
    path = tmp_path / "chunked.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("id", data=np.array([b"S1", b"S2", b"S3", b"S4"], dtype="S10"))
        f.create_dataset("vil", data=data, chunks=(1, 8, 8, 49))
    s3["client"].create_bucket(Bucket="chunked")
    upload_public(s3["client"], "chunked", {key: path}, PART)
    name = key.removeprefix("data/")
    catalog = tmp_path / "CATALOG.csv"
    catalog.write_text(
        "id,file_name,file_index,img_type\n"
        + "".join(f"S{i + 1},{name},{i},vil\n" for i in range(4))
    )
    events = tmp_path / "e.csv"
    events.write_text(
        "id,time_utc,event_type,episode_id,event_id,kind,vil_file,vil_index,vil_size\n"
        f"S2,2019-07-01 00:00:00,Hail,1,1,storm,{name},1,8\n"
        f"S4,2019-07-02 00:00:00,Hail,1,1,storm,{name},3,8\n"
    )
    out = tmp_path / "raw"
    record = download_events_only(_opts(s3, "chunked"), events, catalog, out)
    assert read_ids(out / key) == ["S2", "S4"]
    np.testing.assert_array_equal(read_raster_event(out / key, "vil", 1, "S4"), data[3])
    assert (out / "CATALOG.csv").read_text().splitlines()[1:] == [
        f"S2,{name},0,vil",
        f"S4,{name},1,vil",
    ]
    assert record["range_requests"] == 1 + 2  # one metadata block (the file is tiny), two events
