"""Benchmark training: samples/s per model, the trainer's overhead, DDP 2 processes vs 1.

Run: ``python -m benchmarks.bench_training [--image-size 64] [--steps 6] [--no-ddp]``.

Batches are random tensors held in memory (the loader has its own benchmark in
``bench_archive``), so the numbers are the cost of the training step itself.

1. For every learned model (demo-size arguments at the demo grid on the CPU; the seed
   study's full-size models at 384 x 384 on a GPU, with bf16 autocast and the peak GPU
   memory): samples/s of :class:`~stormfusion.training.trainer.Trainer` against a bare
   ``forward/backward/clip/step`` loop over the same model and batches in the same run.
   Goal: ratio >= 0.9 (the trainer's bookkeeping, progress bar, per-step all-reduce of the
   loss and checkpointing at epoch ends cost under 10 %).
2. DDP: the same global batch trained by 2 gloo processes (one thread each) against 1
   process with 2 threads, UNet2D. On a 2-core CPU this measures the communication
   overhead; speed-ups need one GPU per process.

Every number is a ratio against a yardstick measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from stormfusion.data.sevir import STUDY_MODALITIES
from stormfusion.models import get_model
from stormfusion.training.config import TrainingConfig
from stormfusion.training.distributed import DistContext
from stormfusion.training.state import DataInfo
from stormfusion.training.trainer import Trainer

#: Demo-size arguments (CPU runs) per learned run; full size is the constructor default.
DEMO_ARGS: dict[str, tuple[str, dict[str, Any]]] = {  # as in config/demo.yaml
    "unet2d": ("unet2d", {"widths": [16, 32, 64, 128]}),
    "convlstm": ("convlstm", {"hidden_channels": [32, 32]}),
    "sgt": (
        "sgt",
        {
            "hidden_dim": 32,
            "encoder_width": 16,
            "gnn_layers": 2,
            "gnn_heads": 2,
            "transformer_layers": 2,
            "transformer_heads": 4,
            "patch_size": 2,
            "knn": 4,
            "max_cells": 16,
            "peak_window": 4,
            "splat_sigma": 1.0,
            "edge_hidden": 32,
            "dropout": 0.1,
        },
    ),
    "sgt_advect": (
        "sgt_advect",
        {
            "hidden_dim": 32,
            "encoder_channels": 16,
            "gnn_layers": 2,
            "transformer_layers": 2,
            "heads": 4,
            "patch_size": 2,
            "knn": 4,
            "max_cells": 16,
            "min_separation": 4,
            "splat_sigma": 0.05,
        },
    ),
}
FULL_ARGS: dict[str, tuple[str, dict[str, Any]]] = {
    "unet2d": ("unet2d", {}),
    "convlstm": ("convlstm", {}),
    "sgt": ("sgt", {}),
    "sgt_advect": ("sgt_advect", {}),
}
T_IN, T_OUT = 12, 6


class RandomWindows(torch.utils.data.Dataset):
    """``n`` fixed random windows of the batch contract, all four modalities."""

    def __init__(self, n: int, size: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.items = [
            {
                "inputs": {m: torch.randn(T_IN, size, size, generator=g) for m in STUDY_MODALITIES},
                "mask": torch.ones(len(STUDY_MODALITIES)),
                "target": torch.rand(T_OUT, size, size, generator=g) * 255.0,
                "event_id": f"S{i}",
                "window_start": 0,
            }
            for i in range(n)
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


def bare_loop(
    name: str,
    args: dict[str, Any],
    data: RandomWindows,
    batch: int,
    steps: int,
    device: torch.device,
) -> float:
    """Samples/s of a plain training loop (the yardstick), after one warm-up step."""
    torch.manual_seed(0)
    model = get_model(name, input_frames=T_IN, output_frames=T_OUT, **args).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-5)
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=False)
    autocast = device.type == "cuda"
    started, seen = 0.0, 0
    for step, item in enumerate(loader):
        if step == 1:
            _sync(device)
            started, seen = time.perf_counter(), 0
        inputs = {k: v.to(device) for k, v in item["inputs"].items()}
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            loss, _ = model.training_loss(
                inputs, item["mask"].to(device), item["target"].to(device)
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        float(loss)
        seen += item["target"].shape[0]
        if step + 1 >= steps + 1:
            break
    _sync(device)
    return seen / (time.perf_counter() - started)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def trainer_rate(
    name: str,
    args: dict[str, Any],
    data: RandomWindows,
    batch: int,
    steps: int,
    device: torch.device,
    ctx: DistContext | None = None,
) -> float:
    """Samples/s of the Trainer (second epoch: warm), as recorded in metrics.csv."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(
            model_name=name,
            model_args={"input_frames": T_IN, "output_frames": T_OUT, **args},
            train_set=data,
            val_set=RandomWindows(batch, data.items[0]["target"].shape[-1], 1),
            out_dir=Path(tmp),
            config=TrainingConfig(epochs=2, batch_size=batch, max_steps_per_epoch=steps),
            data=DataInfo("bench"),
            ctx=ctx,
            device=device,
        )
        return float(trainer.fit().history[-1]["samples_per_s"])


def _ddp_worker(
    rank: int, world: int, port: int, size: int, batch: int, steps: int, out: str
) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        name, args = DEMO_ARGS["unet2d"]
        rate = trainer_rate(
            name,
            args,
            RandomWindows(batch * steps, size),
            batch,
            steps,
            torch.device("cpu"),
            DistContext(rank, world, rank),
        )
        if rank == 0:
            Path(out).write_text(json.dumps(rate))
    finally:
        dist.destroy_process_group()


def ddp_rate(size: int, batch: int, steps: int) -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "rate.json")
        mp.spawn(_ddp_worker, args=(2, port, size, batch, steps, out), nprocs=2, join=True)
        return float(json.loads(Path(out).read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--image-size", type=int, default=None, help="grid (default: 64 on the CPU, 384 on a GPU)"
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per measurement")
    parser.add_argument("--models", nargs="+", default=list(DEMO_ARGS))
    parser.add_argument("--repeats", type=int, default=3, help="best of N interleaved runs")
    parser.add_argument("--no-ddp", action="store_true")
    opts = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    size = opts.image_size or (384 if cuda else 64)
    table = FULL_ARGS if cuda else DEMO_ARGS
    what = (
        torch.cuda.get_device_name()
        if cuda
        else f"{platform.processor() or 'CPU'}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"# torch {torch.__version__} on {device} ({what}); grid {size}, batch {opts.batch_size}, "
        f"best of {opts.repeats}, load average {os.getloadavg()[0]:.1f}; "
        f"{'seed-study' if cuda else 'demo'}-size models"
    )
    print("| model | trainer samples/s | bare loop samples/s | ratio | peak GPU memory |")
    print("|---|---|---|---|---|")
    for run in opts.models:
        name, args = table[run]
        data = RandomWindows(opts.batch_size * (opts.steps + 1), size)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        bare, rate = 0.0, 0.0
        for _ in range(opts.repeats):  # interleaved; the best of each resists other load
            bare = max(bare, bare_loop(name, args, data, opts.batch_size, opts.steps, device))
            rate = max(rate, trainer_rate(name, args, data, opts.batch_size, opts.steps, device))
        mem = f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if cuda else "-"
        print(f"| {run} | {rate:.2f} | {bare:.2f} | {rate / bare:.2f} | {mem} |")
    if not opts.no_ddp and not cuda:
        data = RandomWindows(opts.batch_size * opts.steps, size)
        one, two = 0.0, 0.0
        for _ in range(opts.repeats):
            one = max(
                one, trainer_rate(*DEMO_ARGS["unet2d"], data, opts.batch_size, opts.steps, device)
            )
            two = max(two, ddp_rate(size, opts.batch_size, opts.steps))
        print(
            f"\nDDP unet2d, global batch {opts.batch_size}: 1 process {one:.2f} samples/s, "
            f"2 gloo processes {two:.2f} samples/s, ratio {two / one:.2f}"
        )


if __name__ == "__main__":
    main()
