"""``stormfusion split``: events to train/val/test by event, and the windows of each event."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "split the events into train/val/test and cut the forecast windows (windows.csv)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``stormfusion split``."""
    parser.add_argument("--events", type=Path, required=True, help="event index (events.csv)")
    parser.add_argument("--out", type=Path, required=True, help="windows table to write")
    parser.add_argument(
        "--strategy",
        choices=["random", "date"],
        default="random",
        help="random (seeded, by event) or date (cut dates) (default: random)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random strategy seed (default: 0)")
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="random strategy: share of events for validation (default: 0.2)",
    )
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=0.0,
        help="random strategy: share of events for test (default: 0)",
    )
    parser.add_argument(
        "--train-end",
        default="2019-01-01",
        help="date strategy: training events have time_utc before this date",
    )
    parser.add_argument(
        "--val-end",
        default="2019-06-01",
        help="date strategy: validation events before this date, test after",
    )
    parser.add_argument(
        "--preset",
        choices=["seed", "sevir"],
        default="seed",
        help="window preset: seed = 12 in / 6 out, sevir = 13 in / 12 out, "
        "both stride 12 (default: seed); the options below override it",
    )
    parser.add_argument("--input-frames", type=int, default=None, help="input frames per window")
    parser.add_argument(
        "--output-frames", type=int, default=None, help="output (target) frames per window"
    )
    parser.add_argument("--stride", type=int, default=None, help="frames between window starts")


def run(args: argparse.Namespace) -> None:
    """Assign splits, cut the windows and write the table."""
    from stormfusion.data.splits import PRESETS, SplitOptions, WindowSpec, split_events

    preset = PRESETS[args.preset]
    spec = WindowSpec(
        input_frames=preset.input_frames if args.input_frames is None else args.input_frames,
        output_frames=preset.output_frames if args.output_frames is None else args.output_frames,
        stride=preset.stride if args.stride is None else args.stride,
    )
    opts = SplitOptions(
        seed=args.seed,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        train_end=args.train_end,
        val_end=args.val_end,
    )
    split_events(args.events, args.out, args.strategy, opts, spec)
