"""The tiny twin converted for training and forecasting tests (Zarr stores and windows),
and the one builder of `stormfusion train` / `stormfusion predict` command lines."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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


#: A small UNet: 32 x 32 grid, two levels.
UNET_ARGS = '{"widths": [8, 16]}'


def _json(args: str | Mapping[str, Any]) -> str:
    return args if isinstance(args, str) else json.dumps(dict(args))


def _inputs(data: Mapping[str, Path]) -> list[str]:
    return [
        "--zarr-dir",
        str(data["zarr"]),
        "--windows",
        str(data["windows"]),
        "--events-meta",
        str(data["meta"]),
    ]


def train_argv(
    data: Mapping[str, Path],
    out: Path,
    *extra: str,
    model: str = "unet2d",
    args: str | Mapping[str, Any] = UNET_ARGS,
    epochs: int = 3,
    batch_size: int = 2,
    lr: float = 1e-3,
    checkpoint_every_steps: int = 3,
    image_size: int = 32,
) -> list[str]:
    """`stormfusion train` on ``data`` (keys zarr, windows, meta) into ``out``, no workers."""
    return [
        "train",
        "--model",
        model,
        "--model-args",
        _json(args),
        *_inputs(data),
        "--out-dir",
        str(out),
        "--epochs",
        str(epochs),
        "--batch-size",
        str(batch_size),
        "--lr",
        str(lr),
        "--weight-decay",
        "1e-5",
        "--grad-clip",
        "1.0",
        "--seed",
        "0",
        "--checkpoint-every-steps",
        str(checkpoint_every_steps),
        "--image-size",
        str(image_size),
        "--num-workers",
        "0",
        *extra,
    ]


def predict_argv(
    data: Mapping[str, Path],
    out: Path,
    *extra: str,
    model: str = "persistence",
    args: str | Mapping[str, Any] = "{}",
    split: str = "val",
    checkpoint: Path | None = None,
    batch_size: int = 2,
    image_size: int = 32,
) -> list[str]:
    """`stormfusion predict` of ``split`` of ``data`` into the store ``out``, no workers."""
    return [
        "predict",
        "--run",
        f"{model}_run",
        "--model",
        model,
        "--model-args",
        _json(args),
        *([] if checkpoint is None else ["--checkpoint", str(checkpoint)]),
        *_inputs(data),
        "--split",
        split,
        "--image-size",
        str(image_size),
        "--batch-size",
        str(batch_size),
        "--workers",
        "0",
        "--out",
        str(out),
        *extra,
    ]
