"""``stormfusion download``: CATALOG.csv, or the HDF5 files an event index needs, from S3."""

from __future__ import annotations

import argparse

from stormfusion.data.download import S3Options, download_catalog, download_events
from stormfusion.data.subset import download_events_only
from stormfusion.errors import StormFusionError

HELP = "download CATALOG.csv or the selected events' HDF5 files from S3 (verified, resumable)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the step."""
    parser.add_argument("--bucket", default="sevir", help="S3 bucket (default sevir)")
    parser.add_argument(
        "--region",
        default="us-west-2",
        help="AWS region (default us-west-2; the region the bucket names in a HEAD wins)",
    )
    parser.add_argument("--endpoint-url", help="S3 endpoint (mirrors, tests); default AWS")
    parser.add_argument(
        "--retries", type=int, default=5, help="retries per file, with backoff (default 5)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=8, help="parallel transfer threads (default 8)"
    )
    parser.add_argument(
        "--signed",
        action="store_true",
        help="sign requests with AWS credentials (default: anonymous requests)",
    )
    parser.add_argument("--out", required=True, help="raw data root (the bucket's tree)")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--catalog-only", action="store_true", help="fetch CATALOG.csv only")
    what.add_argument("--events", help="event index (events.csv): fetch the files it names")
    parser.add_argument("--manifest", help="JSON manifest to write (key, size, ETag per file)")
    parser.add_argument(
        "--events-only",
        action="store_true",
        help="with --events: fetch only the selected events' bytes of the raster files "
        "(HTTP range requests) into SEVIR-layout subset files, and write OUT/CATALOG.csv "
        "for them (lightning files are fetched whole)",
    )
    parser.add_argument(
        "--source-catalog",
        help="with --events-only: the bucket's full CATALOG.csv the events were selected on",
    )


def run(args: argparse.Namespace) -> None:
    """Download."""
    opts = S3Options(
        bucket=args.bucket,
        region=args.region,
        endpoint_url=args.endpoint_url,
        retries=args.retries,
        concurrency=args.concurrency,
        signed=args.signed,
    )
    if args.events_only and not (args.events and args.source_catalog):
        raise StormFusionError("--events-only needs --events and --source-catalog")
    if args.catalog_only:
        download_catalog(opts, args.out)
    elif args.events_only:
        download_events_only(
            opts, args.events, args.source_catalog, args.out, manifest=args.manifest
        )
    else:
        download_events(opts, args.events, args.out, manifest=args.manifest)
