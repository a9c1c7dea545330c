"""``stormfusion predict``: forecasts of one run over one split, to a Zarr store.

A learned model needs ``--checkpoint`` (its model name and arguments must match
``--model``/``--model-args``); a baseline without weights (persistence, optical flow) runs
without one. Augmentation is off; samples are in windows-table order.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "forecast a split with a trained checkpoint or an untrained baseline, to Zarr"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stormfusion.training.config import TrainingConfig

    parser.add_argument("--run", required=True, help="run name (recorded in the store)")
    parser.add_argument("--model", required=True, help="registry name")
    parser.add_argument("--model-args", default="{}", help="constructor arguments as JSON")
    parser.add_argument("--checkpoint", type=Path, default=None, help="best.pt of the run")
    parser.add_argument("--zarr-dir", required=True, type=Path, help="directory of <m>.zarr")
    parser.add_argument("--windows", required=True, type=Path, help="windows.csv")
    parser.add_argument("--events-meta", required=True, type=Path, help="events.json")
    parser.add_argument("--split", default="val", choices=["train", "val", "test"])
    parser.add_argument("--image-size", type=int, default=384, help="model grid (pixels)")
    parser.add_argument(
        "--lightning-frames",
        default=TrainingConfig.lightning_frames,
        help="as the run was trained with (see train --lightning-frames; default: "
        f"{TrainingConfig.lightning_frames})",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--out", required=True, type=Path, help="RESULTS/forecasts/RUN.zarr")


def run(args: argparse.Namespace) -> None:
    from stormfusion.training.run import RunData, predict_run

    predict_run(
        run=args.run,
        model=args.model,
        model_args=args.model_args,
        data=RunData(args.zarr_dir, args.windows, args.events_meta),
        split=args.split,
        out=args.out,
        checkpoint=args.checkpoint,
        image_size=args.image_size,
        batch_size=args.batch_size,
        workers=args.workers,
        lightning_frames=args.lightning_frames,
    )
