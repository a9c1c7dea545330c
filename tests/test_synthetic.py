"""The synthetic twin writes the real SEVIR layout (every fact of docs/data.md it touches)
and weather that makes forecasting a real task. Files are read back through the same readers
as real files (``stormfusion.data.hdf5``, ``stormfusion.data.catalog``)."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from stormfusion.cli import main
from stormfusion.data import hdf5
from stormfusion.data.catalog import parse_minute_offsets, raw_path, read_catalog
from stormfusion.data.projection import laea_forward, laea_inverse
from stormfusion.data.sevir import CATALOG_COLUMNS, N_FRAMES, NOMINAL_OFFSETS, PROJ
from stormfusion.data.synthetic import (
    lightning_file_name,
    random_file_name,
    storm_file_name,
    synthesize_archive,
    vil_threshold_fractions,
)
from stormfusion.data.weather import _Cells, _envelope, _step, _Wind, simulate_event
from stormfusion.errors import StormFusionError
from stormfusion.io import sha256_file

SIZE = 32  # the session twin's image size (tests/conftest.py)
NAME = re.compile(
    r"^(vil|ir069|ir107)/(\d{4})/SEVIR_(VIL|IR069|IR107)_(STORMEVENTS|RANDOMEVENTS)_\2_(\d{4})_(\d{4})\.h5$"
    r"|^lght/(\d{4})/SEVIR_LGHT_ALLEVENTS_\7_(\d{2})01_(\d{2})01\.h5$"
)


@pytest.fixture(scope="module")
def catalog(synthetic_archive: Path) -> pd.DataFrame:
    return read_catalog(synthetic_archive / "CATALOG.csv")


def test_file_names_follow_the_bucket_pattern() -> None:
    import datetime as dt

    assert storm_file_name("vil", dt.datetime(2019, 7, 3)) == (
        "vil/2019/SEVIR_VIL_STORMEVENTS_2019_0701_1231.h5"
    )
    assert storm_file_name("ir069", dt.datetime(2018, 6, 30)) == (
        "ir069/2018/SEVIR_IR069_STORMEVENTS_2018_0101_0630.h5"
    )
    assert random_file_name("ir107", dt.datetime(2019, 5, 1)) == (
        "ir107/2019/SEVIR_IR107_RANDOMEVENTS_2019_0501_0831.h5"
    )
    assert random_file_name("vil", dt.datetime(2019, 12, 31)) == (
        "vil/2019/SEVIR_VIL_RANDOMEVENTS_2019_0901_1231.h5"
    )
    assert lightning_file_name(dt.datetime(2019, 7, 9)) == (
        "lght/2019/SEVIR_LGHT_ALLEVENTS_2019_0701_0801.h5"
    )
    assert lightning_file_name(dt.datetime(2018, 12, 9)) == (
        "lght/2018/SEVIR_LGHT_ALLEVENTS_2018_1201_0101.h5"
    )


def test_catalog_columns_rows_and_ids(synthetic_archive: Path, catalog: pd.DataFrame) -> None:
    header = (synthetic_archive / "CATALOG.csv").read_text().splitlines()[0]
    assert header.split(",") == list(CATALOG_COLUMNS)  # 21 columns, in order
    assert len(CATALOG_COLUMNS) == 21
    storms = catalog[catalog["id"].str.startswith("S")]
    randoms = catalog[catalog["id"].str.startswith("R")]
    assert storms["id"].nunique() == 6 and randoms["id"].nunique() == 2
    assert (storms["id"] == "S" + storms["event_id"].astype(int).astype(str)).all()
    assert randoms[["episode_id", "event_id"]].isna().all().all()  # empty -> NaN (float)
    assert randoms["event_type"].isna().all()
    assert catalog["episode_id"].dtype == np.float64
    assert set(storms["event_type"]) <= {
        "Hail",
        "Thunderstorm Wind",
        "Tornado",
        "Heavy Rain",
        "Flash Flood",
        "Lightning",
        "Funnel Cloud",
        "Flood",
    }
    assert set(catalog["img_type"]) == {"vil", "ir069", "ir107", "lght"}
    sizes = catalog.groupby("img_type")["size_x"].unique().to_dict()
    assert {k: list(v) for k, v in sizes.items()} == {
        "vil": [SIZE],
        "ir069": [SIZE // 2],
        "ir107": [SIZE // 2],
        "lght": [SIZE // 8],
    }
    assert (catalog["size_x"] == catalog["size_y"]).all()
    assert (catalog["height_m"] == 384000).all() and (catalog["width_m"] == 384000).all()
    assert (catalog["proj"] == PROJ).all()
    assert all(NAME.match(n) for n in catalog["file_name"]), catalog["file_name"].tolist()


def test_catalog_defects_are_planted(synthetic_archive: Path, catalog: pd.DataFrame) -> None:
    manifest = json.loads((synthetic_archive / "synthetic_manifest.json").read_text())
    dup = catalog[catalog.duplicated(subset=["id", "img_type"], keep=False)]
    assert set(dup["id"]) == {manifest["duplicated_id"]} and len(dup) == 2
    missing = catalog[(catalog["img_type"] == "vil") & (catalog["pct_missing"] > 0)]
    assert set(missing["id"]) == set(manifest["missing_ids"]) and len(missing) == 1
    row = missing.iloc[0]
    vil = hdf5.read_raster_event(
        raw_path(synthetic_archive, row["file_name"]), "vil", int(row["file_index"]), row["id"]
    )
    assert 100.0 * (vil == 255).mean() == pytest.approx(row["pct_missing"], abs=1e-3)


def test_minute_offsets_and_time(catalog: pd.DataFrame) -> None:
    raster = catalog[catalog["img_type"] != "lght"]
    for text in raster["minute_offsets"]:
        offsets = parse_minute_offsets(text)
        assert len(offsets) == N_FRAMES
        assert np.all(np.diff(offsets) == 5)
        assert abs(offsets[0] - NOMINAL_OFFSETS[0]) <= 2
    assert (catalog.loc[catalog["img_type"] == "lght", "minute_offsets"] == "").all()
    # events on both sides of both date-split cuts
    times = catalog.drop_duplicates("id")["time_utc"]
    assert (times < "2019-01-01").any()
    assert ((times >= "2019-01-01") & (times < "2019-06-01")).any()
    assert (times >= "2019-06-01").any()


def test_corners_are_the_laea_patch(catalog: pd.DataFrame) -> None:
    x0, y0 = laea_forward(catalog["llcrnrlat"].to_numpy(), catalog["llcrnrlon"].to_numpy())
    x1, y1 = laea_forward(catalog["urcrnrlat"].to_numpy(), catalog["urcrnrlon"].to_numpy())
    np.testing.assert_allclose(x1 - x0, 384000, atol=2.0)
    np.testing.assert_allclose(y1 - y0, 384000, atol=2.0)
    assert catalog["llcrnrlat"].between(20, 50).all()
    assert catalog["llcrnrlon"].between(-125, -65).all()
    lat, lon = laea_inverse(0.0, 0.0)
    assert (float(lat), float(lon)) == pytest.approx((38.0, -98.0))


def test_raster_files_layout(synthetic_archive: Path, catalog: pd.DataFrame) -> None:
    dtypes = {"vil": np.uint8, "ir069": np.int16, "ir107": np.int16}
    sides = {"vil": SIZE, "ir069": SIZE // 2, "ir107": SIZE // 2}
    for (file_name, img_type), rows in catalog[catalog["img_type"] != "lght"].groupby(
        ["file_name", "img_type"]
    ):
        path = raw_path(synthetic_archive, file_name)
        with h5py.File(path, "r") as f:
            assert set(f.keys()) == {"id", img_type}
            assert f["id"].dtype.kind == "S"  # byte strings
            ids = hdf5.read_ids(path)
            assert isinstance(f["id"][0], bytes)
            d = f[img_type]
            assert d.dtype == dtypes[img_type]
            assert d.shape == (len(ids), sides[img_type], sides[img_type], N_FRAMES)
        for event_id, index in zip(rows["id"], rows["file_index"], strict=True):
            assert ids[index] == event_id


def test_lightning_files_layout(synthetic_archive: Path, catalog: pd.DataFrame) -> None:
    n_flashes = {}
    for file_name, rows in catalog[catalog["img_type"] == "lght"].groupby("file_name"):
        path = raw_path(synthetic_archive, file_name)
        with h5py.File(path, "r") as f:
            assert "id" not in f
            assert set(f.keys()) == set(rows["id"])
        for event_id in rows["id"]:
            flashes = hdf5.read_lightning_event(path, event_id)
            assert flashes.ndim == 2 and flashes.shape[1] == 5
            n_flashes[event_id] = len(flashes)
            if len(flashes):
                t, lat, _lon, x, y = flashes.T
                assert ((x >= 0) & (x < SIZE // 8) & (y >= 0) & (y < SIZE // 8)).all()
                assert (t >= -125 * 60).all() and (t < 125 * 60).all()
                row = rows[rows["id"] == event_id].iloc[0]
                assert lat.min() >= row["llcrnrlat"] - 0.5 and lat.max() <= row["urcrnrlat"] + 0.5
    assert any(n == 0 for n in n_flashes.values())  # some events have no flash
    assert any(n > 0 for n in n_flashes.values())


def test_rows_run_south_to_north(synthetic_archive: Path, catalog: pd.DataFrame) -> None:
    """Row 0 is the south edge: flash latitude grows with y, and flashes sit on VIL cores."""
    checked = 0
    storms = catalog[catalog["id"].str.startswith("S")].drop_duplicates(["id", "img_type"])
    for event_id, rows in storms.groupby("id"):
        by_type = rows.set_index("img_type")
        flashes = hdf5.read_lightning_event(
            raw_path(synthetic_archive, by_type.loc["lght", "file_name"]), str(event_id)
        )
        if len(flashes) < 20:
            continue
        t, lat, lon, x, y = flashes.T
        assert np.corrcoef(lat, y)[0, 1] > 0.95 and np.corrcoef(lon, x)[0, 1] > 0.95
        vil = hdf5.read_raster_event(
            raw_path(synthetic_archive, by_type.loc["vil", "file_name"]),
            "vil",
            int(by_type.loc["vil", "file_index"]),
        )
        frame = np.clip(np.digitize(t, hdf5.LIGHTNING_FRAME_EDGES_S) - 1, 0, 48)
        factor = SIZE // (SIZE // 8)
        core = vil[(y * factor).astype(int), (x * factor).astype(int), frame]
        assert (core >= 133).all()  # the flash's VIL pixel, read row = y (south up)
        flipped = vil[SIZE - 1 - (y * factor).astype(int), (x * factor).astype(int), frame]
        assert (flipped >= 133).mean() < 0.5  # north-up reading would miss the cores
        checked += 1
    assert checked >= 2


def test_vil_heavy_tailed(synthetic_archive: Path) -> None:
    frac = vil_threshold_fractions(synthetic_archive)
    values = [frac[t] for t in (16, 74, 133, 160, 181, 219)]
    assert all(a > b for a, b in itertools.pairwise(values))  # strictly rarer
    assert frac[16] < 0.5  # most pixels are 0
    assert frac[181] > 0  # cores above 181 exist
    assert frac[219] < 0.01  # above 219 is rare


def test_weather_moves_grows_and_is_consistent_across_modalities() -> None:
    rng = np.random.default_rng(7)
    ev = simulate_event(rng, 64, storm=True, month=7)
    vil = ev.vil.astype(np.float64)  # (64, 64, 49)
    assert ev.vil.dtype == np.uint8 and ev.ir107.dtype == np.int16
    assert vil.max() <= 254 and (vil == 0).mean() > 0.5
    # cells move: the VIL-weighted centroid drifts a fraction of a pixel to a few per frame
    ys, xs = np.mgrid[0:64, 0:64]
    w = vil.sum(axis=(0, 1))
    cy = (vil * ys[..., None]).sum(axis=(0, 1)) / w
    cx = (vil * xs[..., None]).sum(axis=(0, 1)) / w
    step = np.hypot(np.diff(cx), np.diff(cy))
    assert 0.05 < np.median(step) < 4.0
    # persistence is wrong: frames 30 minutes apart differ substantially
    assert np.abs(vil[..., 18] - vil[..., 12]).mean() > 0.2 * vil[..., 12].mean()
    # IR: coldest over the strongest cores (VIL on the IR grid vs IR 10.7 um)
    vil_ir = vil.reshape(32, 2, 32, 2, N_FRAMES).mean(axis=(1, 3))
    ir = ev.ir107.astype(np.float64)
    strong, clear = vil_ir > 133, vil_ir == 0
    assert ir[strong].mean() < -4000 and ir[clear].mean() > ir[strong].mean() + 3000
    assert ev.ir069.astype(np.float64)[clear].mean() < ir[clear].mean()  # water vapour colder
    assert ir.min() > -7500 and ir.max() < 3500
    # lightning: flashes in cores >= 133 only
    counts = hdf5.grid_lightning(
        np.column_stack([ev.flashes[:, 0], np.zeros((len(ev.flashes), 2)), ev.flashes[:, 1:]]),
        size=8,
    )
    assert counts.sum() == len(ev.flashes) > 0
    vil_max8 = vil.reshape(8, 8, 8, 8, N_FRAMES).max(axis=(1, 3))
    assert (vil_max8[counts > 0] >= 133).all()


def test_random_events_are_quiet() -> None:
    ev = simulate_event(np.random.default_rng(1), 32, storm=False, month=1)
    assert ev.vil.max() < 133 and len(ev.flashes) == 0


def test_deterministic_for_a_seed(tmp_path: Path, synthetic_archive: Path) -> None:
    a = synthesize_archive(tmp_path / "a", n_storm=6, n_random=2, image_size=32, seed=0)
    ref = json.loads((synthetic_archive / "synthetic_manifest.json").read_text())
    assert a["files"] == ref["files"]  # same seed, same bytes (sizes and sha256)
    for entry in a["files"]:
        assert sha256_file(tmp_path / "a" / entry["path"]) == entry["sha256"]
        assert (tmp_path / "a" / entry["path"]).stat().st_size == entry["size"]
    b = synthesize_archive(tmp_path / "b", n_storm=6, n_random=2, image_size=32, seed=1)
    assert b["files"] != a["files"]
    assert not list(tmp_path.glob("*/.synthesize-*"))


def test_cli_and_bad_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "raw"
    args = [
        "--events",
        "2",
        "--random-events",
        "0",
        "--image-size",
        "20",
        "--year",
        "2019",
        "--seed",
        "0",
    ]
    assert main(["synthesize", "--out", str(out), *args]) == 2
    assert "--image-size must be a multiple of 8" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
    assert main(["synthesize", "--out", str(out), "--events", "0", "--image-size", "16"]) == 2
    args = [
        "--events",
        "1",
        "--random-events",
        "1",
        "--image-size",
        "16",
        "--year",
        "2019",
        "--seed",
        "0",
    ]
    assert main(["synthesize", "--out", str(out), *args]) == 0
    assert (out / "synthetic_manifest.json").is_file()


def test_failed_run_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stormfusion.data import synthetic

    calls = {"n": 0}
    real = synthetic.hdf5.write_lightning_file

    def failing(*args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(synthetic.hdf5, "write_lightning_file", failing)
    with pytest.raises(OSError, match="disk full"):
        synthesize_archive(tmp_path, n_storm=3, n_random=0, image_size=16)
    assert list(tmp_path.iterdir()) == []


def test_reads_fail_cleanly_on_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "x.h5"
    bad.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(StormFusionError, match="not a readable HDF5 file"):
        hdf5.read_ids(bad)
    with pytest.raises(StormFusionError, match="not found"):
        hdf5.read_ids(tmp_path / "missing.h5")


def _two_cells(pos: list[list[float]], dev: list[list[float]], split_at: int = -1) -> _Cells:
    n = len(pos)
    return _Cells(
        pos=np.array(pos, dtype=float),
        dev=np.array(dev, dtype=float),
        peak=np.array([200.0, 120.0][:n]),
        birth=np.full(n, -20.0),
        life=np.full(n, 100.0),
        sigma=np.full(n, 8.0),
        elong=np.ones(n),
        theta=np.zeros(n),
        mult=np.ones(n),
        split_at=np.array([split_at, -1][:n], dtype=np.int64),
        host=np.full(n, -1, dtype=np.int64),
    )


def test_cells_split_apart_and_merge_when_converging() -> None:
    calm = _Wind(base=np.zeros(2), amp=0.0, wavelength=300.0, omega=0.0, phase=np.zeros(2))
    rng = np.random.default_rng(0)
    # splitting: a moving cell sheds a child at frame 3; they share the intensity, then part
    cells = _two_cells([[100.0, 100.0]], [[3.0, 0.0]], split_at=3)
    before = float(_envelope(cells, 3)[0])
    for frame in range(4):
        _step(cells, calm, frame, rng)
    assert len(cells) == 2
    after = _envelope(cells, 4)
    assert after[0] < before and after.sum() > 0.8 * before
    gap0 = float(np.hypot(*(cells.pos[0] - cells.pos[1])))
    for frame in range(4, 20):
        _step(cells, calm, frame, rng)
    assert float(np.hypot(*(cells.pos[0] - cells.pos[1]))) > gap0 + 5.0
    assert (cells.host == -1).all()  # diverging: no merge
    # merging: two touching cells closing on each other; the weaker fades into the stronger
    cells = _two_cells([[100.0, 100.0], [112.0, 100.0]], [[0.0, 0.0], [-1.0, 0.0]])
    for frame in range(10):
        _step(cells, calm, frame, rng)
    assert cells.host.tolist() == [-1, 0]
    assert cells.mult[1] < 0.2 and cells.mult[0] > 1.2
    assert float(np.hypot(*(cells.pos[0] - cells.pos[1]))) < 1.0


def test_threshold_fractions_known_answer(tmp_path: Path) -> None:
    """Two events of 4 x 4 x 49 pixels with known values; 255 (missing) is left out."""
    values = np.zeros((2, 4, 4, N_FRAMES), dtype=np.uint8)
    values[0, 0, 0, :] = 16  # 49 pixels at exactly 16
    values[0, 1, 0, :] = 219  # 49 at 219
    values[1, 2, :, :] = 255  # 4 * 49 missing
    values[1, 3, 0, :] = 180  # 49 at 180 (below 181)
    name = "vil/2019/SEVIR_VIL_STORMEVENTS_2019_0701_1231.h5"
    hdf5.write_raster_file(tmp_path / "data" / name, "vil", ["S1", "S2"], values)
    rows = [
        dict.fromkeys(CATALOG_COLUMNS, 0)
        | {
            "id": f"S{i + 1}",
            "file_name": name,
            "file_index": i,
            "img_type": "vil",
            "time_utc": "2019-07-01 00:00:00",
        }
        for i in range(2)
    ]
    pd.DataFrame(rows, columns=list(CATALOG_COLUMNS)).to_csv(tmp_path / "CATALOG.csv", index=False)
    frac = vil_threshold_fractions(tmp_path)
    valid = 2 * 16 * N_FRAMES - 4 * N_FRAMES
    assert frac[16] == pytest.approx(3 * 49 / valid)
    assert frac[74] == frac[133] == frac[160] == pytest.approx(2 * 49 / valid)
    assert frac[181] == frac[219] == pytest.approx(49 / valid)
