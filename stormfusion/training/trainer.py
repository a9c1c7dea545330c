"""One trainer for every learned model: AdamW, ReduceLROnPlateau, clipping, checkpoints, DDP.

:class:`Trainer` optimises ``model.training_loss(inputs, mask, target)`` of any
:class:`~stormfusion.models.base.ForecastModel` over the batches of a map-style dataset
(the batch contract of ``docs/architecture.md``), validates after every epoch, and writes
into ``out_dir``:

- ``latest.pt``: after every epoch and every ``checkpoint_every_steps`` steps; it holds
  everything needed to resume *and* to rewrite the two files below;
- ``best.pt``: the checkpoint of the epoch with the lowest validation loss;
- ``metrics.csv``: one row per epoch (:data:`METRIC_COLUMNS`, then ``train_<term>`` and
  ``val_<term>`` for each named loss term);
- ``tensorboard/``: event files, when tensorboard is installed.

A run started again in the same ``out_dir`` resumes from ``latest.pt`` and ends with the
same weights as an uninterrupted run (on the CPU: batches come from
:class:`~stormfusion.training.distributed.ShardedBatchSampler`, whose order depends only
on the seed and the epoch, and every generator state is saved). Under torchrun the model
is wrapped in DistributedDataParallel; ``batch_size`` is the *global* batch, split evenly
over the processes, so the loss curve does not depend on the number of processes (on
GPUs, batch normalisation is synchronised for this; torch has no synchronised batch norm on
the CPU, where each gloo process normalises its own share of the batch).
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, default_collate
from tqdm import tqdm

from stormfusion import __version__
from stormfusion.errors import StormFusionError
from stormfusion.io import write_text_atomic
from stormfusion.models import ForecastModel, get_model
from stormfusion.provenance import provenance
from stormfusion.training.checkpoint import (
    CHECKPOINT_FORMAT,
    capture_rng_state,
    check_model_matches,
    plain_args,
    read_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from stormfusion.training.distributed import (
    DistContext,
    ShardedBatchSampler,
    all_gather_objects,
    all_reduce_sum,
    barrier,
)

logger = logging.getLogger(__name__)

#: The first columns of ``metrics.csv``; the loss terms follow.
METRIC_COLUMNS: tuple[str, ...] = (
    "epoch",
    "train_loss",
    "val_loss",
    "lr",
    "time_s",
    "samples_per_s",
)
LATEST = "latest.pt"
#: What :class:`Trainer` does with an existing ``latest.pt`` (see its ``resume`` argument).
RESUME_MODES = ("strict", "auto", "never")
BEST = "best.pt"
METRICS = "metrics.csv"


@dataclass(frozen=True)
class TrainingConfig:
    """Training settings (the seed study's defaults). ``batch_size`` is the global batch."""

    epochs: int = 20
    batch_size: int = 4
    lr: float = 1e-4
    weight_decay: float = 1e-5
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every_steps: int = 0
    max_steps_per_epoch: int | None = None
    num_workers: int = 0
    lr_factor: float = 0.5
    lr_patience: int = 2

    #: Settings a resumed run must share with its checkpoint (the others may change).
    RESUME_KEYS = (
        "batch_size",
        "lr",
        "weight_decay",
        "grad_clip",
        "seed",
        "max_steps_per_epoch",
        "lr_factor",
        "lr_patience",
    )

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "weight_decay": self.weight_decay >= 0,
            "grad_clip": self.grad_clip > 0,
            "checkpoint_every_steps": self.checkpoint_every_steps >= 0,
            "max_steps_per_epoch": self.max_steps_per_epoch is None
            or self.max_steps_per_epoch >= 1,
            "num_workers": self.num_workers >= 0,
            "lr_factor": 0 < self.lr_factor < 1,
            "lr_patience": self.lr_patience >= 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"{k}={getattr(self, k)!r}" for k in bad)
            raise StormFusionError(f"invalid training settings: {values}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionary (stored in checkpoints)."""
        return asdict(self)


@dataclass(frozen=True)
class DataInfo:
    """What the model was trained on (stored in checkpoints)."""

    data_fingerprint: str
    catalog_sha256: str = "unknown"
    events: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "data_fingerprint": self.data_fingerprint,
            "catalog_sha256": self.catalog_sha256,
            "events": list(self.events),
        }


@dataclass
class TrainingResult:
    """What :meth:`Trainer.fit` returns."""

    history: list[dict[str, float]]
    best_epoch: int
    best_val_loss: float
    out_dir: Path


@dataclass
class _EpochSums:
    """Running sums of one epoch (saved in mid-epoch checkpoints)."""

    loss: float = 0.0
    terms: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    steps: int = 0
    time_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> _EpochSums:
        return cls(
            loss=float(d["loss"]),
            terms={k: float(v) for k, v in d["terms"].items()},
            samples=int(d["samples"]),
            steps=int(d["steps"]),
            time_s=float(d["time_s"]),
        )


@dataclass
class _Progress:
    epoch: int = 0  # completed epochs
    step_in_epoch: int = 0
    global_step: int = 0
    best_val_loss: float = math.inf
    best_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    sums: _EpochSums = field(default_factory=_EpochSums)
    best: dict[str, Any] | None = None


class _LossModule(nn.Module):
    """Routes ``training_loss`` through ``forward`` so DistributedDataParallel sees it."""

    def __init__(self, model: ForecastModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, inputs: dict[str, Tensor], mask: Tensor, target: Tensor
    ) -> tuple[Tensor, dict[str, float]]:
        return self.model.training_loss(inputs, mask, target)


def select_device(ctx: DistContext) -> torch.device:
    """CUDA (this rank's GPU) when available, else the CPU with a log line saying so."""
    if torch.cuda.is_available():
        return torch.device("cuda", ctx.local_rank)
    logger.info("CUDA is not available: training on the CPU (deterministic for a seed)")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (CUDA or CPU)."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text.lower()
    )


def _to_device(
    batch: Mapping[str, Any], device: torch.device
) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    non_blocking = device.type == "cuda"
    inputs = {k: v.to(device, non_blocking=non_blocking) for k, v in batch["inputs"].items()}
    return (
        inputs,
        batch["mask"].to(device, non_blocking=non_blocking),
        batch["target"].to(device, non_blocking=non_blocking),
    )


def _batch_size(batch: Mapping[str, Any]) -> int:
    return int(batch["target"].shape[0])


def _open_tensorboard(out_dir: Path, purge_step: int) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.info("tensorboard is not installed: no TensorBoard logs")
        return None
    return SummaryWriter(log_dir=str(out_dir / "tensorboard"), purge_step=purge_step or None)


def write_metrics_csv(path: Path, history: list[dict[str, float]]) -> None:
    """Write the per-epoch rows atomically (base columns first, then the loss terms)."""
    extra = sorted(
        {k for row in history for k in row} - set(METRIC_COLUMNS),
        key=lambda k: (not k.startswith("train_"), k),
    )
    columns = [*METRIC_COLUMNS, *extra]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row.get(k, "") for k in columns})
    write_text_atomic(path, buffer.getvalue())


class Trainer:
    """Trains one model; see the module docstring for what it writes.

    Args:
        model_name: registry name (stored in checkpoints; :func:`load_model` uses it).
        model_args: constructor arguments (plain JSON values).
        train_set, val_set: map-style datasets yielding the batch contract's items; when
            they have ``set_epoch(epoch)`` it is called before each epoch (augmentation).
        out_dir: where checkpoints, metrics and logs go (resumes from ``latest.pt`` there).
        config: the training settings.
        data: fingerprint and events of the training data.
        build_model: builds the model; default ``get_model(model_name, **model_args)``.
        ctx: the process group (default: a single process).
        device: default CUDA when available, else the CPU.
        on_step: called with the global step after each optimiser step (and after the
            step's checkpoint, if any), on every rank.
        resume: what to do with an existing ``latest.pt``: ``strict`` resumes from it and
            refuses one written for another model, other arguments, other training settings
            or other data (a clear error); ``auto`` resumes from a compatible one and
            otherwise trains afresh with a warning saying why (the pipeline's mode: a job
            that Snakemake reruns because its settings changed must not stall on the old
            run's checkpoint, while an interrupted job resumes); ``never`` always trains
            afresh.
    """

    def __init__(
        self,
        *,
        model_name: str,
        model_args: dict[str, Any],
        train_set: Dataset[Any],
        val_set: Dataset[Any],
        out_dir: str | Path,
        config: TrainingConfig,
        data: DataInfo,
        build_model: Callable[[], ForecastModel] | None = None,
        ctx: DistContext | None = None,
        device: torch.device | None = None,
        on_step: Callable[[int], None] | None = None,
        resume: str = "strict",
    ) -> None:
        if resume not in RESUME_MODES:
            raise StormFusionError(
                f"unknown resume mode {resume!r}; valid: {', '.join(RESUME_MODES)}"
            )
        self.resume = resume
        self.model_name = model_name
        self.model_args = plain_args(model_args)
        self.train_set = train_set
        self.val_set = val_set
        self.out_dir = Path(out_dir)
        self.config = config
        self.data = data
        self.ctx = ctx or DistContext()
        self.device = device or select_device(self.ctx)
        self.on_step = on_step
        n_train, n_val = len(train_set), len(val_set)  # type: ignore[arg-type]
        if n_val == 0:
            raise StormFusionError("the validation split has no windows: nothing to validate on")

        seed_everything(config.seed)  # the same initial weights on every rank
        model = build_model() if build_model is not None else get_model(model_name, **model_args)
        if not model.trainable:
            raise StormFusionError(
                f"model {model_name!r} has nothing to train; forecast it with "
                "'stormfusion predict' without --checkpoint"
            )
        if self.ctx.enabled and self.device.type == "cuda":
            # batch statistics over the global batch, as one process would compute them
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model.to(self.device)
        loss_module = _LossModule(self.model)
        self.loss_module: nn.Module = (
            DistributedDataParallel(
                loss_module,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,  # ablations switch whole branches off
            )
            if self.ctx.enabled
            else loss_module
        )
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=config.lr_factor, patience=config.lr_patience
        )
        self.train_sampler = ShardedBatchSampler(
            n_train,
            config.batch_size,
            rank=self.ctx.rank,
            world_size=self.ctx.world_size,
            seed=config.seed,
            shuffle=True,
            drop_last=True,
            max_steps=config.max_steps_per_epoch,
        )
        if self.train_sampler.steps_per_epoch == 0:
            raise StormFusionError(
                f"the training split has {n_train} windows, fewer than one batch of "
                f"{config.batch_size}: lower --batch-size"
            )
        self.val_sampler = ShardedBatchSampler(
            n_val,
            config.batch_size,
            rank=self.ctx.rank,
            world_size=self.ctx.world_size,
            shuffle=False,
            drop_last=False,
        )
        self._loader_generator = torch.Generator()
        self.train_loader = self._loader(train_set, self.train_sampler)
        self.val_loader = self._loader(val_set, self.val_sampler)
        self.autocast: Callable[[], contextlib.AbstractContextManager[Any]] = (
            (lambda: torch.autocast(device_type="cuda", dtype=torch.bfloat16))
            if self.device.type == "cuda"
            else contextlib.nullcontext
        )

    # ------------------------------------------------------------------ setup
    def _loader(self, dataset: Dataset[Any], sampler: ShardedBatchSampler) -> DataLoader[Any]:
        workers = self.config.num_workers
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=workers,
            collate_fn=default_collate,
            pin_memory=self.device.type == "cuda",
            generator=self._loader_generator,
            persistent_workers=False,
        )

    @property
    def latest_path(self) -> Path:
        return self.out_dir / LATEST

    # ------------------------------------------------------------ checkpoints
    def _payload(self, progress: _Progress, rng: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "model_name": self.model_name,
            "model_args": self.model_args,
            "config": self.config.to_dict(),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng,
            "epoch": progress.epoch,
            "step_in_epoch": progress.step_in_epoch,
            "global_step": progress.global_step,
            "partial_epoch": progress.sums.to_dict(),
            "history": [dict(row) for row in progress.history],
            "best_val_loss": progress.best_val_loss,
            "best_epoch": progress.best_epoch,
            "world_size": self.ctx.world_size,
            "data": self.data.to_dict(),
            "package_version": __version__,
            "provenance": provenance(data_fingerprint=self.data.data_fingerprint),
        }

    def _save_latest(self, progress: _Progress) -> None:
        rng = all_gather_objects(capture_rng_state(), self.ctx)
        if self.ctx.is_main:
            payload = self._payload(progress, rng)
            payload["best"] = progress.best
            save_checkpoint(self.latest_path, payload)
        barrier(self.ctx)

    def _write_best_and_metrics(self, progress: _Progress) -> None:
        if not self.ctx.is_main:
            return
        if progress.best is not None:
            save_checkpoint(self.out_dir / BEST, progress.best)
        if progress.history:
            write_metrics_csv(self.out_dir / METRICS, progress.history)

    def _check_resumable(self, saved: dict[str, Any]) -> None:
        path = self.latest_path
        check_model_matches(saved, self.model_name, self.model_args, path)
        old, new = saved["config"], self.config.to_dict()
        diff = [
            f"{k}: checkpoint {old.get(k)!r} vs now {new[k]!r}"
            for k in TrainingConfig.RESUME_KEYS
            if old.get(k) != new[k]
        ]
        if diff:
            raise StormFusionError(
                f"{path} was written with other training settings ({'; '.join(diff)}); "
                "use another --out-dir or delete it to start afresh"
            )
        if int(saved["epoch"]) > self.config.epochs:
            raise StormFusionError(
                f"{path} has {int(saved['epoch'])} epochs done, more than the "
                f"{self.config.epochs} asked for; use another --out-dir or delete it to "
                "start afresh"
            )
        if saved["data"]["data_fingerprint"] != self.data.data_fingerprint:
            raise StormFusionError(
                f"{path} was trained on other data (fingerprint "
                f"{saved['data']['data_fingerprint']} vs {self.data.data_fingerprint}); "
                "use another --out-dir or delete it to start afresh"
            )

    def _fresh(self) -> _Progress:
        # a fresh run: the generators start from the seed (other dropout masks per rank)
        seed_everything(self.config.seed + self.ctx.rank)
        return _Progress()

    def _resume(self) -> _Progress:
        if not self.latest_path.is_file():
            return self._fresh()
        if self.resume == "never":
            logger.info("%s exists but --resume never: training afresh", self.latest_path)
            return self._fresh()
        saved = read_checkpoint(self.latest_path)
        try:
            self._check_resumable(saved)
        except StormFusionError as exc:
            if self.resume == "strict":
                raise
            logger.warning("not resuming (%s): training afresh, it will be replaced", exc)
            return self._fresh()
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        rng = saved["rng"]
        if len(rng) == self.ctx.world_size:
            restore_rng_state(rng[self.ctx.rank])
        else:
            logger.warning(
                "%s was written by %d processes, now %d: random states start from rank 0's",
                self.latest_path,
                len(rng),
                self.ctx.world_size,
            )
            restore_rng_state(rng[0])
        progress = _Progress(
            epoch=int(saved["epoch"]),
            step_in_epoch=int(saved["step_in_epoch"]),
            global_step=int(saved["global_step"]),
            best_val_loss=float(saved["best_val_loss"]),
            best_epoch=int(saved["best_epoch"]),
            history=[dict(row) for row in saved["history"]],
            sums=_EpochSums.from_dict(saved["partial_epoch"]),
            best=saved.get("best"),
        )
        logger.info(
            "resuming from %s: %d epochs done, step %d of epoch %d (global step %d)",
            self.latest_path,
            progress.epoch,
            progress.step_in_epoch,
            progress.epoch + 1,
            progress.global_step,
        )
        return progress

    # ---------------------------------------------------------------- running
    def fit(self) -> TrainingResult:
        """Train to ``config.epochs`` (resuming if ``latest.pt`` exists) and return the curve."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        progress = self._resume()
        self._write_best_and_metrics(progress)  # outputs a killed run's rerun may have lost
        writer = _open_tensorboard(self.out_dir, progress.global_step) if self.ctx.is_main else None
        n_params = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        logger.info(
            "training %s (%d parameters) on %s x%d: %d epochs of %d steps, global batch %d",
            self.model_name,
            n_params,
            self.device,
            self.ctx.world_size,
            self.config.epochs,
            self.train_sampler.steps_per_epoch,
            self.config.batch_size,
        )
        deterministic = (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
        )
        if self.device.type == "cpu":  # reproducible for a seed (restored afterwards)
            torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            for epoch in range(progress.epoch, self.config.epochs):
                self._run_epoch(epoch, progress, writer)
        finally:
            torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
            if writer is not None:
                writer.close()
        self._write_best_and_metrics(progress)
        return TrainingResult(
            progress.history, progress.best_epoch, progress.best_val_loss, self.out_dir
        )

    def _set_epoch(self, epoch: int, start_step: int) -> None:
        self.train_sampler.set_epoch(epoch, start_step)
        self._loader_generator.manual_seed(self.config.seed * 100_003 + epoch)
        for dataset in (self.train_set, self.val_set):
            set_epoch = getattr(dataset, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(epoch)

    def _run_epoch(self, epoch: int, progress: _Progress, writer: Any) -> None:
        cfg = self.config
        self._set_epoch(epoch, progress.step_in_epoch)
        lr = float(self.optimizer.param_groups[0]["lr"])
        steps = self.train_sampler.steps_per_epoch
        bar = tqdm(
            total=steps,
            initial=progress.step_in_epoch,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            unit="step",
            disable=not self.ctx.is_main,
            dynamic_ncols=True,
            mininterval=1.0 if sys.stderr.isatty() else 30.0,
            file=sys.stderr,
        )
        self.loss_module.train()
        started = time.perf_counter() - progress.sums.time_s
        sums = progress.sums
        with bar:
            for batch in self._batches(self.train_loader):
                loss, terms, n = self._train_step(batch, epoch, progress)
                sums.loss += loss * n
                for k, v in terms.items():
                    sums.terms[k] = sums.terms.get(k, 0.0) + v * n
                sums.samples += n
                sums.steps += 1
                sums.time_s = time.perf_counter() - started
                progress.step_in_epoch += 1
                progress.global_step += 1
                rate = sums.samples / max(sums.time_s, 1e-9)
                bar.set_postfix(loss=f"{loss:.4g}", samples_s=f"{rate:.1f}", refresh=False)
                bar.update(1)
                if writer is not None:
                    writer.add_scalar("train/step_loss", loss, progress.global_step)
                every = cfg.checkpoint_every_steps
                if every and progress.global_step % every == 0 and progress.step_in_epoch < steps:
                    self._save_latest(progress)
                if self.on_step is not None:
                    self.on_step(progress.global_step)
        train_time = time.perf_counter() - started
        val_loss, val_terms = self._validate(epoch)
        row: dict[str, float] = {
            "epoch": epoch + 1,
            "train_loss": sums.loss / max(sums.samples, 1),
            "val_loss": val_loss,
            "lr": lr,
            "time_s": time.perf_counter() - started,
            "samples_per_s": sums.samples / max(train_time, 1e-9),
        }
        # a term named "loss" repeats the loss itself: keep the base columns
        row.update(
            {f"train_{k}": v / max(sums.samples, 1) for k, v in sums.terms.items() if k != "loss"}
        )
        row.update({f"val_{k}": v for k, v in val_terms.items() if k != "loss"})
        self.scheduler.step(val_loss)
        progress.history.append(row)
        progress.epoch, progress.step_in_epoch, progress.sums = epoch + 1, 0, _EpochSums()
        improved = val_loss < progress.best_val_loss
        if improved:
            progress.best_val_loss, progress.best_epoch = val_loss, epoch + 1
            rng = all_gather_objects(capture_rng_state(), self.ctx)
            progress.best = self._payload(progress, rng) if self.ctx.is_main else None
        self._save_latest(progress)
        self._write_best_and_metrics(progress)
        if writer is not None:
            for key, value in row.items():
                if key != "epoch":
                    writer.add_scalar(f"epoch/{key}", value, epoch + 1)
            writer.flush()
        logger.info(
            "epoch %d/%d: train loss %.5g, val loss %.5g%s, lr %.3g, %.1f samples/s, %.1f s",
            epoch + 1,
            cfg.epochs,
            row["train_loss"],
            val_loss,
            " (best)" if improved else "",
            lr,
            row["samples_per_s"],
            row["time_s"],
        )

    def _batches(self, loader: DataLoader[Any]) -> Iterator[Any]:
        try:
            yield from loader
        except (MemoryError, RuntimeError) as exc:
            if is_out_of_memory(exc):
                raise self._oom_error("loading data") from None
            raise

    def _oom_error(self, where: str) -> StormFusionError:
        per_rank = self.config.batch_size // self.ctx.world_size
        return StormFusionError(
            f"out of memory on {self.device} while {where} (batch {per_rank} per process): "
            "reduce --batch-size, --image-size or the model's hidden_dim (--model-args)"
        )

    def _reduce(self, values: list[float]) -> list[float]:
        tensor = torch.tensor(
            values, dtype=torch.float64, device=self.device if self.ctx.enabled else "cpu"
        )
        return all_reduce_sum(tensor, self.ctx).tolist()

    def _train_step(
        self, batch: Mapping[str, Any], epoch: int, progress: _Progress
    ) -> tuple[float, dict[str, float], int]:
        """One optimiser step; returns the global mean loss, its terms and the global batch."""
        step = progress.global_step + 1
        try:
            inputs, mask, target = _to_device(batch, self.device)
            with self.autocast():
                loss, terms = self.loss_module(inputs, mask, target)
            n = _batch_size(batch)
            value = float(loss.detach())
            keys = sorted(terms)
            finite = math.isfinite(value)
            reduced = self._reduce(
                [
                    value * n if finite else 0.0,
                    float(n),
                    0.0 if finite else 1.0,
                    *(float(terms[k]) * n for k in keys),
                ]
            )
            if reduced[2] > 0:
                raise StormFusionError(
                    f"non-finite training loss ({value if not finite else 'on another rank'}) "
                    f"at epoch {epoch + 1}, step {progress.step_in_epoch + 1} (global step {step});"
                    f" stopped, the last good checkpoint {self.latest_path} is kept"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = float(
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            )
            if not math.isfinite(grad_norm):
                raise StormFusionError(
                    f"non-finite gradient norm ({grad_norm}) at epoch {epoch + 1}, step "
                    f"{progress.step_in_epoch + 1} (global step {step}); stopped, the last good "
                    f"checkpoint {self.latest_path} is kept"
                )
            self.optimizer.step()
        except (MemoryError, RuntimeError) as exc:
            if is_out_of_memory(exc):
                raise self._oom_error(f"training step {step}") from None
            raise
        total = reduced[1]
        return (
            reduced[0] / total,
            {k: reduced[3 + i] / total for i, k in enumerate(keys)},
            int(total),
        )

    @torch.no_grad()
    def _validate(self, epoch: int) -> tuple[float, dict[str, float]]:
        """Mean validation loss and terms over the whole split (all ranks together)."""
        self.model.eval()
        loss_sum, count = 0.0, 0
        term_sums: dict[str, float] = {}
        try:
            for batch in self._batches(self.val_loader):
                inputs, mask, target = _to_device(batch, self.device)
                with self.autocast():
                    loss, terms = self.model.training_loss(inputs, mask, target)
                n = _batch_size(batch)
                loss_sum += float(loss) * n
                count += n
                for k, v in terms.items():
                    term_sums[k] = term_sums.get(k, 0.0) + float(v) * n
        except (MemoryError, RuntimeError) as exc:
            if is_out_of_memory(exc):
                raise self._oom_error("validating") from None
            raise
        finally:
            self.model.train()
        keys = sorted(term_sums)
        reduced = self._reduce([loss_sum, float(count), *(term_sums[k] for k in keys)])
        val_loss = reduced[0] / reduced[1]
        if not math.isfinite(val_loss):
            raise StormFusionError(
                f"non-finite validation loss ({val_loss}) after epoch {epoch + 1}; stopped, the "
                f"last good checkpoint {self.latest_path} is kept"
            )
        return val_loss, {k: reduced[2 + i] / reduced[1] for i, k in enumerate(keys)}
