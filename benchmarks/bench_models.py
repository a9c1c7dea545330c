"""Benchmark the forecast models: SGT training cost and latency, optical-flow throughput.

Run: ``python -m benchmarks.bench_models [--size 384] [--batch 4] [--steps 3]``.

On a batch of storm-like inputs (every modality, many cells so the SGT's graph is at its
cap), at the study's 384 x 384 and the seed's 12 -> 6 frames, default model sizes:

1. train step (forward + backward + AdamW step) of the SGT against the UNet2D yardstick,
   same batch, same run (goal: SGT at most 1.5x UNet2D);
2. inference latency of one 384 x 384 forecast (batch 1, ``forecast``), SGT and UNet2D
   (goal: SGT under 1 s on 2 CPU cores; under 30 ms on an H100-class GPU);
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

import torch
import torch.nn.functional as F

from stormfusion.data.sevir import STUDY_MODALITIES
from stormfusion.models import ForecastModel, get_model
from stormfusion.models.base import last_vil


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
    sgt = get_model("sgt").to(device)
    unet = get_model("unet2d").to(device)
    for name, model in (("sgt", sgt), ("unet2d", unet)):
        print(f"parameters {name}: {sum(p.numel() for p in model.parameters()):,}")

    batch = storm_inputs(args.batch, args.size, 12, device)
    cells = sgt.detector(last_vil(batch[0])[:, 0])
    print(f"storm cells per sample (cap {sgt.detector.max_cells}): {cells.counts.tolist()}")
    t_unet = train_step_seconds(unet, batch, device, args.steps)
    t_sgt = train_step_seconds(sgt, batch, device, args.steps)
    print(
        f"train step, batch {args.batch}: unet2d {t_unet:.3f} s, sgt {t_sgt:.3f} s, "
        f"ratio sgt/unet2d {t_sgt / t_unet:.2f} (goal <= 1.5)"
    )

    single = ({k: v[:1] for k, v in batch[0].items()}, batch[1][:1])
    l_unet = latency_seconds(unet, *single, device, args.repeats)
    l_sgt = latency_seconds(sgt, *single, device, args.repeats)
    goal = "30 ms (GPU)" if device.type == "cuda" else "1 s (CPU)"
    print(
        f"forecast latency, batch 1: unet2d {l_unet * 1e3:.1f} ms, sgt {l_sgt * 1e3:.1f} ms, "
        f"ratio {l_sgt / l_unet:.2f} (goal sgt < {goal})"
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
