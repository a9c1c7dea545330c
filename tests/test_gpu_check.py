"""The GPU check's CPU mode (benchmarks/gpu_check.py): the same code paths at a tiny size."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import gpu_check
from stormfusion.models import list_models


@pytest.mark.slow
def test_gpu_check_runs_in_cpu_mode_and_writes_its_table(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.md"
    assert gpu_check.main(["--cpu", "--out", str(out), "--workdir", str(tmp_path / "w")]) == 0
    text = out.read_text()
    assert "CPU mode (no CUDA GPU): tiny sizes, numbers are not measurements" in text
    registered = set(list_models())
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line[:2] == "| "}
    for name in gpu_check.MODELS:
        if name in registered:
            rate = float(rows[name].split("|")[2])  # samples/s, a number
            assert rate > 0 and rows[name].endswith("| - |")  # no GPU memory on a CPU
        else:
            assert rows[name] == f"| {name} | missing: not registered in this checkout | |"
    assert "SGT forecast latency, one window:" in text
    assert "Loader: " in text and "windows/s with 2 workers" in text and "loader/demand" in text
    assert (tmp_path / "w" / "zarr" / "lght.zarr").is_dir()  # the loader read a real twin


def test_native_batch_is_what_the_loader_yields() -> None:
    batch = gpu_check.native_batch(2, 32)
    shapes = {m: (tuple(x.shape), str(x.dtype)) for m, x in batch["inputs"].items()}
    assert shapes == {
        "vil": ((2, 12, 32, 32), "torch.uint8"),
        "ir069": ((2, 12, 16, 16), "torch.int16"),
        "ir107": ((2, 12, 16, 16), "torch.int16"),
        "lght": ((2, 12, 4, 4), "torch.int32"),
    }
    assert batch["target"].shape == (2, 6, 32, 32)
