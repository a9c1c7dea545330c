"""``stormfusion split``: events to train/val/test, the windows of each event, the manifest."""

from __future__ import annotations

import argparse
from pathlib import Path

from stormfusion.errors import StormFusionError

HELP = (
    "split the events into train/val/test and cut the forecast windows "
    "(windows.csv and its manifest)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``stormfusion split``."""
    parser.add_argument("--events", type=Path, required=True, help="event index (events.csv)")
    parser.add_argument("--out", type=Path, required=True, help="windows table to write")
    parser.add_argument(
        "--manifest",
        type=Path,
        default=None,
        help="manifest JSON to write (its CSV beside it, same name with .csv; "
        "default: <out stem>_manifest.json beside --out)",
    )
    parser.add_argument(
        "--strategy",
        default="random",
        help="random, date, seed_catalog, window_list or manifest (default: random; "
        "see docs/data.md)",
    )
    _strategy_arguments(parser)
    _window_arguments(parser)


def _strategy_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the split strategies."""
    parser.add_argument("--seed", type=int, default=0, help="seed of the random choices")
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="random, seed_catalog, date with equal cuts: share of events for validation",
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
        help="date strategy: training events have time_utc <= this date (midnight UTC)",
    )
    parser.add_argument(
        "--val-end",
        default="2019-06-01",
        help="date strategy: validation events have time_utc <= this date, test after",
    )
    parser.add_argument("--catalog", default=None, help="seed_catalog strategy: CATALOG.csv")
    parser.add_argument(
        "--window-list",
        action="append",
        default=[],
        metavar="SPLIT=FILE",
        help="window_list strategy: the windows of one split, one "
        "<img_type>-<year>-<file name>-<file_index>-<window> per line (repeat per split)",
    )
    parser.add_argument(
        "--window-manifest",
        default=None,
        help="manifest strategy: a windows_manifest.json whose windows to use",
    )


def _window_arguments(parser: argparse.ArgumentParser) -> None:
    """Frames per window and stride."""
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


def _window_lists(values: list[str]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for value in values:
        split, sep, path = value.partition("=")
        if not sep or not split or not path:
            raise StormFusionError(f"--window-list {value!r}: expected SPLIT=FILE")
        pairs.append((split, path))
    return tuple(pairs)


def run(args: argparse.Namespace) -> None:
    """Assign splits, cut the windows and write the table and its manifest."""
    from stormfusion.data.splits import PRESETS, SplitOptions, WindowSpec, run_split

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
        catalog=args.catalog,
        window_lists=_window_lists(args.window_list),
        window_manifest=args.window_manifest,
    )
    manifest = args.manifest or args.out.with_name(f"{args.out.stem}_manifest.json")
    run_split(args.events, args.out, manifest, args.strategy, opts, spec)
