"""The training loop: AdamW, ReduceLROnPlateau, clipping, DDP, validation every epoch.

:class:`Trainer` optimises ``model.training_loss(inputs, mask, target)`` of any
:class:`~stormfusion.models.base.ForecastModel` over the batches of a map-style dataset
(the batch contract of ``docs/architecture.md``), validates after every epoch, and writes
into ``out_dir`` (through :class:`~stormfusion.training.state.RunFiles`):

- ``latest.pt``: after every epoch and every ``checkpoint_every_steps`` steps; it holds
  everything needed to resume *and* to rewrite the two files below;
- ``best.pt``: the checkpoint of the epoch with the lowest validation loss;
- ``metrics.csv``: one row per epoch (:mod:`stormfusion.training.metrics`);
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
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from stormfusion.errors import StormFusionError
from stormfusion.models import ForecastModel, get_model
from stormfusion.training.config import TrainingConfig
from stormfusion.training.distributed import DistContext, ShardedBatchSampler, all_reduce_sum
from stormfusion.training.loaders import make_loader
from stormfusion.training.metrics import TensorBoard, log_epoch, progress_bar
from stormfusion.training.state import (
    DataInfo,
    EpochSums,
    Parts,
    RunFiles,
    TrainState,
    seed_everything,
)

logger = logging.getLogger(__name__)


@dataclass
class TrainingResult:
    """What :meth:`Trainer.fit` returns."""

    history: list[dict[str, float]]
    best_epoch: int
    best_val_loss: float
    out_dir: Path


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
        batch["target"].to(device, non_blocking=non_blocking).float(),  # loader: uint8
    )


def _trainable_model(
    model_name: str, build: Callable[[], ForecastModel], ctx: DistContext, device: torch.device
) -> ForecastModel:
    """The model, seeded alike on every rank, synchronised batch norm under DDP on GPUs."""
    model = build()
    if not model.trainable:
        raise StormFusionError(
            f"model {model_name!r} has nothing to train; forecast it with "
            "'stormfusion predict' without --checkpoint"
        )
    if ctx.enabled and device.type == "cuda":
        # batch statistics over the global batch, as one process would compute them
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model.to(device)


def _wrap_for_ddp(model: ForecastModel, ctx: DistContext, device: torch.device) -> nn.Module:
    loss_module = _LossModule(model)
    if not ctx.enabled:
        return loss_module
    return DistributedDataParallel(
        loss_module,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=True,  # ablations switch whole branches off
    )


class Trainer:
    """Trains one model; see the module docstring for what it writes.

    Args:
        model_name: registry name (stored in checkpoints; :func:`load_model` uses it).
        model_args: constructor arguments (plain JSON values).
        train_set, val_set: map-style datasets yielding the batch contract's items; when
            they have ``set_epoch(epoch)`` it is called before each epoch's items are read
            (augmentation), in the process that reads them.
        out_dir: where checkpoints, metrics and logs go (resumes from ``latest.pt`` there).
        config: the training settings (``image_size`` and ``augment`` are the datasets'
            business; they are recorded and checked on resume).
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
        self.ctx = ctx or DistContext()
        self.out_dir = Path(out_dir)
        self.files = RunFiles(
            self.out_dir,
            model_name=model_name,
            model_args=model_args,
            config=config,
            data=data,
            ctx=self.ctx,
            resume=resume,
        )
        self.model_name, self.config, self.on_step = model_name, config, on_step
        self.train_set, self.val_set = train_set, val_set
        self.device = device or select_device(self.ctx)
        if len(val_set) == 0:  # type: ignore[arg-type]
            raise StormFusionError("the validation split has no windows: nothing to validate on")
        seed_everything(config.seed)  # the same initial weights on every rank
        build = build_model or (lambda: get_model(model_name, **model_args))
        self.model = _trainable_model(model_name, build, self.ctx, self.device)
        self.loss_module = _wrap_for_ddp(self.model, self.ctx, self.device)
        optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="min",
            factor=config.scheduler_factor,
            patience=config.scheduler_patience,
        )
        self.parts = Parts(self.model, optimizer, scheduler)
        self._make_loaders()
        self.autocast: Callable[[], contextlib.AbstractContextManager[Any]] = (
            (lambda: torch.autocast(device_type="cuda", dtype=torch.bfloat16))
            if self.device.type == "cuda"
            else contextlib.nullcontext
        )

    def _make_loaders(self) -> None:
        cfg, ctx = self.config, self.ctx
        n_train = len(self.train_set)  # type: ignore[arg-type]
        self.train_sampler = ShardedBatchSampler(
            n_train,
            cfg.batch_size,
            rank=ctx.rank,
            world_size=ctx.world_size,
            seed=cfg.seed,
            max_steps=cfg.max_steps_per_epoch,
        )
        if self.train_sampler.steps_per_epoch == 0:
            raise StormFusionError(
                f"the training split has {n_train} windows, fewer than one batch of "
                f"{cfg.batch_size}: lower --batch-size"
            )
        self.val_sampler = ShardedBatchSampler(
            len(self.val_set),  # type: ignore[arg-type]
            cfg.batch_size,
            rank=ctx.rank,
            world_size=ctx.world_size,
            shuffle=False,
            drop_last=False,
        )
        self._loader_generator = torch.Generator()
        self.train_loader, self.val_loader = (
            make_loader(
                dataset,
                sampler,
                workers=cfg.num_workers,
                device=self.device,
                generator=self._loader_generator,
            )
            for dataset, sampler in (
                (self.train_set, self.train_sampler),
                (self.val_set, self.val_sampler),
            )
        )

    @property
    def model_args(self) -> dict[str, Any]:
        return self.files.model_args

    @property
    def latest_path(self) -> Path:
        return self.files.latest_path

    # ---------------------------------------------------------------- running
    def fit(self) -> TrainingResult:
        """Train to ``config.epochs`` (resuming if ``latest.pt`` exists) and return the curve."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        state = self.files.load(self.parts)
        self.files.write_outputs(state)  # outputs a killed run's rerun may have lost
        board = TensorBoard(self.out_dir, state.global_step, enabled=self.ctx.is_main)
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
            for epoch in range(state.epoch, self.config.epochs):
                self._run_epoch(epoch, state, board)
        finally:
            torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
            board.close()
        self.files.write_outputs(state)
        return TrainingResult(state.history, state.best_epoch, state.best_val_loss, self.out_dir)

    def _set_epoch(self, epoch: int, start_step: int) -> None:
        self.train_sampler.set_epoch(epoch, start_step)
        self.val_sampler.set_epoch(epoch)
        self._loader_generator.manual_seed(self.config.seed * 100_003 + epoch)

    def _run_epoch(self, epoch: int, state: TrainState, board: TensorBoard) -> None:
        self._set_epoch(epoch, state.step_in_epoch)
        lr = float(self.parts.optimizer.param_groups[0]["lr"])
        started = time.perf_counter() - state.sums.time_s
        self._train_epoch(epoch, state, board, started)
        sums = state.sums
        train_time = time.perf_counter() - started
        val_loss, val_terms = self._validate(epoch)
        row: dict[str, float] = {
            "epoch": epoch + 1,
            "train_loss": sums.loss / max(sums.samples, 1),
            "val_loss": val_loss,
            "lr": lr,
            "time_s": time.perf_counter() - started,
            "samples_per_s": sums.samples / max(train_time, 1e-9),
            "data_s": sums.data_s,
            "step_s": sums.step_s,
        }
        # a term named "loss" repeats the loss itself: keep the base columns
        row.update(
            {f"train_{k}": v / max(sums.samples, 1) for k, v in sums.terms.items() if k != "loss"}
        )
        row.update({f"val_{k}": v for k, v in val_terms.items() if k != "loss"})
        self.parts.scheduler.step(val_loss)
        self._end_epoch(state, row, board)

    def _end_epoch(self, state: TrainState, row: dict[str, float], board: TensorBoard) -> None:
        """Record the epoch's row, keep the best weights, write the outputs."""
        state.history.append(row)
        state.epoch, state.step_in_epoch, state.sums = int(row["epoch"]), 0, EpochSums()
        improved = row["val_loss"] < state.best_val_loss
        if improved:
            state.best_val_loss, state.best_epoch = row["val_loss"], state.epoch
            self.files.keep_best(state, self.parts)
        self.files.save_latest(state, self.parts)
        self.files.write_outputs(state)
        board.epoch(row)
        log_epoch(row, self.config.epochs, improved)

    def _train_epoch(
        self, epoch: int, state: TrainState, board: TensorBoard, started: float
    ) -> None:
        """The epoch's optimiser steps, from ``state.step_in_epoch`` on."""
        steps = self.train_sampler.steps_per_epoch
        sums, every = state.sums, self.config.checkpoint_every_steps
        bar = progress_bar(
            steps, state.step_in_epoch, f"epoch {epoch + 1}/{self.config.epochs}", self.ctx.is_main
        )
        self.loss_module.train()
        with bar:
            waited = time.perf_counter()
            for batch in self._batches(self.train_loader):
                stepping = time.perf_counter()
                loss, terms, n = self._train_step(batch, epoch, state)
                done = time.perf_counter()
                sums.data_s += stepping - waited
                sums.step_s += done - stepping
                sums.add(loss, terms, n)
                sums.time_s = done - started
                state.step_in_epoch += 1
                state.global_step += 1
                rate = sums.samples / max(sums.time_s, 1e-9)
                bar.set_postfix(loss=f"{loss:.4g}", samples_s=f"{rate:.1f}", refresh=False)
                bar.update(1)
                board.step(loss, state.global_step)
                if every and state.global_step % every == 0 and state.step_in_epoch < steps:
                    self.files.save_latest(state, self.parts)
                if self.on_step is not None:
                    self.on_step(state.global_step)
                waited = time.perf_counter()

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

    def _stopped(self, what: str, epoch: int, state: TrainState) -> StormFusionError:
        return StormFusionError(
            f"{what} at epoch {epoch + 1}, step {state.step_in_epoch + 1} (global step "
            f"{state.global_step + 1}); stopped, the last good checkpoint {self.latest_path} "
            "is kept"
        )

    def _train_step(
        self, batch: Mapping[str, Any], epoch: int, state: TrainState
    ) -> tuple[float, dict[str, float], int]:
        """One optimiser step; returns the global mean loss, its terms and the global batch."""
        try:
            inputs, mask, target = _to_device(batch, self.device)
            with self.autocast():
                loss, terms = self.loss_module(inputs, mask, target)
            n = int(batch["target"].shape[0])
            value = float(loss.detach())
            keys = sorted(terms)
            finite = math.isfinite(value)
            reduced = self._reduce(
                [value * n if finite else 0.0, float(n), 0.0 if finite else 1.0]
                + [float(terms[k]) * n for k in keys]
            )
            if reduced[2] > 0:
                shown = value if not finite else "on another rank"
                raise self._stopped(f"non-finite training loss ({shown})", epoch, state)
            self._optimise(loss, epoch, state)
        except (MemoryError, RuntimeError) as exc:
            if is_out_of_memory(exc):
                raise self._oom_error(f"training step {state.global_step + 1}") from None
            raise
        total = reduced[1]
        mean_terms = {k: reduced[3 + i] / total for i, k in enumerate(keys)}
        return reduced[0] / total, mean_terms, int(total)

    def _optimise(self, loss: Tensor, epoch: int, state: TrainState) -> None:
        """Backward, clip (refusing a non-finite gradient norm), step."""
        optimizer = self.parts.optimizer
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        )
        if not math.isfinite(grad_norm):
            raise self._stopped(f"non-finite gradient norm ({grad_norm})", epoch, state)
        optimizer.step()

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
                n = int(batch["target"].shape[0])
                loss_sum, count = loss_sum + float(loss) * n, count + n
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
