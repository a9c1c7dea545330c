"""Benchmark contingency counting against the SEVIR paper's way.

Run: ``python -m benchmarks.bench_verification [--samples 24] [--size 384] [--leads 12]``.

Yardstick (the SEVIR paper's way): one 2-D histogram of (forecast, truth) per lead time
over the whole set (``numpy.histogram2d`` with 256 x 256 unit bins on 0..255), from which
hits, misses and false alarms at every threshold are summed. Ours: the streaming
:class:`stormfusion.verification.contingency.ContingencyCounts`, batch by batch (8 samples)
with per-event counts, as the score step runs it. Both get the same arrays: forecasts as
uint8 (the forecast store's dtype), truth as float32, VIL-like fields, with missing truth
(255) in a 32 x 32 patch of every tenth frame (``--missing-every``), which both sides
leave out (the official rule; the yardstick drops the histogram's truth bin 255). The
counts must be identical; the goal is >= 20x faster on the CPU, both sides on one core by
default (``--threads`` changes torch's).
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import numpy as np
import torch

from stormfusion.data.sevir import VIL_MISSING, VIL_THRESHOLDS
from stormfusion.verification.contingency import ContingencyCounts

BATCH = 8


def vil_fields(rng: np.random.Generator, n: int, leads: int, size: int) -> np.ndarray:
    """(n, leads, size, size) VIL-like uint8: smooth gamma-distributed fields."""
    coarse = rng.gamma(0.4, 45.0, size=(n, leads, size // 16 + 1, size // 16 + 1))
    fields = np.repeat(np.repeat(coarse, 16, axis=2), 16, axis=3)[:, :, :size, :size]
    fields = fields + rng.normal(0.0, 12.0, fields.shape)
    return np.clip(np.round(fields), 0, 254).astype(np.uint8)


def histogram_counts(forecast: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The yardstick: (T, L, 3) hits, misses, false alarms from a 2-D histogram per lead."""
    edges = np.arange(257, dtype=np.float64)  # unit bins: value v falls in bin v
    out = np.zeros((len(VIL_THRESHOLDS), forecast.shape[1], 3), dtype=np.int64)
    for lead in range(forecast.shape[1]):
        hist, _, _ = np.histogram2d(
            forecast[:, lead].ravel(), truth[:, lead].ravel(), bins=(edges, edges)
        )
        hist = hist.astype(np.int64)[:, :VIL_MISSING]  # hist[f, o], missing truth dropped
        for k, t in enumerate(VIL_THRESHOLDS):
            hits = hist[t:, t:].sum()
            out[k, lead] = (hits, hist[:t, t:].sum(), hist[t:, :t].sum())
    return out


def ours(forecast: np.ndarray, truth: np.ndarray, events: list[str]) -> np.ndarray:
    counts = ContingencyCounts.init(forecast.shape[1])
    f_all, o_all = torch.from_numpy(forecast), torch.from_numpy(truth)
    for lo in range(0, forecast.shape[0], BATCH):
        hi = lo + BATCH
        counts.accumulate(f_all[lo:hi], o_all[lo:hi], events[lo:hi])
    return counts.totals()[..., :3]


def best_of(fn: Callable[[], np.ndarray], repeats: int) -> tuple[float, np.ndarray]:
    times, result = [], np.zeros(0)
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--leads", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--missing-every",
        type=int,
        default=10,
        help="a 32 x 32 patch of missing truth in every N-th frame (0: none)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: the yardstick, numpy.histogram2d, is single-threaded)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    truth8 = vil_fields(rng, args.samples, args.leads, args.size)
    noise = rng.normal(0.0, 25.0, truth8.shape)
    forecast = np.clip(np.round(truth8 + noise), 0, 255).astype(np.uint8)
    if args.missing_every > 0:
        truth8.reshape(-1, args.size, args.size)[:: args.missing_every, :32, :32] = VIL_MISSING
    truth = truth8.astype(np.float32)
    events = [f"E{i // 3}" for i in range(args.samples)]  # three windows per event
    pixels = truth.size
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}"
    )
    print(
        f"data: {args.samples} samples x {args.leads} leads x {args.size}^2 "
        f"= {pixels / 1e6:.1f} M pixel pairs, thresholds {VIL_THRESHOLDS}"
    )
    t_ref, ref = best_of(lambda: histogram_counts(forecast, truth), args.repeats)
    t_ours, got = best_of(lambda: ours(forecast, truth, events), args.repeats)
    identical = bool(np.array_equal(ref, got))
    print(
        f"2-D histogram per lead (SEVIR paper's way): {t_ref:8.3f} s "
        f"({pixels / t_ref / 1e6:7.1f} M pairs/s)"
    )
    print(
        f"ContingencyCounts (streaming, per event):  {t_ours:8.3f} s "
        f"({pixels / t_ours / 1e6:7.1f} M pairs/s)"
    )
    print(f"speed-up: {t_ref / t_ours:.1f}x (goal >= 20x); counts identical: {identical}")
    if not identical:
        raise SystemExit("counts differ from the yardstick")


if __name__ == "__main__":
    main()
