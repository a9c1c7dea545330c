"""`stormfusion train` end to end on the tiny synthetic twin, with the real loader and models.

Includes the resumption test with a real kill: a training process killed with SIGKILL in
the middle of an epoch, started again, ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from training_support import train_argv

from stormfusion.cli import main
from stormfusion.training.checkpoint import load_model, read_checkpoint

REPO = Path(__file__).resolve().parents[1]


def _subprocess(argv: list[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "stormfusion", *argv],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _run(argv: list[str]) -> None:
    proc = _subprocess(argv)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-2000:]


def test_train_writes_checkpoints_metrics_and_a_loadable_model(
    twin: dict[str, Path], tmp_path: Path
) -> None:
    assert main(train_argv(twin, tmp_path, "--no-augment", epochs=2)) == 0
    with (tmp_path / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {
        "train_loss",
        "val_loss",
        "lr",
        "time_s",
        "samples_per_s",
        "train_mse",
        "val_mse",
    } <= set(rows[0])
    best = read_checkpoint(tmp_path / "best.pt")
    assert best["model_name"] == "unet2d"
    # the windows table's frame counts are merged into the model arguments
    assert best["model_args"] == {"input_frames": 12, "output_frames": 6, "widths": [8, 16]}
    meta_fp = json.loads(twin["meta"].read_text())["data_fingerprint"]
    assert best["data"]["data_fingerprint"] == meta_fp
    assert len(best["data"]["events"]) == 4  # 3 train + 1 val events
    model = load_model(tmp_path / "best.pt")
    assert model.widths == (8, 16) and not model.training
    x = {"vil": torch.zeros(1, 12, 32, 32)}
    assert model.forecast(x, torch.ones(1, 4)).shape == (1, 6, 32, 32)


def test_a_train_process_killed_mid_epoch_resumes_to_the_same_weights(
    twin: dict[str, Path], tmp_path: Path
) -> None:
    reference, run = tmp_path / "reference", tmp_path / "run"
    _run(train_argv(twin, reference))
    # 9 training windows, batch 2: 4 steps per epoch; checkpoints every 3 steps. The killed
    # run is asked for many epochs so that it cannot finish before the kill.
    proc = _subprocess(train_argv(twin, run, epochs=1000))
    deadline = time.monotonic() + 240
    step = 0
    while step < 6 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
        if (run / "latest.pt").is_file():
            step = int(torch.load(run / "latest.pt", weights_only=True)["global_step"])
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    saved = read_checkpoint(run / "latest.pt")
    assert 6 <= saved["global_step"] < 12, "the kill came too late to test resumption"
    for name in ("best.pt", "metrics.csv"):  # Snakemake removes a failed job's outputs
        (run / name).unlink(missing_ok=True)
    _run(train_argv(twin, run))  # the same command line as the reference
    ref, got = read_checkpoint(reference / "latest.pt"), read_checkpoint(run / "latest.pt")
    assert got["epoch"] == ref["epoch"] == 3 and got["global_step"] == ref["global_step"] == 12
    for key, value in ref["model"].items():
        assert torch.equal(value, got["model"][key]), key
    ref_best, got_best = read_checkpoint(reference / "best.pt"), read_checkpoint(run / "best.pt")
    assert got_best["epoch"] == ref_best["epoch"]
    for key, value in ref_best["model"].items():
        assert torch.equal(value, got_best["model"][key]), key
    with (reference / "metrics.csv").open() as a, (run / "metrics.csv").open() as b:
        ref_rows, got_rows = list(csv.DictReader(a)), list(csv.DictReader(b))
    assert [r["val_loss"] for r in got_rows] == [r["val_loss"] for r in ref_rows]


def test_train_refuses_untrainable_models_and_bad_arguments(
    twin: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(train_argv(twin, tmp_path, model="persistence", args="{}")) == 2
    assert "model 'persistence' has no weights to train" in capsys.readouterr().err
    assert main(train_argv(twin, tmp_path, args="{not json")) == 2
    assert "--model-args is not valid JSON" in capsys.readouterr().err
    assert main(train_argv(twin, tmp_path, args='{"input_frames": 13}')) == 2
    assert "--model-args sets input_frames=13 but windows table" in capsys.readouterr().err
    assert main(train_argv(twin, tmp_path, model="nosuchmodel")) == 2
    assert "unknown model 'nosuchmodel'" in capsys.readouterr().err
    assert not (tmp_path / "best.pt").exists()


def test_resuming_another_model_in_the_same_directory_is_refused(
    twin: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(train_argv(twin, tmp_path, epochs=1)) == 0
    capsys.readouterr()
    assert main(train_argv(twin, tmp_path, args='{"widths": [8, 8]}', epochs=2)) == 2
    err = capsys.readouterr().err
    assert "other unet2d arguments (widths: checkpoint [8, 16] vs requested [8, 8])" in err


#: Two processes average two half-batch gradients where one process takes the gradient of
#: the whole batch: equal up to float32 rounding, which grows over the steps.
DDP_RTOL = 1e-4


def test_torchrun_two_processes_match_one_on_the_same_global_batch(
    twin: dict[str, Path], tmp_path: Path
) -> None:
    """The Snakemake rule's launcher: torchrun --standalone --nproc_per_node=G (gloo here).

    ConvLSTM, because it has no batch normalisation (which torch synchronises over
    processes only on GPUs).
    """
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    model = {"model": "convlstm", "args": '{"hidden_channels": [4]}', "epochs": 2}
    _run(train_argv(twin, single, **model))
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "stormfusion.cli",
            *train_argv(twin, ddp, **model),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with (single / "metrics.csv").open() as a, (ddp / "metrics.csv").open() as b:
        one, two = list(csv.DictReader(a)), list(csv.DictReader(b))
    assert len(one) == len(two) == 2
    for r1, r2 in zip(one, two, strict=True):
        for key in ("train_loss", "val_loss"):
            assert float(r2[key]) == pytest.approx(float(r1[key]), rel=DDP_RTOL), key
    saved = read_checkpoint(ddp / "latest.pt")
    assert saved["world_size"] == 2 and len(saved["rng"]) == 2
    ref = read_checkpoint(single / "latest.pt")["model"]
    for key, value in saved["model"].items():
        torch.testing.assert_close(value, ref[key], rtol=DDP_RTOL, atol=1e-6)


def test_a_run_resumes_on_another_number_of_processes(
    twin: dict[str, Path], tmp_path: Path
) -> None:
    """Written by 2 processes (torchrun), resumed by 1 with the same global batch: the run
    continues where it stopped and ends with the weights of one process throughout."""
    reference, run = tmp_path / "reference", tmp_path / "run"
    model = {"model": "convlstm", "args": '{"hidden_channels": [4]}'}
    _run(train_argv(twin, reference, epochs=2, **model))
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    launch = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "stormfusion.cli"]
    proc = subprocess.run(
        [*launch, *train_argv(twin, run, epochs=1, **model)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_checkpoint(run / "latest.pt")["world_size"] == 2
    _run(train_argv(twin, run, epochs=2, **model))
    saved, ref = read_checkpoint(run / "latest.pt"), read_checkpoint(reference / "latest.pt")
    assert saved["world_size"] == 1 and saved["epoch"] == 2
    assert saved["global_step"] == ref["global_step"]
    for key, value in saved["model"].items():
        torch.testing.assert_close(value, ref["model"][key], rtol=DDP_RTOL, atol=1e-6)
    with (reference / "metrics.csv").open() as a, (run / "metrics.csv").open() as b:
        one, resumed = list(csv.DictReader(a)), list(csv.DictReader(b))
    for r1, r2 in zip(one, resumed, strict=True):
        assert float(r2["val_loss"]) == pytest.approx(float(r1["val_loss"]), rel=DDP_RTOL)
