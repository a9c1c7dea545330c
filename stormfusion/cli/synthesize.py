"""``stormfusion synthesize``: write the synthetic SEVIR twin (catalog + HDF5 files)."""

from __future__ import annotations

import argparse

from stormfusion.data.synthetic import synthesize_archive

HELP = "write a synthetic SEVIR archive (CATALOG.csv + HDF5 files in the real layout)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the step."""
    parser.add_argument("--out", required=True, help="raw data root to write (CATALOG.csv, data/)")
    parser.add_argument("--events", type=int, default=48, help="storm (S) events (default 48)")
    parser.add_argument(
        "--random-events", type=int, default=8, help="random (R) events (default 8)"
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=384,
        help="VIL pixels per side, a multiple of 8 (IR: half, lightning grid: 1/8; default 384)",
    )
    parser.add_argument(
        "--year",
        type=int,
        default=2019,
        help="events span July of year-1 to December of year (default 2019)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def run(args: argparse.Namespace) -> None:
    """Write the twin."""
    synthesize_archive(
        args.out,
        n_storm=args.events,
        n_random=args.random_events,
        image_size=args.image_size,
        year=args.year,
        seed=args.seed,
    )
