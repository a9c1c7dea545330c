"""``stormfusion select-events``: the event index (events.csv + events.json) from the catalog."""

from __future__ import annotations

import argparse

from stormfusion.data.selection import KINDS, SelectionOptions, run_selection
from stormfusion.data.sevir import MODALITIES, STUDY_MODALITIES

HELP = "select events from CATALOG.csv and write the event index"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the step."""
    parser.add_argument("--catalog", required=True, help="CATALOG.csv")
    parser.add_argument(
        "--data-root",
        required=True,
        help="raw data root (catalog file names resolve to DATA_ROOT/data/<file_name>)",
    )
    parser.add_argument("--kind", choices=KINDS, default="storm", help="event kind (default storm)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --max-events choice")
    parser.add_argument(
        "--modalities",
        nargs="+",
        choices=list(MODALITIES),
        default=list(STUDY_MODALITIES),
        help="REQUIRED modalities (default: vil ir069 ir107 lght)",
    )
    parser.add_argument("--years", nargs="+", type=int, help="keep events of these years")
    parser.add_argument("--start", help="keep time_utc >= START (YYYY-MM-DD)")
    parser.add_argument("--end", help="keep time_utc < END (YYYY-MM-DD)")
    parser.add_argument("--event-types", nargs="+", help="NWS event types to keep")
    parser.add_argument("--max-events", type=int, help="keep at most N events (seeded choice)")
    parser.add_argument(
        "--allow-missing-pixels",
        action="store_true",
        help="keep events with pct_missing > 0 (default: only complete events)",
    )
    parser.add_argument("--out", required=True, help="events.csv to write")
    parser.add_argument("--meta", required=True, help="events.json to write")


def run(args: argparse.Namespace) -> None:
    """Select and write the index."""
    options = SelectionOptions(
        kind=args.kind,
        modalities=tuple(args.modalities),
        years=tuple(args.years) if args.years else None,
        start=args.start,
        end=args.end,
        event_types=tuple(args.event_types) if args.event_types else None,
        require_complete=not args.allow_missing_pixels,
        max_events=args.max_events,
        seed=args.seed,
    )
    run_selection(args.catalog, options, args.out, args.meta, data_root=args.data_root)
