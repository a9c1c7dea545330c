"""``stormfusion train``: train one learned model (or ablation variant) on the train split.

Validates on the ``val`` split after every epoch and writes ``best.pt``, ``latest.pt`` and
``metrics.csv`` (and TensorBoard logs) into ``--out-dir``; started again, it resumes from
``latest.pt``. Under ``torchrun`` (one node or several) it trains with
DistributedDataParallel; ``--batch-size`` is then the global batch over all processes.
The training options and their defaults come from
:class:`stormfusion.training.config.TrainingConfig`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "train a learned model (AdamW, resumable checkpoints, DDP under torchrun)"

RESUME_HELP = (
    "an existing latest.pt in --out-dir: 'strict' resumes from it and refuses one of "
    "another model, other arguments, settings or data; 'auto' resumes from a compatible "
    "one and otherwise trains afresh (what the pipeline uses, so that a changed config "
    "retrains); 'never' always trains afresh (default: strict)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stormfusion.training.config import add_config_arguments
    from stormfusion.training.state import RESUME_MODES

    parser.add_argument("--model", required=True, help="registry name (e.g. unet2d, sgt)")
    parser.add_argument("--model-args", default="{}", help="constructor arguments as JSON")
    parser.add_argument("--zarr-dir", required=True, type=Path, help="directory of <m>.zarr")
    parser.add_argument("--windows", required=True, type=Path, help="windows.csv")
    parser.add_argument("--events-meta", required=True, type=Path, help="events.json")
    parser.add_argument("--out-dir", required=True, type=Path, help="RESULTS/models/RUN")
    add_config_arguments(parser)
    parser.add_argument("--resume", choices=RESUME_MODES, default="strict", help=RESUME_HELP)


def run(args: argparse.Namespace) -> None:
    from stormfusion.training.config import config_from_args
    from stormfusion.training.run import RunData, train_run

    train_run(
        model=args.model,
        model_args=args.model_args,
        data=RunData(args.zarr_dir, args.windows, args.events_meta),
        out_dir=args.out_dir,
        config=config_from_args(args),
        resume=args.resume,
    )
