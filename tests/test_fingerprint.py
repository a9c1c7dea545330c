"""The data fingerprint covers the selected raw files' identity (issue: a changed raw HDF5
file must change it): a content hash for files made locally, the S3 ETag recorded at download
for files fetched from a bucket."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py

from stormfusion.data.event_index import raw_identity
from stormfusion.data.selection import SelectionOptions, run_selection
from stormfusion.io import sha256_file


def _select(root: Path, out: Path) -> dict:
    return run_selection(
        root / "CATALOG.csv", SelectionOptions(), out / "events.csv", out / "events.json", root
    )


def test_one_changed_pixel_changes_the_fingerprint(synthetic_archive: Path, tmp_path: Path) -> None:
    root = tmp_path / "raw"
    shutil.copytree(synthetic_archive, root)
    first = _select(root, tmp_path / "a")
    files = first["raw_files"]
    vil = next(f for f in files if f.startswith("vil/"))
    path = root / "data" / vil
    assert files[vil] == {"size": path.stat().st_size, "sha256": sha256_file(path)}
    assert json.loads((tmp_path / "a" / "events.json").read_text()) == first
    assert _select(root, tmp_path / "b")["data_fingerprint"] == first["data_fingerprint"]
    with h5py.File(path, "r+") as f:  # one pixel of one event, same size
        f["vil"][0, 0, 0, 0] = (int(f["vil"][0, 0, 0, 0]) + 1) % 255
    changed = _select(root, tmp_path / "c")
    assert changed["data_fingerprint"] != first["data_fingerprint"]
    assert changed["raw_files"][vil]["sha256"] != files[vil]["sha256"]
    # the catalog and event list are the same: only the raw file's identity moved
    assert changed["catalog_sha256"] == first["catalog_sha256"]


def test_recorded_etag_is_used_while_the_file_is_unchanged(
    synthetic_archive: Path, tmp_path: Path
) -> None:
    root = tmp_path / "raw"
    shutil.copytree(synthetic_archive, root)
    name = next(p for p in (root / "data" / "vil").rglob("*.h5")).relative_to(root / "data")
    path = root / "data" / name
    st = path.stat()
    key = f"data/{name.as_posix()}"
    state = {key: {"etag": "abc-2", "size": st.st_size, "mtime_ns": st.st_mtime_ns}}
    (root / ".download_state.json").write_text(json.dumps(state))
    assert raw_identity(root, [name.as_posix()])[name.as_posix()] == {
        "size": st.st_size,
        "etag": "abc-2",
    }
    path.write_bytes(path.read_bytes())  # rewritten: the record no longer applies
    ident = raw_identity(root, [name.as_posix(), "vil/2019/absent.h5"])
    assert ident[name.as_posix()]["sha256"] == sha256_file(path)
    assert ident["vil/2019/absent.h5"] == {"missing": True}
