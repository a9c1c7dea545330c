"""The score step on small stores: known answers, brute-force counts, mismatches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stormfusion.cli import main
from tests.verification_support import T_OUT, brute_counts, make_case, write_forecast_store

THRESHOLDS = (16, 74, 133, 160, 181, 219)


def _score(case_root: Path, forecast: Path, zarr_dir: Path, windows: Path) -> tuple[int, Path]:
    out = case_root / "results" / "scores"
    rc = main(
        [
            "score",
            "--forecast",
            str(forecast),
            "--truth",
            str(zarr_dir / "vil.zarr"),
            "--windows",
            str(windows),
            "--out-csv",
            str(out / "run.csv"),
            "--out-json",
            str(out / "run.json"),
            "--out-counts",
            str(out / "run.counts.npz"),
            "--batch-size",
            "4",
        ]
    )
    return rc, out


def test_score_persistence_against_brute_force(tmp_path: Path) -> None:
    case = make_case(tmp_path)
    persistence = np.repeat(case.last_input[:, None], T_OUT, axis=1)
    path = write_forecast_store(
        case.forecast_path("persistence"), persistence, case.windows, "persistence", "persistence"
    )
    rc, out = _score(tmp_path, path, case.zarr_dir, case.windows_csv)
    assert rc == 0
    table = pd.read_csv(out / "run.csv")
    summary = json.loads((out / "run.json").read_text())
    pixel = table[table["pool"] == "none"]
    for t in THRESHOLDS:
        for lead in range(T_OUT):
            row = pixel[(pixel["threshold"] == t) & (pixel["lead_time"] == str(5 * (lead + 1)))]
            want = brute_counts(persistence[:, lead], case.truth[:, lead], t)
            assert (
                int(row["hits"].iloc[0]),
                int(row["misses"].iloc[0]),
                int(row["false_alarms"].iloc[0]),
            ) == want
    # CSI-M as published from brute-force counts pooled over leads
    csis = []
    for t in THRESHOLDS:
        h, m, f = brute_counts(persistence, case.truth, t)
        if h + m + f:
            csis.append(h / (h + m + f))
    assert summary["csi_m"] == pytest.approx(np.mean(csis))
    err = persistence.astype(float) - case.truth
    assert summary["mse"] == pytest.approx(np.mean(err**2))
    assert summary["mae"] == pytest.approx(np.mean(np.abs(err)))
    assert summary["lpips"] > 0 and summary["lpips_reason"] is None  # real LPIPS (make setup)
    assert summary["excluded"] == {"truth_pixels": 0, "frames_skipped_by_ssim_msssim_lpips": 0}
    assert summary["data_fingerprint"] == "fp-verification-test"
    assert summary["n_events"] == 3 and summary["n_samples"] == 9
    assert (table["data_fingerprint"] == "fp-verification-test").all()
    assert table["git_commit"].notna().all() and table["config_hash"].notna().all()
    with np.load(out / "run.counts.npz") as data:
        assert json.loads(str(data["meta"]))["provenance"]["scoring"]["package_version"]
        assert data["counts"].shape == (3, 6, T_OUT, 4)
        assert data["counts_max4"].shape == (3, 6, T_OUT, 4)
        per_lead = pixel[pixel["lead_time"] != "all"]
        assert int(data["counts"][..., 0].sum()) == int(per_lead["hits"].sum())


def test_perfect_forecast_scores_one(tmp_path: Path) -> None:
    case = make_case(tmp_path, n_events=2)
    path = write_forecast_store(
        case.forecast_path("perfect"), case.truth, case.windows, "perfect", "persistence"
    )
    rc, out = _score(tmp_path, path, case.zarr_dir, case.windows_csv)
    assert rc == 0
    summary = json.loads((out / "run.json").read_text())
    defined = [v for v in summary["csi"].values() if v is not None]
    assert defined and all(v == 1.0 for v in defined)
    assert summary["mse"] == 0.0 and summary["ssim"] == pytest.approx(1.0)
    assert summary["lpips"] == pytest.approx(0.0, abs=1e-6)  # LPIPS(x, x) = 0
    assert summary["conservation"] == 0.0
    assert summary["csi_m"] == 1.0 and summary["pooled"]["max4"]["csi_m"] == 1.0


def test_forecasts_of_other_windows_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = make_case(tmp_path, n_events=2)
    shuffled = case.windows.iloc[::-1].reset_index(drop=True)
    path = write_forecast_store(
        case.forecast_path("x"), case.truth[::-1], shuffled, "x", "persistence"
    )
    rc, out = _score(tmp_path, path, case.zarr_dir, case.windows_csv)
    assert rc == 2
    assert "forecasts and windows differ" in capsys.readouterr().err
    assert not (out / "run.csv").exists() and not (out / "run.counts.npz").exists()


def test_forecasts_from_other_data_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = make_case(tmp_path, n_events=2)
    path = write_forecast_store(
        case.forecast_path("x"), case.truth, case.windows, "x", "persistence", fingerprint="another"
    )
    rc, _ = _score(tmp_path, path, case.zarr_dir, case.windows_csv)
    assert rc == 2
    assert "another" in capsys.readouterr().err


def test_missing_truth_is_excluded_from_every_score(tmp_path: Path) -> None:
    case = make_case(tmp_path, missing=5)
    assert (case.truth == 255).sum() == 5 * case.truth.shape[0] * T_OUT
    persistence = np.where(case.last_input == 255, 0, case.last_input)
    persistence = np.repeat(persistence[:, None], T_OUT, axis=1)
    path = write_forecast_store(
        case.forecast_path("p"), persistence, case.windows, "p", "persistence"
    )
    rc, out = _score(tmp_path, path, case.zarr_dir, case.windows_csv)
    assert rc == 0
    summary = json.loads((out / "run.json").read_text())
    ok = case.truth != 255
    err = persistence.astype(float) - case.truth
    assert summary["mse"] == pytest.approx(np.mean(err[ok] ** 2))
    csis = []
    for t in THRESHOLDS:
        h, m, f = brute_counts(persistence, case.truth, t)
        if h + m + f:
            csis.append(h / (h + m + f))
    assert summary["csi_m"] == pytest.approx(np.mean(csis))
    n_frames = case.truth.shape[0] * T_OUT
    assert summary["excluded"] == {
        "truth_pixels": int((~ok).sum()),
        "frames_skipped_by_ssim_msssim_lpips": n_frames,  # every frame has a missing pixel
    }
    assert summary["ssim"] is None and summary["lpips"] is None
    # a 4 x 4 cell holding a missing truth pixel is not counted at all
    cells = (32 // 4) ** 2 * n_frames
    assert 0 < summary["pooled"]["max4"]["excluded_cells"] <= 5 * n_frames < cells
    assert "255 = missing" in summary["protocol"]["missing_values"]


def _forecast_with(case_root: Path, name: str, forecast: np.ndarray, case: object) -> Path:
    return write_forecast_store(
        case_root / "results" / "forecasts" / f"{name}.zarr",
        forecast,
        case.windows,  # type: ignore[attr-defined]
        name,
        "persistence",
        dtype="float32",
    )


@pytest.mark.parametrize(
    ("value", "message"), [(np.nan, "NaN, infinite or outside"), (300.0, "outside 0..255")]
)
def test_bad_forecast_values_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: float, message: str
) -> None:
    case = make_case(tmp_path, n_events=2)
    forecast = case.truth.astype(np.float32)
    forecast[4, 1, 2, 3] = value
    path = _forecast_with(tmp_path, "bad", forecast, case)
    rc, out = _score(tmp_path, path, case.zarr_dir, case.windows_csv)
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "sample 4" in err
    assert str(case.windows["event_id"][4]) in err and "bad.zarr" in err
    assert not out.exists() or not any(out.iterdir())


def test_lead_count_mismatch_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = make_case(tmp_path, n_events=2)
    path = _forecast_with(tmp_path, "short", case.truth[:, :-1].astype(np.float32), case)
    rc, _ = _score(tmp_path, path, case.zarr_dir, case.windows_csv)
    assert rc == 2 and f"have {T_OUT} target frames" in capsys.readouterr().err


def test_truth_with_a_deleted_chunk_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = make_case(tmp_path, n_events=2)
    path = write_forecast_store(
        case.forecast_path("p"), case.truth, case.windows, "p", "persistence"
    )
    chunk = case.zarr_dir / "vil.zarr" / "vil" / "c" / "1" / "0" / "0" / "0"
    assert chunk.is_file()
    chunk.unlink()  # event row 1, frames 0..6: the targets of its first window
    rc, out = _score(tmp_path, path, case.zarr_dir, case.windows_csv)
    err = capsys.readouterr().err
    assert rc == 2 and "missing" in err and str(case.windows["event_id"][3]) in err
    assert "vil.zarr" in err and not (out / "run.json").exists()


def test_forecast_on_another_grid_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = make_case(tmp_path, n_events=2)
    cropped = case.truth[..., :24, :24]  # a 24 x 24 crop of the 32 x 32 study grid
    path = write_forecast_store(case.forecast_path("c"), cropped, case.windows, "c", "c")
    out = tmp_path / "scores"
    argv = [
        "score",
        *("--forecast", str(path), "--truth", str(case.zarr_dir / "vil.zarr")),
        *("--windows", str(case.windows_csv), "--image-size", "32"),
        *("--out-csv", str(out / "c.csv"), "--out-json", str(out / "c.json")),
        *("--out-counts", str(out / "c.counts.npz")),
    ]
    assert main(argv) == 2
    assert "24 x 24 but the study's grid is 32 x 32" in capsys.readouterr().err
    assert not out.exists()


def test_protocol_declares_the_windows_manifest_digest(tmp_path: Path) -> None:
    case = make_case(tmp_path, n_events=1)
    path = write_forecast_store(case.forecast_path("p"), case.truth, case.windows, "p", "p")
    manifest = case.windows_csv.parent / "windows_manifest.json"
    manifest.write_text(json.dumps({"digest": "sha256:feedbeef", "windows": []}))
    out = tmp_path / "scores"
    argv = [
        "score",
        *("--forecast", str(path), "--truth", str(case.zarr_dir / "vil.zarr")),
        *("--windows", str(case.windows_csv), "--windows-manifest", str(manifest)),
        *("--out-csv", str(out / "p.csv"), "--out-json", str(out / "p.json")),
        *("--out-counts", str(out / "p.counts.npz")),
    ]
    assert main(argv) == 0
    protocol = json.loads((out / "p.json").read_text())["protocol"]
    assert protocol["windows_manifest_digest"] == "sha256:feedbeef"
    assert protocol["input_frames"] == 4 and protocol["output_frames"] == T_OUT
    assert protocol["split"] == "val" and protocol["event_definition"].startswith("value >=")
    assert set(protocol["pooling_kernels"]) == {"max4", "max16", "avg4", "avg16"}
    assert "x / 255 * 2 - 1" in protocol["lpips_input"]
    assert "samples x lead times x pixels" in protocol["count_pooling"]["csi_m"]
    manifest.write_text(json.dumps({"windows": []}))
    assert main(argv) == 2
