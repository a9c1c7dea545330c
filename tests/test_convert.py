"""HDF5 -> Zarr conversion (stormfusion.data.convert, CLI convert): exact values and layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from archive_twin import LGHT_FILE, RASTER_FILES, make_twin

from stormfusion.cli import main
from stormfusion.data.convert import (
    DEFAULT_LAYOUT,
    StoreLayout,
    convert_modality,
    open_archive,
    verify_store,
)
from stormfusion.data.event_index import event_sources, raw_file, read_event_index
from stormfusion.data.hdf5 import (
    grid_lightning,
    read_lightning_event,
    read_raster_event,
    write_lightning_file,
    write_raster_file,
)
from stormfusion.data.sevir import NOMINAL_OFFSETS
from stormfusion.errors import StormFusionError

MODALITIES = ("vil", "ir069", "ir107", "lght")


def _convert_cli(events: Path, root: Path, modality: str, out: Path, *extra: str) -> int:
    return main(
        [
            "convert",
            "--events",
            str(events),
            "--data-root",
            str(root),
            "--modality",
            modality,
            "--out",
            str(out),
            "--verify-events",
            "2",
            "--workers",
            "2",
            *extra,
        ]
    )


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


@pytest.fixture(scope="module")
def twin_stores(
    event_index: Path, synthetic_archive: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """All four modalities of the session twin, converted through the CLI."""
    out = tmp_path_factory.mktemp("twin_zarr")
    for m in MODALITIES:
        assert _convert_cli(event_index, synthetic_archive, m, out / f"{m}.zarr") == 0
    return out


@pytest.mark.parametrize("modality", MODALITIES)
def test_twin_store_holds_exactly_the_source_values(
    modality: str, twin_stores: Path, event_index: Path, synthetic_archive: Path
) -> None:
    index = read_event_index(event_index)
    ds = open_archive(twin_stores / f"{modality}.zarr")
    arr = zarr.open_array(twin_stores / f"{modality}.zarr" / modality, mode="r")
    assert list(ds["event"].values) == index["id"].tolist()  # event-index order
    assert ds[modality].dims == ("event", "time", "y", "x")
    assert ds["time"].values.tolist() == list(NOMINAL_OFFSETS)
    expected_dtype = {"vil": np.uint8, "ir069": np.int16, "ir107": np.int16, "lght": np.int32}
    assert arr.dtype == expected_dtype[modality]
    assert arr.chunks[:2] == (1, DEFAULT_LAYOUT.time_chunk)
    meta = json.loads(event_index.with_suffix(".json").read_text())
    assert ds.attrs["data_fingerprint"] == meta["data_fingerprint"]
    assert "laea" in ds.attrs["projection"]
    assert np.isfinite(ds["llcrnrlat"].values).all()  # bounds from the catalog
    flashes_total = 0
    for row, src in enumerate(event_sources(index, modality)):
        path = raw_file(synthetic_archive, src.file)
        if modality == "lght":
            flashes = read_lightning_event(path, src.event_id)
            expected = np.moveaxis(grid_lightning(flashes, src.size), -1, 0)
            flashes_total += int(expected.sum())
            assert ds["source_index"].values[row] == -1
        else:
            expected = np.moveaxis(read_raster_event(path, modality, src.index), -1, 0)
            assert ds["source_index"].values[row] == src.index
        assert ds["source_file"].values[row] == src.file
        stored = np.asarray(arr[row])
        assert stored.dtype == expected.dtype
        np.testing.assert_array_equal(stored, expected)
        # a window read back (the loader's access pattern) is the same slice
        np.testing.assert_array_equal(np.asarray(arr[row, 12:25]), expected[12:25])
    if modality == "lght":
        assert flashes_total > 0


def test_twin_store_attributes(twin_stores: Path) -> None:
    vil = open_archive(twin_stores / "vil.zarr")
    raw_vil = zarr.open_array(twin_stores / "vil.zarr" / "vil", mode="r")
    assert raw_vil.attrs["missing_value"] == 255
    assert vil["vil"].attrs["long_name"].startswith("vertically integrated liquid")
    assert "missing_pixels" in vil.coords
    ir = open_archive(twin_stores / "ir107.zarr")  # CF decoding: degrees C
    raw_ir = zarr.open_array(twin_stores / "ir107.zarr" / "ir107", mode="r")
    assert raw_ir.attrs["scale_factor"] == pytest.approx(0.01)
    np.testing.assert_allclose(ir["ir107"].values[0, 0], raw_ir[0, 0] * 0.01, rtol=1e-6)
    assert vil["y"].attrs["units"] == "m"
    assert vil["x"].values[0] == pytest.approx(384_000 / 32 / 2)


def _write_lightning_twin(root: Path, flashes: np.ndarray, size: int = 4) -> Path:
    """One event (S1) with the given flashes, grid ``size``; returns events.csv."""
    write_lightning_file(root / "data" / LGHT_FILE, {"S1": flashes})
    write_raster_file(
        root / "data" / RASTER_FILES["vil"],
        "vil",
        ["S1"],
        np.zeros((1, 8 * size // 8 * 8, 8 * size // 8 * 8, 49), np.uint8),
    )
    pd.DataFrame(
        [
            {
                "id": "S1",
                "time_utc": "2019-07-01 12:00",
                "vil_file": RASTER_FILES["vil"],
                "vil_index": 0,
                "vil_size": 8 * size // 8 * 8,
                "lght_file": LGHT_FILE,
                "lght_index": -1,
                "lght_size": size,
            }
        ]
    ).to_csv(root / "events.csv", index=False)
    (root / "events.json").write_text(json.dumps({"data_fingerprint": "fp"}))
    return root / "events.csv"


def test_lightning_uses_sevir_binning(tmp_path: Path) -> None:
    # columns t (s), lat, lon, x, y; grid 4 x 4
    flashes = np.array(
        [
            [-7500.0, 0, 0, 0.5, 0.5],  # before -120 min -> frame 0
            [-7200.0, 0, 0, 1.2, 0.1],  # exactly -120 min -> frame 0
            [0.0, 0, 0, 3.9, 2.0],  # t = 0 -> frame 24
            [299.0, 0, 0, 3.0, 2.5],  # -> frame 24
            [300.0, 0, 0, 3.0, 2.5],  # -> frame 25
            [7200.0, 0, 0, 2.0, 3.0],  # +120 min -> frame 48
            [9000.0, 0, 0, 2.0, 3.0],  # after +120 min -> frame 48
            [0.0, 0, 0, 4.0, 1.0],  # x outside the grid -> dropped
            [0.0, 0, 0, 1.0, -0.5],  # y outside the grid -> dropped
        ]
    )
    events = _write_lightning_twin(tmp_path, flashes)
    out = tmp_path / "lght.zarr"
    convert_modality(events, tmp_path, "lght", out)
    counts = np.asarray(zarr.open_array(out / "lght", mode="r")[0])
    expected = np.zeros((49, 4, 4), np.int32)
    for frame, y, x in [
        (0, 0, 0),
        (0, 0, 1),
        (24, 2, 3),
        (24, 2, 3),
        (25, 2, 3),
        (48, 3, 2),
        (48, 3, 2),
    ]:
        expected[frame, y, x] += 1
    np.testing.assert_array_equal(counts, expected)


def test_rerun_is_idempotent_and_counts_missing_vil(tmp_path: Path) -> None:
    twin = make_twin(tmp_path, n_events=3, size=16, missing_vil=7)
    out = tmp_path / "zarr" / "vil.zarr"
    first = convert_modality(twin.events_csv, tmp_path, "vil", out)
    before = np.asarray(zarr.open_array(out / "vil", mode="r")[:])
    files_before = sorted(p.relative_to(out) for p in out.rglob("*"))
    second = convert_modality(twin.events_csv, tmp_path, "vil", out, workers=2)
    after = np.asarray(zarr.open_array(out / "vil", mode="r")[:])
    np.testing.assert_array_equal(before, after)
    assert files_before == sorted(p.relative_to(out) for p in out.rglob("*"))
    assert first.events == second.events == 3
    assert _leftovers(out.parent) == []
    ds = open_archive(out)
    assert ds["missing_pixels"].values.tolist() == [7, 0, 0]
    # the raster files list events in reverse order: the index order rules
    np.testing.assert_array_equal(after, np.moveaxis(twin.rasters["vil"], -1, 1))


def test_event_without_the_modality_is_left_out(tmp_path: Path) -> None:
    twin = make_twin(tmp_path, n_events=3, size=16, without_lght=("S1001",))
    out = tmp_path / "lght.zarr"
    summary = convert_modality(twin.events_csv, tmp_path, "lght", out, verify_events=5)
    assert summary.events == 2
    assert list(open_archive(out)["event"].values) == ["S1000", "S1002"]
    assert summary.verified == ("S1000", "S1002")


def test_truncated_hdf5_names_file_and_event_and_leaves_no_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    twin = make_twin(tmp_path, n_events=3, size=16)
    h5 = tmp_path / "data" / RASTER_FILES["ir069"]
    data = h5.read_bytes()
    h5.write_bytes(data[: len(data) // 2])
    out = tmp_path / "zarr" / "ir069.zarr"
    assert _convert_cli(twin.events_csv, tmp_path, "ir069", out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1  # one line, no traceback
    assert str(h5) in err and "S100" in err and "truncated or corrupt" in err
    assert not out.exists()
    assert _leftovers(out.parent) == []


def test_truncation_keeps_an_existing_store(tmp_path: Path) -> None:
    twin = make_twin(tmp_path, n_events=2, size=16)
    out = tmp_path / "vil.zarr"
    convert_modality(twin.events_csv, tmp_path, "vil", out)
    h5 = tmp_path / "data" / RASTER_FILES["vil"]
    h5.write_bytes(h5.read_bytes()[:2000])
    with pytest.raises(StormFusionError, match=r"vil event S100[01]: .*truncated"):
        convert_modality(twin.events_csv, tmp_path, "vil", out)
    assert zarr.open_array(out / "vil", mode="r").shape == (2, 49, 16, 16)


def test_index_naming_a_missing_file_is_an_error(tmp_path: Path) -> None:
    twin = make_twin(tmp_path, n_events=2, size=16)
    (tmp_path / "data" / RASTER_FILES["ir107"]).unlink()
    with pytest.raises(StormFusionError, match=r"missing under .*ir107.*\(2 events\)"):
        convert_modality(twin.events_csv, tmp_path, "ir107", tmp_path / "ir107.zarr")
    assert not (tmp_path / "ir107.zarr").exists()


def test_wrong_event_at_index_is_an_error(tmp_path: Path) -> None:
    twin = make_twin(tmp_path, n_events=2, size=16)
    index = pd.read_csv(twin.events_csv)
    index.loc[0, "vil_index"], index.loc[1, "vil_index"] = 0, 0  # S1000 is at 1
    index.to_csv(twin.events_csv, index=False)
    with pytest.raises(StormFusionError, match="holds event 'S1001', expected 'S1000'"):
        convert_modality(twin.events_csv, tmp_path, "vil", tmp_path / "vil.zarr")


def test_verification_detects_a_store_that_differs_from_the_source(tmp_path: Path) -> None:
    twin = make_twin(tmp_path, n_events=3, size=16)
    out = tmp_path / "vil.zarr"
    convert_modality(twin.events_csv, tmp_path, "vil", out, verify_events=0)
    sources = event_sources(read_event_index(twin.events_csv), "vil")
    assert verify_store(out, tmp_path, "vil", sources, 3) == ("S1000", "S1001", "S1002")
    arr = zarr.open_array(out / "vil", mode="r+")
    arr[2, 5, 0, 0] = (int(arr[2, 5, 0, 0]) + 1) % 255
    with pytest.raises(StormFusionError, match="verification failed: vil event S1002"):
        verify_store(out, tmp_path, "vil", sources, 3)


def test_sharded_layout_reads_back_the_same(tmp_path: Path) -> None:
    twin = make_twin(tmp_path, n_events=2, size=16)
    out = tmp_path / "ir107.zarr"
    convert_modality(
        twin.events_csv,
        tmp_path,
        "ir107",
        out,
        layout=StoreLayout(time_chunk=13, compressor="blosc-lz4", shard=True),
    )
    arr = zarr.open_array(out / "ir107", mode="r")
    np.testing.assert_array_equal(np.asarray(arr[:]), np.moveaxis(twin.rasters["ir107"], -1, 1))


def test_bad_options_are_errors(tmp_path: Path) -> None:
    twin = make_twin(tmp_path, n_events=1, size=16)
    with pytest.raises(StormFusionError, match="cannot convert modality 'vis'"):
        convert_modality(twin.events_csv, tmp_path, "vis", tmp_path / "v.zarr")
    (tmp_path / "events.json").unlink()
    with pytest.raises(StormFusionError, match=r"events\.json: event index metadata not found"):
        convert_modality(twin.events_csv, tmp_path, "vil", tmp_path / "v.zarr")
