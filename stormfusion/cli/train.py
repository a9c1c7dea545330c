"""``stormfusion train``: train one learned model (or ablation variant) on the train split.

Validates on the ``val`` split after every epoch and writes ``best.pt``, ``latest.pt`` and
``metrics.csv`` (and TensorBoard logs) into ``--out-dir``; started again, it resumes from
``latest.pt``. Under ``torchrun --nproc_per_node=G -m stormfusion.cli train ...`` it trains
with DistributedDataParallel; ``--batch-size`` is then the global batch over the G processes.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from stormfusion.errors import StormFusionError

logger = logging.getLogger(__name__)

HELP = "train a learned model (AdamW, resumable checkpoints, DDP under torchrun)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stormfusion.training.trainer import RESUME_MODES

    parser.add_argument("--model", required=True, help="registry name (e.g. unet2d, sgt)")
    parser.add_argument("--model-args", default="{}", help="constructor arguments as JSON")
    parser.add_argument("--zarr-dir", required=True, type=Path, help="directory of <m>.zarr")
    parser.add_argument("--windows", required=True, type=Path, help="windows.csv")
    parser.add_argument("--events-meta", required=True, type=Path, help="events.json")
    parser.add_argument("--out-dir", required=True, type=Path, help="RESULTS/models/RUN")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4, help="global batch (all GPUs)")
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate")
    parser.add_argument("--weight-decay", type=float, default=1e-5)
    parser.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--checkpoint-every-steps",
        type=int,
        default=0,
        help="also write latest.pt every N optimiser steps (0: at epoch ends only)",
    )
    parser.add_argument("--image-size", type=int, default=384, help="model grid (pixels)")
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--max-steps-per-epoch", type=int, default=None)
    parser.add_argument("--no-augment", action="store_true", help="no training augmentation")
    parser.add_argument(
        "--resume",
        choices=RESUME_MODES,
        default="strict",
        help="an existing latest.pt in --out-dir: 'strict' resumes from it and refuses one "
        "of another model, other arguments, settings or data; 'auto' resumes from a "
        "compatible one and otherwise trains afresh (what the pipeline uses, so that a "
        "changed config retrains); 'never' always trains afresh (default: strict)",
    )


def run(args: argparse.Namespace) -> None:
    from stormfusion.data.dataset import SevirWindowDataset
    from stormfusion.data.event_index import read_events_json
    from stormfusion.data.splits import read_windows
    from stormfusion.models import get_model, get_model_class
    from stormfusion.training.distributed import init_distributed, shutdown_distributed
    from stormfusion.training.inputs import (
        catalog_hash,
        parse_model_args,
        split_events,
        window_frames,
        with_frames,
    )
    from stormfusion.training.trainer import DataInfo, Trainer, TrainingConfig

    model_args = parse_model_args(args.model_args)
    if not get_model_class(args.model).trainable:
        raise StormFusionError(
            f"model {args.model!r} has no weights to train; run 'stormfusion predict' for it "
            "without --checkpoint"
        )
    windows = read_windows(args.windows)
    model_args = with_frames(model_args, window_frames(windows, args.windows), args.windows)
    meta = read_events_json(args.events_meta)
    config = TrainingConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        grad_clip=args.grad_clip,
        seed=args.seed,
        checkpoint_every_steps=args.checkpoint_every_steps,
        max_steps_per_epoch=args.max_steps_per_epoch,
        num_workers=args.num_workers,
    )
    try:
        modalities = get_model(args.model, **model_args).modalities
    except (TypeError, ValueError) as exc:
        raise StormFusionError(
            f"model {args.model!r} cannot be built with --model-args {model_args}: {exc}"
        ) from None

    ctx = init_distributed()
    try:
        datasets = {
            split: SevirWindowDataset(
                args.zarr_dir,
                windows,
                split,
                modalities=modalities,
                image_size=args.image_size,
                augment=split == "train" and not args.no_augment,
                seed=args.seed,
            )
            for split in ("train", "val")
        }
        fingerprint = str(meta["data_fingerprint"])
        for split, dataset in datasets.items():
            if dataset.data_fingerprint != fingerprint:
                raise StormFusionError(
                    f"the Zarr stores in {args.zarr_dir} ({split} split) carry data fingerprint "
                    f"{dataset.data_fingerprint}, but {args.events_meta} has {fingerprint}: "
                    "convert the stores again for this event index"
                )
        data = DataInfo(
            data_fingerprint=fingerprint,
            catalog_sha256=catalog_hash(meta),
            events=split_events(windows, ("train", "val")),
        )
        result = Trainer(
            model_name=args.model,
            model_args=model_args,
            train_set=datasets["train"],
            val_set=datasets["val"],
            out_dir=args.out_dir,
            config=config,
            data=data,
            ctx=ctx,
            resume=args.resume,
        ).fit()
    finally:
        shutdown_distributed(ctx)
    logger.info(
        "best validation loss %.5g at epoch %d; checkpoints in %s",
        result.best_val_loss,
        result.best_epoch,
        result.out_dir,
    )
