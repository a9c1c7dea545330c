"""The tiny twin converted for training and forecasting tests: Zarr stores and windows."""

from __future__ import annotations

from pathlib import Path

from stormfusion.cli import main
from stormfusion.data.sevir import STUDY_MODALITIES


def build_twin_stores(archive: Path, event_index: Path, out: Path) -> dict[str, Path]:
    """Zarr stores and windows (12 in, 6 out, stride 12; 1 of 4 events in val) of a twin."""
    zarr_dir = out / "zarr"
    for m in STUDY_MODALITIES:
        code = main(
            [
                "convert",
                "--events",
                str(event_index),
                "--data-root",
                str(archive),
                "--modality",
                m,
                "--out",
                str(zarr_dir / f"{m}.zarr"),
                "--verify-events",
                "0",
                "--workers",
                "1",
            ]
        )
        assert code == 0, m
    windows = out / "windows.csv"
    code = main(
        [
            "split",
            "--events",
            str(event_index),
            "--out",
            str(windows),
            "--strategy",
            "random",
            "--seed",
            "0",
            "--val-fraction",
            "0.25",
            "--input-frames",
            "12",
            "--output-frames",
            "6",
            "--stride",
            "12",
        ]
    )
    assert code == 0
    return {"zarr": zarr_dir, "windows": windows, "meta": event_index.with_suffix(".json")}
