"""Readers of the raw HDF5 files and the official lightning gridding (known answers)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from stormfusion.data import hdf5
from stormfusion.data.catalog import raw_path
from stormfusion.data.selection import read_event_index
from stormfusion.errors import StormFusionError


def _flash(t_min: float, x: float, y: float) -> list[float]:
    return [t_min * 60.0, 35.0, -97.0, x, y]


def test_grid_lightning_known_answer_with_edge_frames() -> None:
    flashes = np.array(
        [
            _flash(-130.0, 1.2, 2.9),  # before -120 min: frame 0
            _flash(-120.0, 1.0, 2.0),  # exactly T_0: frame 0
            _flash(-115.0, 47.99, 0.0),  # exactly T_1: frame 1, last column
            _flash(-115.01, 3.0, 3.0),  # just before T_1: frame 0
            _flash(0.0, 5.5, 6.5),  # T_24: frame 24
            _flash(119.99, 0.0, 47.5),  # frame 47
            _flash(120.0, 4.0, 4.0),  # +120 min: frame 48
            _flash(300.0, 4.0, 4.0),  # later still: frame 48
            _flash(0.0, 48.0, 1.0),  # x = 48: outside, dropped
            _flash(0.0, -0.5, 1.0),  # x < 0: dropped
            _flash(0.0, 1.0, 48.2),  # y > 47: dropped
        ]
    )
    grid = hdf5.grid_lightning(flashes)
    assert grid.shape == (48, 48, 49) and grid.dtype == np.int32
    expected = np.zeros_like(grid)
    for y, x, k in [
        (2, 1, 0),
        (2, 1, 0),
        (0, 47, 1),
        (3, 3, 0),
        (6, 5, 24),
        (47, 0, 47),
        (4, 4, 48),
        (4, 4, 48),
    ]:
        expected[y, x, k] += 1
    np.testing.assert_array_equal(grid, expected)
    assert hdf5.grid_lightning(np.zeros((0, 5))).sum() == 0


def test_grid_lightning_matches_the_reference_loop() -> None:
    """Against a plain re-statement of the official code's rule, on random flashes."""
    rng = np.random.default_rng(0)
    n = 2000
    flashes = np.column_stack(
        [
            rng.uniform(-8000, 8000, n),
            np.zeros(n),
            np.zeros(n),
            rng.uniform(-2, 50, n),
            rng.uniform(-2, 50, n),
        ]
    )
    edges = np.arange(-120, 121, 5) * 60.0
    ref = np.zeros((48, 48, 49), dtype=np.int64)
    for t, _, _, x, y in flashes:
        if not (0 <= x < 48 and 0 <= y < 48):
            continue
        k = int(np.digitize(t, edges)) - 1
        ref[int(y), int(x), 0 if k == -1 else k] += 1
    np.testing.assert_array_equal(hdf5.grid_lightning(flashes), ref)


def test_read_event_through_the_index(synthetic_archive: Path, event_index: Path) -> None:
    index = read_event_index(event_index)
    row = index.iloc[0]
    for m, side, dtype in (("vil", 32, np.uint8), ("ir069", 16, np.int16), ("ir107", 16, np.int16)):
        arr = hdf5.read_raster_event(
            raw_path(synthetic_archive, row[f"{m}_file"]),
            m,
            int(row[f"{m}_index"]),
            expected_id=row["id"],
        )
        assert arr.shape == (side, side, 49) and arr.dtype == dtype
        part = hdf5.read_raster_event(
            raw_path(synthetic_archive, row[f"{m}_file"]),
            m,
            int(row[f"{m}_index"]),
            frames=slice(12, 18),
        )
        np.testing.assert_array_equal(part, arr[..., 12:18])
    flashes = hdf5.read_lightning_event(raw_path(synthetic_archive, row["lght_file"]), row["id"])
    assert flashes.shape[1] == 5 and flashes.dtype == np.float64
    assert hdf5.grid_lightning(flashes, size=int(row["lght_size"])).sum() <= len(flashes)


def test_reader_errors(tmp_path: Path, synthetic_archive: Path, event_index: Path) -> None:
    index = read_event_index(event_index)
    row = index.iloc[0]
    vil_path = raw_path(synthetic_archive, row["vil_file"])
    with pytest.raises(StormFusionError, match="out of range"):
        hdf5.read_raster_event(vil_path, "vil", 99)
    with pytest.raises(StormFusionError, match="expected 'S0'"):
        hdf5.read_raster_event(vil_path, "vil", int(row["vil_index"]), expected_id="S0")
    with pytest.raises(StormFusionError, match="no dataset 'ir069'"):
        hdf5.read_raster_event(vil_path, "ir069", 0)
    with pytest.raises(StormFusionError, match="not a raster"):
        hdf5.read_raster_event(vil_path, "lght", 0)
    lght_path = raw_path(synthetic_archive, row["lght_file"])
    with pytest.raises(StormFusionError, match="no lightning dataset for event 'S0'"):
        hdf5.read_lightning_event(lght_path, "S0")
    with pytest.raises(StormFusionError, match="no 'id' dataset"):
        hdf5.read_ids(lght_path)
    # a truncated copy (an interrupted download) and a file that is not HDF5 at all
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(vil_path.read_bytes()[: vil_path.stat().st_size // 2])
    with pytest.raises(StormFusionError, match=r"truncated\.h5: .*truncated"):
        hdf5.read_raster_event(truncated, "vil", int(row["vil_index"]))
    text = tmp_path / "text.h5"
    text.write_text("id,file_name\n")
    with pytest.raises(StormFusionError, match="not a readable HDF5 file"):
        hdf5.read_raster_event(text, "vil", 0)


def test_reader_checks_layout(tmp_path: Path) -> None:
    path = tmp_path / "wrong.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("id", data=np.array([b"S1"]))
        f.create_dataset("vil", data=np.zeros((1, 8, 8, 49), dtype=np.int16))
    with pytest.raises(StormFusionError, match="dtype int16, expected uint8"):
        hdf5.read_raster_event(path, "vil", 0)
    with h5py.File(path, "w") as f:
        f.create_dataset("id", data=np.array([b"S1"]))
        f.create_dataset("vil", data=np.zeros((1, 49, 8, 8), dtype=np.uint8))  # time first
        f.create_dataset("S1", data=np.zeros((3, 4), dtype=np.float32))
        f.create_dataset("S2", data=np.zeros((0, 5), dtype=np.float32))
    with pytest.raises(StormFusionError, match=r"expected \(N, H, W, 49\)"):
        hdf5.read_raster_event(path, "vil", 0)
    with pytest.raises(StormFusionError, match=r"expected \(n, 5\)"):
        hdf5.read_lightning_event(path, "S1")
    assert hdf5.read_lightning_event(path, "S2").shape == (0, 5)


def test_writers_round_trip(tmp_path: Path) -> None:
    data = np.arange(2 * 8 * 8 * 49, dtype=np.int64).reshape(2, 8, 8, 49) % 250
    hdf5.write_raster_file(tmp_path / "v.h5", "vil", ["S1", "R2"], data)
    assert hdf5.read_ids(tmp_path / "v.h5") == ["S1", "R2"]
    np.testing.assert_array_equal(hdf5.read_raster_event(tmp_path / "v.h5", "vil", 1), data[1])
    hdf5.write_lightning_file(tmp_path / "l.h5", {"S1": np.ones((3, 5)), "R2": np.zeros((0, 5))})
    assert hdf5.read_lightning_event(tmp_path / "l.h5", "S1").shape == (3, 5)
    assert hdf5.read_lightning_event(tmp_path / "l.h5", "R2").shape == (0, 5)
    with pytest.raises(ValueError, match="does not fit"):
        hdf5.write_raster_file(tmp_path / "bad.h5", "vil", ["S1"], data)
    assert not (tmp_path / "bad.h5").exists()
