"""``stormfusion score``: verify one run's forecasts against the truth."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = (
    "score a run's forecast store against the VIL truth (CSI, HSS, POD, SUCR, BIAS, MSE, "
    "SSIM, MS-SSIM, LPIPS, conservation)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--forecast", required=True, type=Path, help="RESULTS/forecasts/RUN.zarr")
    parser.add_argument("--truth", required=True, type=Path, help="INTERIM/zarr/vil.zarr")
    parser.add_argument("--windows", required=True, type=Path, help="windows.csv")
    parser.add_argument(
        "--lpips-weights",
        type=Path,
        default=None,
        help="directory with alexnet.pth (or alexnet-owt-7be5be79.pth) and alex.pth; must "
        "exist (default: where 'stormfusion lpips-weights' installs them, then "
        "$TORCH_HOME/hub/checkpoints and the lpips package; LPIPS is n/a when none is found)",
    )
    parser.add_argument(
        "--windows-manifest",
        type=Path,
        default=None,
        help="windows_manifest.json of the split step: its digest is declared in the scores "
        "(absent: declared 'unknown')",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="the grid the forecasts must be on (data.image_size); a forecast on another grid "
        "(cropped or resized) is refused (default: not checked)",
    )
    parser.add_argument("--out-csv", required=True, type=Path, help="RUN.csv")
    parser.add_argument("--out-json", required=True, type=Path, help="RUN.json")
    parser.add_argument("--out-counts", required=True, type=Path, help="RUN.counts.npz")
    parser.add_argument("--batch-size", type=int, default=8, help="samples per batch (default 8)")
    parser.add_argument(
        "--device", default=None, help="torch device (default: cuda when present, else cpu)"
    )


def run(args: argparse.Namespace) -> None:
    from stormfusion.verification.scoring import score_run

    score_run(
        forecast=args.forecast,
        truth=args.truth,
        windows=args.windows,
        out_csv=args.out_csv,
        out_json=args.out_json,
        out_counts=args.out_counts,
        lpips_weights=args.lpips_weights,
        batch_size=args.batch_size,
        device=args.device,
        windows_manifest=args.windows_manifest,
        image_size=args.image_size,
    )
