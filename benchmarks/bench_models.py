"""Benchmark the forecast models: SGT training cost and latency, optical-flow throughput.

Run: ``python -m benchmarks.bench_models [--size 384] [--batch 4] [--steps 3]``.

On a batch of storm-like inputs (every modality, many cells so the SGT's graph is at its
cap), at the study's 384 x 384 and the seed's 12 -> 6 frames, default model sizes:

1. train step (forward + backward + AdamW step) of both SGTs (the seed's ``sgt`` and our
   ``sgt_advect``) and the seed's Stage-4 UNet against the UNet2D yardstick, same batch,
   same run (goal: our SGT at most 1.5x UNet2D; the seed's SGT is measured, not held to it);
2. inference latency of one 384 x 384 forecast (batch 1, ``forecast``), the same models
   (goal: an SGT under 1 s on 2 CPU cores, the seed's plan; under 30 ms on an H100-class GPU);
3. optical-flow forecasts per second, 1 worker against ``--workers`` processes, with
   persistence as the floor.

Runs on CUDA when it is available (``--device``), on CPU otherwise; medians of the timed
repeats after a warm-up.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F

from stormfusion.data.sevir import STUDY_MODALITIES
from stormfusion.models import ForecastModel, get_model
from stormfusion.models.base import last_vil
from stormfusion.models.sgt.branch import StormGraphModel


def storm_inputs(
    batch: int, size: int, frames: int, device: torch.device, seed: int = 0
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Normalised inputs of every modality: 80 moving Gaussian cells per sample, (B, T, S, S);
    mask (B, 4); target (B, 6, S, S) on 0..255."""
    g = torch.Generator().manual_seed(seed)
    coords = torch.arange(size, dtype=torch.float32)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    total = frames + 6
    vil = torch.zeros(batch, total, size, size)
    for b in range(batch):
        velocity = (torch.rand(2, generator=g) - 0.5) * 4
        for _ in range(80):
            centre = torch.rand(2, generator=g) * size
            sigma = 3 + 6 * float(torch.rand(1, generator=g))
            peak = 90 + 160 * float(torch.rand(1, generator=g))
            for t in range(total):
                cx, cy = centre + velocity * t
                vil[b, t] += peak * torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
    vil = vil.clamp(0, 254)
    past = vil[:, :frames]
    ir = F.avg_pool2d(past, 2)  # native resolution: IR half, lightning an eighth
    inputs = {  # stored units
        "vil": past.round().to(torch.uint8),
        "ir069": (-3000 - 8 * ir).round().to(torch.int16),
        "ir107": (2000 - 20 * ir).round().to(torch.int16),
        "lght": F.avg_pool2d((past > 180).float() * 3, 8, divisor_override=1).to(torch.int32),
    }
    return (
        {k: v.to(device) for k, v in inputs.items()},
        torch.ones(batch, len(STUDY_MODALITIES), device=device),
        vil[:, frames:].to(device),
    )


def timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``fn`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def train_step_seconds(
    model: ForecastModel,
    batch: tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor],
    device: torch.device,
    repeats: int,
) -> float:
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    inputs, mask, target = batch

    def step() -> None:
        loss, _ = model.training_loss(inputs, mask, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return timed(step, device, repeats)


def latency_seconds(
    model: ForecastModel,
    inputs: dict[str, torch.Tensor],
    mask: torch.Tensor,
    device: torch.device,
    repeats: int,
) -> float:
    model.eval()
    with torch.inference_mode():
        return timed(lambda: model.forecast(inputs, mask), device, repeats, warmup=2)


#: The models timed against the UNet2D yardstick (first), default (full-size) arguments.
COMPARED = ("unet2d", "unet2d_stage4", "sgt", "sgt_advect")


def compare(what: str, seconds: dict[str, float], goal: str) -> None:
    """Print each model's time and its ratio to the yardstick (the first entry)."""
    yardstick = next(iter(seconds.values()))
    parts = [f"{name} {t * 1e3:.1f} ms (x{t / yardstick:.2f})" for name, t in seconds.items()]
    print(f"{what}: " + ", ".join(parts) + f"; ratios to unet2d; {goal}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="timed train steps per model")
    parser.add_argument("--repeats", type=int, default=5, help="timed forecasts per model")
    parser.add_argument("--of-samples", type=int, default=4, help="optical-flow batch size")
    parser.add_argument("--workers", type=int, default=2, help="optical-flow processes")
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default_device)
    args = parser.parse_args()
    device = torch.device(args.device)

    print(
        f"# bench_models: {platform.node()} {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    )
    print(f"# size {args.size} x {args.size}, 12 -> 6 frames, default model arguments")

    torch.manual_seed(0)
    models = {name: get_model(name).to(device) for name in COMPARED}
    for name, model in models.items():
        print(f"parameters {name}: {sum(p.numel() for p in model.parameters()):,}")
    batch = storm_inputs(args.batch, args.size, 12, device)
    for name in ("sgt", "sgt_advect"):
        sgt = cast(StormGraphModel, models[name])
        prepared = sgt.prepare_inputs(batch[0], batch[1])  # stored units -> model grid
        counts = sgt.cells(last_vil(prepared)).counts.tolist()
        print(f"storm cells per sample, {name} (cap {sgt.detector.max_cells}): {counts}")
    compare(
        f"train step, batch {args.batch}",
        {n: train_step_seconds(m, batch, device, args.steps) for n, m in models.items()},
        "goal sgt_advect <= 1.5",
    )
    single = ({k: v[:1] for k, v in batch[0].items()}, batch[1][:1])
    goal = "30 ms (GPU)" if device.type == "cuda" else "1 s (CPU)"
    compare(
        "forecast latency, batch 1",
        {n: latency_seconds(m, *single, device, args.repeats) for n, m in models.items()},
        f"goal an SGT < {goal}",
    )

    flow_batch = storm_inputs(args.of_samples, args.size, 12, torch.device("cpu"), seed=1)
    persistence = get_model("persistence")
    t_pers = timed(lambda: persistence.forecast(*flow_batch[:2]), torch.device("cpu"), 3)
    serial = get_model("optical_flow")
    t_serial = timed(lambda: serial.forecast(*flow_batch[:2]), torch.device("cpu"), 2)
    pooled = get_model("optical_flow", workers=args.workers)
    t_pooled = timed(lambda: pooled.forecast(*flow_batch[:2]), torch.device("cpu"), 2)
    n = args.of_samples
    print(
        f"optical flow, {n} forecasts: 1 worker {n / t_serial:.2f} forecasts/s, "
        f"{args.workers} workers {n / t_pooled:.2f} forecasts/s "
        f"(speed-up {t_serial / t_pooled:.2f}); persistence {n / t_pers:.0f} forecasts/s"
    )


if __name__ == "__main__":
    main()
