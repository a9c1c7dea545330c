"""``stormfusion predict``: forecasts of one run over one split, to a Zarr store.

A learned model needs ``--checkpoint`` (its model name and arguments must match
``--model``/``--model-args``); a baseline without weights (persistence, optical flow) runs
without one. Augmentation is off; samples are in windows-table order.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from stormfusion.errors import StormFusionError

logger = logging.getLogger(__name__)

HELP = "forecast a split with a trained checkpoint or an untrained baseline, to Zarr"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run name (recorded in the store)")
    parser.add_argument("--model", required=True, help="registry name")
    parser.add_argument("--model-args", default="{}", help="constructor arguments as JSON")
    parser.add_argument("--checkpoint", type=Path, default=None, help="best.pt of the run")
    parser.add_argument("--zarr-dir", required=True, type=Path, help="directory of <m>.zarr")
    parser.add_argument("--windows", required=True, type=Path, help="windows.csv")
    parser.add_argument("--events-meta", required=True, type=Path, help="events.json")
    parser.add_argument("--split", default="val", choices=["train", "val", "test"])
    parser.add_argument("--image-size", type=int, default=384, help="model grid (pixels)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--out", required=True, type=Path, help="RESULTS/forecasts/RUN.zarr")


def run(args: argparse.Namespace) -> None:
    import torch

    from stormfusion.data.dataset import SevirWindowDataset
    from stormfusion.data.event_index import read_events_json
    from stormfusion.data.splits import read_windows
    from stormfusion.models import ForecastModel, get_model, get_model_class
    from stormfusion.provenance import provenance
    from stormfusion.training.checkpoint import (
        build_model_from,
        check_model_matches,
        read_checkpoint,
    )
    from stormfusion.training.inputs import (
        parse_model_args,
        window_frames,
        with_frames,
    )
    from stormfusion.training.predict import predict_to_zarr

    windows = read_windows(args.windows)
    model_args = with_frames(
        parse_model_args(args.model_args), window_frames(windows, args.windows), args.windows
    )
    meta = read_events_json(args.events_meta)
    fingerprint = str(meta["data_fingerprint"])
    extra: dict[str, object] = {}
    model: ForecastModel
    if args.checkpoint is not None:
        payload = read_checkpoint(args.checkpoint)
        check_model_matches(payload, args.model, model_args, args.checkpoint)
        model = build_model_from(payload, args.checkpoint)
        trained_on = payload["data"].get("data_fingerprint")
        if trained_on != fingerprint:
            logger.warning(
                "%s was trained on data %s; forecasting data %s",
                args.checkpoint,
                trained_on,
                fingerprint,
            )
        extra = {"checkpoint": str(args.checkpoint), "checkpoint_epoch": int(payload["epoch"])}
    elif get_model_class(args.model).trainable:
        raise StormFusionError(
            f"model {args.model!r} is learned: pass --checkpoint with its trained weights"
        )
    else:
        try:
            model = get_model(args.model, **model_args)
        except (TypeError, ValueError) as exc:
            raise StormFusionError(
                f"model {args.model!r} cannot be built with --model-args {model_args}: {exc}"
            ) from None

    dataset = SevirWindowDataset(
        args.zarr_dir,
        windows,
        args.split,
        modalities=model.modalities,
        image_size=args.image_size,
        augment=False,
    )
    if dataset.data_fingerprint != fingerprint:
        raise StormFusionError(
            f"the Zarr stores in {args.zarr_dir} carry data fingerprint "
            f"{dataset.data_fingerprint}, but {args.events_meta} has {fingerprint}"
        )
    rows = dataset.windows
    if not torch.cuda.is_available():
        logger.info("CUDA is not available: forecasting on the CPU")
    predict_to_zarr(
        model,
        dataset,
        args.out,
        event_ids=[str(e) for e in rows["event_id"]],
        window_starts=[int(s) for s in rows["window_start"]],
        attrs={
            "run": args.run,
            "model": args.model,
            "model_args": model_args,
            "split": args.split,
            "image_size": args.image_size,
            "provenance": provenance(data_fingerprint=fingerprint),
            **extra,
        },
        batch_size=args.batch_size,
        workers=args.workers,
    )
