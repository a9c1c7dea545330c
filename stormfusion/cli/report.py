"""``stormfusion report``: the paper's tables and figures from the scored runs."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "write the paper tables (CSV, Markdown, LaTeX) and figures (PNG, PDF) from the scores"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runs",
        required=True,
        help="runs as JSON {run: {model, args, ablation_of, trainable}} (inline or a file)",
    )
    parser.add_argument("--results", required=True, type=Path, help="the RESULTS folder")
    parser.add_argument("--zarr-dir", required=True, type=Path, help="INTERIM/zarr")
    parser.add_argument("--windows", required=True, type=Path, help="windows.csv")
    parser.add_argument("--events-meta", required=True, type=Path, help="events.json")
    parser.add_argument("--config-hash", required=True, help="hash of the run's config")
    parser.add_argument("--panel-events", type=int, default=2, help="events drawn as panels")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (0: none)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")


def run(args: argparse.Namespace) -> None:
    from stormfusion.report.build import ReportOptions, make_report

    make_report(
        ReportOptions(
            runs=args.runs,
            results=args.results,
            zarr_dir=args.zarr_dir,
            windows=args.windows,
            events_meta=args.events_meta,
            config_hash=args.config_hash,
            panel_events=args.panel_events,
            bootstrap=args.bootstrap,
            seed=args.seed,
        )
    )
