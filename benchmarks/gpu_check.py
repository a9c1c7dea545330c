"""GPU check: training throughput, peak memory, SGT latency and the loader against demand.

Run: ``benchmarks/gpu_check.sh [OUT.md]`` (also runs the CUDA-marked tests) or
``python -m benchmarks.gpu_check --out OUT.md``; ``make gpu-check``.

On a machine with a CUDA GPU (the seed study's sizes, well under 8 minutes on one GPU):

1. train samples/s and peak GPU memory at 384 x 384, batch 4, bf16 autocast, for
   ``unet2d``, ``convlstm``, ``sgt`` and ``sgt_advect`` at their full default sizes (models
   not registered in this checkout are named as missing), on native-resolution batches
   (VIL 384 uint8, IR 192 int16, lightning 48 counts: what the loader yields), moved to the
   GPU each step as training does;
2. the SGT's forecast latency (one window, bf16, median of timed calls; goal < 30 ms);
3. the loader's windows/s with 8 workers (``SevirWindowDataset`` + ``collate_windows``
   over a synthetic twin at 384, augmented) against the demand of the fastest train step
   measured in 1: the ratio says whether training would wait on data.

On a CPU the same code runs at a tiny size (grid 32, tiny models, float32, 2 workers, a
few steps) and the output says so: it is the check's own test (tests/test_gpu_check.py), not a
measurement. Writes a Markdown table for docs/benchmarks.md to ``--out`` and stdout.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from stormfusion.data.dataset import SevirWindowDataset, collate_windows
from stormfusion.data.sevir import STUDY_MODALITIES
from stormfusion.io import write_text_atomic
from stormfusion.models import ForecastModel, get_model, list_models

#: The learned models the check trains, in table order.
MODELS = ("unet2d", "convlstm", "sgt", "sgt_advect")
T_IN, T_OUT = 12, 6
#: Tiny constructor arguments for the CPU mode (the GPU mode uses each model's defaults).
TINY: dict[str, dict[str, Any]] = {
    "unet2d": {"widths": [4, 8, 16]},
    "convlstm": {"hidden_channels": [8, 8]},
    "sgt": {
        "hidden_dim": 16,
        "encoder_width": 8,
        "gnn_layers": 1,
        "gnn_heads": 2,
        "transformer_layers": 1,
        "transformer_heads": 2,
        "patch_size": 2,
        "edge_hidden": 8,
        "max_cells": 8,
    },
    "sgt_advect": {
        "hidden_dim": 16,
        "encoder_channels": 8,
        "gnn_layers": 1,
        "transformer_layers": 1,
        "heads": 2,
        "patch_size": 2,
        "max_cells": 8,
        "min_separation": 3,
    },
}


@dataclass(frozen=True)
class Setup:
    """What one run of the check measures with."""

    device: torch.device
    size: int
    batch: int
    steps: int
    workers: int
    events: int
    full: bool  # full-size models (GPU) or tiny ones (CPU)

    @property
    def mode(self) -> str:
        if self.device.type == "cuda":
            return f"GPU mode: {torch.cuda.get_device_name(self.device)}"
        return (
            f"CPU mode (no CUDA GPU): tiny sizes, numbers are not measurements "
            f"({platform.processor() or 'CPU'}, {os.cpu_count()} cores)"
        )


def setup(force_cpu: bool) -> Setup:
    if torch.cuda.is_available() and not force_cpu:
        return Setup(torch.device("cuda"), 384, 4, 20, 8, 16, True)
    return Setup(torch.device("cpu"), 32, 2, 2, 2, 4, False)


def native_batch(batch: int, size: int, seed: int = 0) -> dict[str, Any]:
    """A batch as the loader gives it: each modality at its resolution, stored units."""
    g = torch.Generator().manual_seed(seed)
    vil = torch.randint(0, 60, (batch, T_IN + T_OUT, size, size), generator=g, dtype=torch.uint8)
    vil[:, :, size // 4 : size // 4 + 4, size // 3 : size // 3 + 4] = 200  # a storm cell
    half, eighth = size // 2, size // 8
    return {
        "inputs": {
            "vil": vil[:, :T_IN].contiguous(),
            "ir069": torch.randint(-6000, -2000, (batch, T_IN, half, half), dtype=torch.int16),
            "ir107": torch.randint(-4000, 2000, (batch, T_IN, half, half), dtype=torch.int16),
            "lght": torch.randint(0, 3, (batch, T_IN, eighth, eighth), dtype=torch.int32),
        },
        "mask": torch.ones(batch, len(STUDY_MODALITIES)),
        "target": vil[:, T_IN:].contiguous(),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _build(name: str, s: Setup) -> ForecastModel:
    args = {} if s.full else TINY[name]
    modalities = {"modalities": list(STUDY_MODALITIES)}
    return get_model(name, input_frames=T_IN, output_frames=T_OUT, **modalities, **args)


def train_rate(name: str, s: Setup) -> tuple[float, float | None]:
    """(samples/s, peak GPU GiB) of AdamW steps under bf16 autocast, host batch each step."""
    torch.manual_seed(0)
    model = _build(name, s).to(s.device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = native_batch(s.batch, s.size)
    if s.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(s.device)
        batch["inputs"] = {m: x.pin_memory() for m, x in batch["inputs"].items()}
    started = 0.0
    for step in range(s.steps + 2):  # two warm-up steps
        if step == 2:
            _sync(s.device)
            started = time.perf_counter()
        inputs = {m: x.to(s.device, non_blocking=True) for m, x in batch["inputs"].items()}
        target = batch["target"].to(s.device, non_blocking=True).float()
        with torch.autocast(s.device.type, dtype=torch.bfloat16, enabled=s.full):
            loss, _ = model.training_loss(inputs, batch["mask"].to(s.device), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(s.device)
    rate = s.steps * s.batch / (time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated(s.device) / 2**30 if s.device.type == "cuda" else None
    return rate, peak


def latency_ms(name: str, s: Setup, calls: int) -> float:
    """Median ms of ``forecast`` on one window (bf16 autocast), after two warm-up calls."""
    model = _build(name, s).to(s.device).eval()
    batch = native_batch(1, s.size)
    inputs = {m: x.to(s.device) for m, x in batch["inputs"].items()}
    mask = batch["mask"].to(s.device)
    times = []
    for i in range(calls + 2):
        _sync(s.device)
        start = time.perf_counter()
        with torch.autocast(s.device.type, dtype=torch.bfloat16, enabled=s.full):
            model.forecast(inputs, mask)
        _sync(s.device)
        if i >= 2:
            times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def loader_rate(s: Setup, workdir: Path) -> tuple[float, int]:
    """(windows/s, windows) of the training loader over a synthetic twin, warm workers."""
    from benchmarks.bench_archive import build_twin, ensure_stores
    from stormfusion.data.event_index import read_event_index
    from stormfusion.data.splits import PRESETS, SplitOptions, assign_splits, make_windows

    events = build_twin(workdir, s.events, image_size=s.size)
    zarr_dir = ensure_stores(events, workdir / "raw", workdir)
    index = read_event_index(events)
    table = make_windows(
        index, assign_splits(index, "random", SplitOptions(val_fraction=0.0)), PRESETS["seed"]
    )
    ds = SevirWindowDataset(zarr_dir, table, "train", image_size=s.size, augment=True)
    dl = DataLoader(
        ds,
        batch_size=s.batch,
        shuffle=True,
        num_workers=s.workers,
        persistent_workers=True,
        collate_fn=collate_windows,
        pin_memory=s.device.type == "cuda",
    )
    best = float("inf")
    for _ in range(3):  # the first pass starts the workers; best of the rest
        start = time.perf_counter()
        for _batch in dl:
            pass
        best = min(best, time.perf_counter() - start)
    return len(ds) / best, len(ds)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    return fn(), time.perf_counter() - start


def run_check(s: Setup, workdir: Path) -> list[str]:
    """The check's Markdown lines."""
    registered = set(list_models())
    present = [m for m in MODELS if m in registered]
    missing = [m for m in MODELS if m not in registered]
    lines = [
        f"GPU check, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {s.mode}; "
        f"torch {torch.__version__}; grid {s.size}, batch {s.batch}, "
        f"{'bf16 autocast' if s.full else 'float32 (bf16 autocast on the GPU only)'}, "
        f"{'full-size' if s.full else 'tiny'} models, {s.steps} timed steps",
        "",
        "| model | train samples/s | peak GPU memory (GiB) |",
        "|---|---|---|",
    ]
    rates = {}
    for name in present:
        rate, peak = train_rate(name, s)
        rates[name] = rate
        lines.append(f"| {name} | {rate:.1f} | {'-' if peak is None else f'{peak:.2f}'} |")
    for name in missing:
        lines.append(f"| {name} | missing: not registered in this checkout | |")
    lines.append("")
    if "sgt" in registered:
        ms = latency_ms("sgt", s, calls=20 if s.full else 3)
        verdict = "goal < 30 ms: met" if ms < 30 else "goal < 30 ms: NOT met"
        lines.append(f"SGT forecast latency, one window: {ms:.1f} ms ({verdict})")
    (windows_s, n), seconds = _timed(lambda: loader_rate(s, workdir))
    demand = max(rates.values(), default=0.0)
    fastest = max(rates, key=rates.__getitem__, default="-")
    ratio = windows_s / demand if demand else float("nan")
    lines += [
        "",
        f"Loader: {windows_s:.1f} windows/s with {s.workers} workers over {n} windows "
        f"(twin at {s.size}, augmented; {seconds:.0f} s with building the twin) against the "
        f"fastest train step's demand, {fastest} at {demand:.1f} samples/s: loader/demand "
        f"{ratio:.2f}x ({'keeps up' if ratio >= 1 else 'training would wait on data'})",
    ]
    if missing:
        lines.append(f"\nMissing models: {', '.join(missing)}.")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check.md"))
    parser.add_argument("--workdir", type=Path, default=None, help="twin and stores")
    parser.add_argument("--cpu", action="store_true", help="CPU mode even with a GPU")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    s = setup(args.cpu)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        workdir = args.workdir or Path(tmp)
        lines = run_check(s, workdir)
    text = "\n".join(lines) + "\n"
    write_text_atomic(args.out, text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
