"""LPIPS: the loader on random weights in the real file layout, and LPIPS's properties."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stormfusion.cli import main
from stormfusion.errors import StormFusionError
from stormfusion.verification.lpips import (
    ALEXNET_FILE,
    CHANNELS,
    LINEAR_FILE,
    LPIPS,
    find_lpips_weights,
    load_lpips,
)
from tests.verification_support import T_OUT, make_case, write_forecast_store

# torchvision's AlexNet layout: features.{0,3,6,8,10} convolutions
_CONVS = {0: (64, 3, 11), 3: (192, 64, 5), 6: (384, 192, 3), 8: (256, 384, 3), 10: (256, 256, 3)}


def write_random_weights(directory: Path, seed: int = 0) -> Path:
    gen = torch.Generator().manual_seed(seed)
    alex = {}
    for i, (out_c, in_c, k) in _CONVS.items():
        alex[f"features.{i}.weight"] = torch.randn(out_c, in_c, k, k, generator=gen) * 0.05
        alex[f"features.{i}.bias"] = torch.randn(out_c, generator=gen) * 0.01
    alex["classifier.6.bias"] = torch.zeros(1000)  # extra keys of the real file are ignored
    lins = {
        f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=gen)
        for i, c in enumerate(CHANNELS)
    }
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(alex, directory / ALEXNET_FILE)
    torch.save(lins, directory / LINEAR_FILE)
    return directory


def test_loads_the_file_layout_and_has_lpips_properties(tmp_path: Path) -> None:
    net, reason = load_lpips(write_random_weights(tmp_path / "w"))
    assert net is not None and reason == ""
    saved = torch.load(tmp_path / "w" / ALEXNET_FILE, weights_only=True)
    assert torch.equal(net.net.features[3].weight, saved["features.3.weight"])
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.uniform(0, 255, (3, 64, 64)).astype(np.float32))
    b = torch.from_numpy(rng.uniform(0, 255, (3, 64, 64)).astype(np.float32))
    same = net.vil_distance(a, a)
    assert torch.equal(same, torch.zeros(3))
    ab, ba = net.vil_distance(a, b), net.vil_distance(b, a)
    assert torch.allclose(ab, ba, rtol=1e-6, atol=0) and bool((ab > 0).all())
    # VIL repeated to 3 channels, scaled to [-1, 1]
    x = (a / 255 * 2 - 1)[:, None].repeat(1, 3, 1, 1)
    y = (b / 255 * 2 - 1)[:, None].repeat(1, 3, 1, 1)
    assert torch.allclose(net(x, y), ab)


def test_absent_and_broken_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    found = find_lpips_weights(None)
    assert not found.available and "alexnet-owt-7be5be79.pth" in found.reason
    net, reason = load_lpips(tmp_path / "nowhere")
    assert net is None and "not found" in reason
    bad = tmp_path / "bad"
    write_random_weights(bad)
    torch.save({"lin0.model.1.weight": torch.ones(1, 3, 1, 1)}, bad / LINEAR_FILE)
    with pytest.raises(StormFusionError, match="lacks"):
        load_lpips(bad)
    (bad / ALEXNET_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(StormFusionError, match="cannot read"):
        LPIPS().load_weights(bad / ALEXNET_FILE, bad / LINEAR_FILE)


def test_default_locations_torch_home_and_lpips_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = write_random_weights(tmp_path / "w")
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / ALEXNET_FILE).write_bytes((weights / ALEXNET_FILE).read_bytes())
    package = tmp_path / "site" / "lpips"
    (package / "weights" / "v0.1").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "weights" / "v0.1" / LINEAR_FILE).write_bytes((weights / LINEAR_FILE).read_bytes())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "lpips", raising=False)
    found = find_lpips_weights(None)
    assert found.available
    assert found.alexnet == checkpoints / ALEXNET_FILE
    assert found.linear == package / "weights" / "v0.1" / LINEAR_FILE


def test_score_reports_lpips_with_weights(tmp_path: Path) -> None:
    case = make_case(tmp_path, n_events=2)
    persistence = np.repeat(case.last_input[:, None], T_OUT, axis=1)
    path = write_forecast_store(
        case.forecast_path("p"), persistence, case.windows, "p", "persistence"
    )
    weights = write_random_weights(tmp_path / "w")
    out = tmp_path / "scores"
    rc = main(
        [
            "score",
            "--forecast",
            str(path),
            "--truth",
            str(case.zarr_dir / "vil.zarr"),
            "--windows",
            str(case.windows_csv),
            "--lpips-weights",
            str(weights),
            "--out-csv",
            str(out / "p.csv"),
            "--out-json",
            str(out / "p.json"),
            "--out-counts",
            str(out / "p.counts.npz"),
        ]
    )
    assert rc == 0
    summary = json.loads((out / "p.json").read_text())
    assert summary["lpips"] is not None and summary["lpips"] > 0
    assert summary["lpips_reason"] is None
    assert all(v is not None for v in summary["by_lead"]["lpips"])
