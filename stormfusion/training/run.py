"""The two steps behind ``stormfusion train`` and ``stormfusion predict``.

:func:`train_run` and :func:`predict_run` read the windows table, the event index's
metadata and the Zarr stores, check that they belong together (one data fingerprint), and
run the :class:`~stormfusion.training.trainer.Trainer` or
:func:`~stormfusion.training.predict.predict_to_zarr`. The command-line modules only parse
options and call them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from stormfusion.data.dataset import SevirWindowDataset
from stormfusion.data.event_index import read_events_json
from stormfusion.data.splits import read_windows
from stormfusion.errors import StormFusionError
from stormfusion.models import ForecastModel, get_model, get_model_class
from stormfusion.provenance import provenance
from stormfusion.training.checkpoint import build_model_from, check_model_matches, read_checkpoint
from stormfusion.training.config import TrainingConfig
from stormfusion.training.distributed import init_distributed, shutdown_distributed
from stormfusion.training.inputs import (
    catalog_hash,
    check_fingerprint,
    events_in_splits,
    parse_model_args,
    window_frames,
    with_frames,
)
from stormfusion.training.predict import predict_to_zarr
from stormfusion.training.state import DataInfo
from stormfusion.training.trainer import Trainer, TrainingResult

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunData:
    """The inputs of a train or predict step: the stores, the windows and their metadata."""

    zarr_dir: Path
    windows: Path
    events_meta: Path


@dataclass(frozen=True)
class _Loaded:
    table: pd.DataFrame
    meta: dict[str, Any]
    model_args: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        return str(self.meta["data_fingerprint"])


def _load(data: RunData, model_args_json: str) -> _Loaded:
    """The windows table, the metadata, and the model arguments with the frame counts."""
    table = read_windows(data.windows)
    frames = window_frames(table, data.windows)
    model_args = with_frames(parse_model_args(model_args_json), frames, data.windows)
    return _Loaded(table, read_events_json(data.events_meta), model_args)


def open_split(
    data: RunData,
    loaded: _Loaded,
    split: str,
    modalities: tuple[str, ...],
    **options: Any,
) -> SevirWindowDataset:
    """One split's dataset, refused when its stores belong to another event index."""
    dataset = SevirWindowDataset(
        data.zarr_dir, loaded.table, split, modalities=modalities, **options
    )
    check_fingerprint(dataset.data_fingerprint, loaded.fingerprint, data.zarr_dir, data.events_meta)
    return dataset


def _build(model: str, model_args: dict[str, Any]) -> ForecastModel:
    try:
        return get_model(model, **model_args)
    except (TypeError, ValueError) as exc:
        raise StormFusionError(
            f"model {model!r} cannot be built with --model-args {model_args}: {exc}"
        ) from None


def _dataset_options(config: TrainingConfig, split: str) -> dict[str, Any]:
    """What a training split's dataset takes from the settings (augmentation: train only)."""
    return {
        "image_size": config.image_size,
        "augment": split == "train" and config.augment,
        "seed": config.seed,
        "lightning_frames": config.lightning_frames,
        "window_sampling": config.window_sampling,
    }


def train_run(
    *,
    model: str,
    model_args: str,
    data: RunData,
    out_dir: Path,
    config: TrainingConfig,
    resume: str = "strict",
) -> TrainingResult:
    """Train ``model`` on the train split, validating on ``val``, into ``out_dir``.

    ``model_args`` is JSON text; the frame counts come from the windows table. Under
    torchrun every process calls this; ``config.batch_size`` is the global batch.
    """
    if not get_model_class(model).trainable:
        raise StormFusionError(
            f"model {model!r} has no weights to train; run 'stormfusion predict' for it "
            "without --checkpoint"
        )
    loaded = _load(data, model_args)
    modalities = _build(model, loaded.model_args).modalities
    ctx = init_distributed()
    try:
        datasets = {
            split: open_split(data, loaded, split, modalities, **_dataset_options(config, split))
            for split in ("train", "val")
        }
        info = DataInfo(
            data_fingerprint=loaded.fingerprint,
            catalog_sha256=catalog_hash(loaded.meta),
            events=events_in_splits(loaded.table, ("train", "val")),
        )
        result = Trainer(
            model_name=model,
            model_args=loaded.model_args,
            train_set=datasets["train"],
            val_set=datasets["val"],
            out_dir=out_dir,
            config=config,
            data=info,
            ctx=ctx,
            resume=resume,
        ).fit()
    finally:
        shutdown_distributed(ctx)
    logger.info(
        "best validation loss %.5g at epoch %d; checkpoints in %s",
        result.best_val_loss,
        result.best_epoch,
        result.out_dir,
    )
    return result


def _forecast_model(
    model: str, model_args: dict[str, Any], checkpoint: Path | None, fingerprint: str
) -> tuple[ForecastModel, dict[str, Any]]:
    """The model to forecast with, and the store attributes naming its checkpoint."""
    if checkpoint is None:
        if get_model_class(model).trainable:
            raise StormFusionError(
                f"model {model!r} is learned: pass --checkpoint with its trained weights"
            )
        return _build(model, model_args), {}
    payload = read_checkpoint(checkpoint)
    check_model_matches(payload, model, model_args, checkpoint)
    trained_on = payload["data"].get("data_fingerprint")
    if trained_on != fingerprint:
        logger.warning(
            "%s was trained on data %s; forecasting data %s", checkpoint, trained_on, fingerprint
        )
    extra = {"checkpoint": str(checkpoint), "checkpoint_epoch": int(payload["epoch"])}
    return build_model_from(payload, checkpoint), extra


def predict_run(
    *,
    run: str,
    model: str,
    model_args: str,
    data: RunData,
    split: str,
    out: str | os.PathLike[str],
    checkpoint: Path | None = None,
    image_size: int = 384,
    batch_size: int = 8,
    workers: int = 0,
    lightning_frames: str = TrainingConfig.lightning_frames,
) -> Path:
    """Forecast ``split`` with a checkpoint (learned models) or an untrained baseline.

    Writes the forecast store ``out`` (``docs/architecture.md``); samples in windows-table
    order, augmentation off.
    """
    loaded = _load(data, model_args)
    forecaster, extra = _forecast_model(model, loaded.model_args, checkpoint, loaded.fingerprint)
    dataset = open_split(
        data,
        loaded,
        split,
        forecaster.modalities,
        image_size=image_size,
        augment=False,
        lightning_frames=lightning_frames,
    )
    rows = dataset.windows
    attrs = {
        "run": run,
        "model": model,
        "model_args": loaded.model_args,
        "split": split,
        "image_size": image_size,
        "provenance": provenance(data_fingerprint=loaded.fingerprint),
        **extra,
    }
    return predict_to_zarr(
        forecaster,
        dataset,
        out,
        event_ids=[str(e) for e in rows["event_id"]],
        window_starts=[int(s) for s in rows["window_start"]],
        attrs=attrs,
        batch_size=batch_size,
        workers=workers,
    )
