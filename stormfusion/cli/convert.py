"""``stormfusion convert``: one modality of the raw HDF5 archive into a chunked Zarr store."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "convert one modality of the selected events from HDF5 to a chunked Zarr store"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``stormfusion convert``."""
    from stormfusion.data.convert import COMPRESSORS, DEFAULT_LAYOUT

    parser.add_argument(
        "--events",
        type=Path,
        required=True,
        help="event index (events.csv; events.json must lie beside it)",
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        required=True,
        help="raw archive root (holds data/<type>/<year>/SEVIR_*.h5)",
    )
    parser.add_argument("--modality", required=True, help="vil, ir069, ir107 or lght")
    parser.add_argument("--out", type=Path, required=True, help="store to write (M.zarr)")
    parser.add_argument(
        "--verify-events",
        type=int,
        default=3,
        help="events compared with the source after writing (default: 3)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="threads reading and writing in parallel (default: 1)",
    )
    parser.add_argument(
        "--time-chunk",
        type=int,
        default=DEFAULT_LAYOUT.time_chunk,
        help=f"frames per chunk (default: {DEFAULT_LAYOUT.time_chunk})",
    )
    parser.add_argument(
        "--compressor",
        choices=COMPRESSORS.names(),
        default=DEFAULT_LAYOUT.compressor,
        help=f"compression (default: {DEFAULT_LAYOUT.compressor})",
    )
    parser.add_argument(
        "--shard",
        action=argparse.BooleanOptionalAction,
        default=DEFAULT_LAYOUT.shard,
        help="one zarr v3 shard (file) per event",
    )


def run(args: argparse.Namespace) -> None:
    """Convert and verify; a bad input leaves no store."""
    from stormfusion.data.convert import StoreLayout, convert_modality
    from stormfusion.errors import StormFusionError

    if args.verify_events < 0:
        raise StormFusionError(f"--verify-events must be >= 0, got {args.verify_events}")
    convert_modality(
        args.events,
        args.data_root,
        args.modality,
        args.out,
        verify_events=args.verify_events,
        workers=args.workers,
        layout=StoreLayout(args.time_chunk, args.compressor, args.shard),
    )
