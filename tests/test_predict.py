"""`stormfusion predict` and the forecast store: layout, order, values, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from torch import Tensor
from training_support import UNET_ARGS, predict_argv, train_argv

from stormfusion.cli import main
from stormfusion.data.dataset import SevirWindowDataset
from stormfusion.errors import StormFusionError
from stormfusion.models import get_model
from stormfusion.models.base import ForecastModel
from stormfusion.training.checkpoint import load_model
from stormfusion.training.predict import predict_to_zarr, to_uint8


def open_store(path: Path) -> xr.Dataset:
    return xr.open_zarr(path, consolidated=False)


def test_to_uint8_clamps_and_rounds() -> None:
    x = torch.tensor([-3.0, 0.4, 0.5, 1.6, 254.5, 300.0])
    assert to_uint8(x).tolist() == [0, 0, 0, 2, 254, 255]  # round half to even


def test_predict_a_baseline_writes_the_documented_store(
    twin: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "persistence.zarr"
    assert main(predict_argv(twin, out, split="train")) == 0
    ds = open_store(out)
    fc = ds["forecast"]
    assert fc.dims == ("sample", "lead", "y", "x") and fc.dtype == np.uint8
    windows = pd.read_csv(twin["windows"], dtype={"event_id": str})
    train = windows[windows["split"] == "train"]
    assert fc.shape == (len(train), 6, 32, 32)
    assert list(ds["event_id"].values) == list(train["event_id"])
    assert list(ds["window_start"].values) == list(train["window_start"])
    assert list(ds["lead_time"].values) == [5, 10, 15, 20, 25, 30]
    assert fc.encoding["chunks"] == (8, 6, 32, 32)
    assert ds.attrs["run"] == "persistence_run" and ds.attrs["model"] == "persistence"
    assert json.loads(ds.attrs["model_args"]) == {"input_frames": 12, "output_frames": 6}
    assert ds.attrs["split"] == "train"
    assert ds.attrs["latency_s_per_sample"] > 0 and ds.attrs["latency_device"] == "cpu (cpu)"
    meta = json.loads(twin["meta"].read_text())
    assert ds.attrs["provenance"]["data_fingerprint"] == meta["data_fingerprint"]
    # known answer: persistence repeats the last observed VIL frame, read by the loader
    data = SevirWindowDataset(
        twin["zarr"], twin["windows"], "train", modalities=("vil",), image_size=32
    )
    for i in (0, len(data) - 1):
        expected = data[i]["inputs"]["vil"][-1].numpy()  # stored uint8, missing read as 0
        for lead in range(6):
            np.testing.assert_array_equal(fc.values[i, lead], expected)


def test_predict_with_a_checkpoint_matches_the_loaded_model(
    twin: dict[str, Path], tmp_path: Path
) -> None:
    run = tmp_path / "unet"
    assert main(train_argv(twin, run, epochs=1)) == 0
    out = tmp_path / "unet.zarr"
    argv = predict_argv(
        twin, out, "--checkpoint", str(run / "best.pt"), model="unet2d", args=UNET_ARGS
    )
    assert main(argv) == 0
    ds = open_store(out)
    assert ds.attrs["checkpoint_epoch"] == 1
    model = load_model(run / "best.pt")
    data = SevirWindowDataset(
        twin["zarr"], twin["windows"], "val", modalities=("vil",), image_size=32
    )
    batch = torch.utils.data.default_collate([data[i] for i in range(len(data))])
    expected = to_uint8(model.forecast(batch["inputs"], batch["mask"]))
    np.testing.assert_array_equal(ds["forecast"].values, expected)


def test_predict_errors_are_clear(
    twin: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.zarr"
    assert main(predict_argv(twin, out, model="unet2d", args=UNET_ARGS)) == 2
    assert "model 'unet2d' is learned: pass --checkpoint" in capsys.readouterr().err
    run = tmp_path / "unet"
    assert main(train_argv(twin, run, epochs=1)) == 0
    capsys.readouterr()
    ckpt = ["--checkpoint", str(run / "best.pt")]
    assert main(predict_argv(twin, out, *ckpt, model="convlstm", args=UNET_ARGS)) == 2
    assert "holds model 'unet2d', not 'convlstm'" in capsys.readouterr().err
    assert main(predict_argv(twin, out, *ckpt, model="unet2d", args='{"widths": [4, 8]}')) == 2
    assert "widths: checkpoint [8, 16] vs requested [4, 8]" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    junk = ["--checkpoint", str(tmp_path / "junk.pt")]
    assert main(predict_argv(twin, out, *junk, model="unet2d", args=UNET_ARGS)) == 2
    assert "junk.pt cannot be read" in capsys.readouterr().err
    assert main(predict_argv(twin, out, split="test")) == 2  # this twin has no test split
    assert "no windows in split 'test'" in capsys.readouterr().err
    assert not out.exists()


class _Ramp(ForecastModel):
    """Forecasts 10 * index + lead from a (1,) input 'vil' holding the sample index."""

    trainable = False

    def __init__(self) -> None:
        super().__init__(("vil",), 1, 3)

    def forward(self, inputs: dict[str, Tensor], mask: Tensor) -> Tensor:
        index = inputs["vil"][:, :1, :1, :1]
        return index * 10 + torch.arange(3.0).view(1, 3, 1, 1).expand(-1, -1, 2, 2)


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "inputs": {"vil": torch.full((1, 2, 2), float(i))},
            "mask": torch.ones(4),
            "target": torch.zeros(3, 2, 2),
            "event_id": f"S{i // 3}",
            "window_start": i % 3,
        }


def test_forecasts_are_written_in_whole_chunks_in_order(tmp_path: Path) -> None:
    n = 11
    ids, starts = [f"S{i // 3}" for i in range(n)], [i % 3 for i in range(n)]
    out = predict_to_zarr(
        _Ramp(),
        _Indexed(n),
        tmp_path / "f.zarr",
        event_ids=ids,
        window_starts=starts,
        attrs={"run": "r", "model": "ramp", "model_args": {}, "split": "val"},
        batch_size=3,
        chunk_samples=4,
    )
    ds = open_store(out)
    assert ds["forecast"].encoding["chunks"] == (4, 3, 2, 2)
    values = ds["forecast"].values
    for i in range(n):
        for lead in range(3):
            assert (values[i, lead] == 10 * i + lead).all()
    with pytest.raises(StormFusionError, match="not in windows-table order"):
        predict_to_zarr(
            _Ramp(),
            _Indexed(n),
            tmp_path / "g.zarr",
            event_ids=ids[::-1],
            window_starts=starts[::-1],
            attrs={"split": "val"},
            batch_size=3,
        )
    assert not (tmp_path / "g.zarr").exists()


def test_load_model_rebuilds_the_saved_model(tmp_path: Path) -> None:
    from stormfusion.training.checkpoint import CHECKPOINT_FORMAT, save_checkpoint

    model = get_model("convlstm", input_frames=4, output_frames=2, hidden_channels=[4])
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model_name": "convlstm",
        "model_args": {"input_frames": 4, "output_frames": 2, "hidden_channels": [4]},
        "config": {},
        "model": model.state_dict(),
        "epoch": 1,
        "data": {},
    }
    save_checkpoint(tmp_path / "m.pt", payload)
    loaded = load_model(tmp_path / "m.pt")
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    with pytest.raises(
        StormFusionError, match=r"hidden_channels: checkpoint \[4\] vs requested \[8\]"
    ):
        load_model(
            tmp_path / "m.pt",
            model_name="convlstm",
            model_args={"input_frames": 4, "output_frames": 2, "hidden_channels": [8]},
        )
    payload["model_args"] = {"input_frames": 4, "output_frames": 2, "hidden_channels": [8]}
    save_checkpoint(tmp_path / "bad.pt", payload)
    with pytest.raises(StormFusionError, match="weights do not fit model 'convlstm'"):
        load_model(tmp_path / "bad.pt")
