"""Train state and the run directory: what a checkpoint holds, saving it, resuming from it.

:class:`TrainState` is where a run stands (epochs done, steps, the curve so far, the best
checkpoint); :class:`RunFiles` writes it to ``out_dir`` (``latest.pt``, ``best.pt``,
``metrics.csv``) and reads it back. The layout of a checkpoint is in
:mod:`stormfusion.training.checkpoint`.

Resuming on another number of processes (another node count after a preemption) with the
same global batch continues the same run: the weights, optimiser and scheduler states,
the position in the epoch and the data order (a function of the seed and the epoch only)
are restored exactly. The random generators of ranks that the checkpoint knows are
restored; a rank it does not know starts from a generator seeded with (seed, rank, step).
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from stormfusion import __version__
from stormfusion.errors import StormFusionError
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
from stormfusion.training.config import TrainingConfig
from stormfusion.training.distributed import DistContext, all_gather_objects, barrier
from stormfusion.training.metrics import write_metrics_csv

logger = logging.getLogger(__name__)

LATEST = "latest.pt"
BEST = "best.pt"
METRICS = "metrics.csv"
#: What :class:`RunFiles` does with an existing ``latest.pt`` (see :class:`Trainer`).
RESUME_MODES = ("strict", "auto", "never")


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
class EpochSums:
    """Running sums of one epoch (saved in mid-epoch checkpoints); times in seconds."""

    loss: float = 0.0
    terms: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    steps: int = 0
    time_s: float = 0.0
    data_s: float = 0.0
    step_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EpochSums:
        return cls(
            loss=float(d["loss"]),
            terms={k: float(v) for k, v in d["terms"].items()},
            samples=int(d["samples"]),
            steps=int(d["steps"]),
            time_s=float(d["time_s"]),
            data_s=float(d.get("data_s", 0.0)),
            step_s=float(d.get("step_s", 0.0)),
        )

    def add(self, loss: float, terms: dict[str, float], n: int) -> None:
        """Count one step's global mean loss and terms over its ``n`` samples."""
        self.loss += loss * n
        for k, v in terms.items():
            self.terms[k] = self.terms.get(k, 0.0) + v * n
        self.samples += n
        self.steps += 1


@dataclass
class TrainState:
    """Where a run stands."""

    epoch: int = 0  # completed epochs
    step_in_epoch: int = 0
    global_step: int = 0
    best_val_loss: float = math.inf
    best_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    sums: EpochSums = field(default_factory=EpochSums)
    best: dict[str, Any] | None = None

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any]) -> TrainState:
        return cls(
            epoch=int(saved["epoch"]),
            step_in_epoch=int(saved["step_in_epoch"]),
            global_step=int(saved["global_step"]),
            best_val_loss=float(saved["best_val_loss"]),
            best_epoch=int(saved["best_epoch"]),
            history=[dict(row) for row in saved["history"]],
            sums=EpochSums.from_dict(saved["partial_epoch"]),
            best=saved.get("best"),
        )


class Parts(NamedTuple):
    """What a checkpoint saves the state dicts of."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class RunFiles:
    """``latest.pt``, ``best.pt`` and ``metrics.csv`` of one run in ``out_dir``."""

    def __init__(
        self,
        out_dir: Path,
        *,
        model_name: str,
        model_args: dict[str, Any],
        config: TrainingConfig,
        data: DataInfo,
        ctx: DistContext,
        resume: str,
    ) -> None:
        if resume not in RESUME_MODES:
            raise StormFusionError(
                f"unknown resume mode {resume!r}; valid: {', '.join(RESUME_MODES)}"
            )
        self.out_dir = out_dir
        self.model_name = model_name
        self.model_args = plain_args(model_args)
        self.config = config
        self.data = data
        self.ctx = ctx
        self.resume = resume

    @property
    def latest_path(self) -> Path:
        return self.out_dir / LATEST

    # ------------------------------------------------------------------ saving
    def payload(self, state: TrainState, parts: Parts, rng: list[Any]) -> dict[str, Any]:
        """A checkpoint of ``state`` (``rng``: every rank's generator states)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "model_name": self.model_name,
            "model_args": self.model_args,
            "config": self.config.to_dict(),
            "model": parts.model.state_dict(),
            "optimizer": parts.optimizer.state_dict(),
            "scheduler": parts.scheduler.state_dict(),
            "rng": rng,
            "epoch": state.epoch,
            "step_in_epoch": state.step_in_epoch,
            "global_step": state.global_step,
            "partial_epoch": state.sums.to_dict(),
            "history": [dict(row) for row in state.history],
            "best_val_loss": state.best_val_loss,
            "best_epoch": state.best_epoch,
            "world_size": self.ctx.world_size,
            "data": self.data.to_dict(),
            "package_version": __version__,
            "provenance": provenance(data_fingerprint=self.data.data_fingerprint),
        }

    def keep_best(self, state: TrainState, parts: Parts) -> None:
        """Remember the current weights as the best (rank 0 keeps the payload)."""
        rng = all_gather_objects(capture_rng_state(), self.ctx)
        state.best = self.payload(state, parts, rng) if self.ctx.is_main else None

    def save_latest(self, state: TrainState, parts: Parts) -> None:
        """Write ``latest.pt`` (collective: every rank calls it)."""
        rng = all_gather_objects(capture_rng_state(), self.ctx)
        if self.ctx.is_main:
            payload = self.payload(state, parts, rng)
            payload["best"] = state.best
            save_checkpoint(self.latest_path, payload)
        barrier(self.ctx)

    def write_outputs(self, state: TrainState) -> None:
        """(Re)write ``best.pt`` and ``metrics.csv`` from the state (rank 0)."""
        if not self.ctx.is_main:
            return
        if state.best is not None:
            save_checkpoint(self.out_dir / BEST, state.best)
        if state.history:
            write_metrics_csv(self.out_dir / METRICS, state.history)

    # ---------------------------------------------------------------- resuming
    def check_resumable(self, saved: dict[str, Any]) -> None:
        """Raise a clear error when ``saved`` belongs to another run."""
        path = self.latest_path
        check_model_matches(saved, self.model_name, self.model_args, path)
        old, new = TrainingConfig.saved(saved["config"]), self.config.to_dict()
        diff = [
            f"{k}: checkpoint {old[k]!r} vs now {new[k]!r}"
            for k in TrainingConfig.RESUME_KEYS
            if k in old and old[k] != new[k]
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

    def fresh(self) -> TrainState:
        """A new run: the generators start from the seed (other dropout masks per rank)."""
        seed_everything(self.config.seed + self.ctx.rank)
        return TrainState()

    def load(self, parts: Parts) -> TrainState:
        """The state to continue from: ``latest.pt`` when there is a usable one."""
        if not self.latest_path.is_file():
            return self.fresh()
        if self.resume == "never":
            logger.info("%s exists but --resume never: training afresh", self.latest_path)
            return self.fresh()
        saved = read_checkpoint(self.latest_path)
        try:
            self.check_resumable(saved)
        except StormFusionError as exc:
            if self.resume == "strict":
                raise
            logger.warning("not resuming (%s): training afresh, it will be replaced", exc)
            return self.fresh()
        parts.model.load_state_dict(saved["model"])
        parts.optimizer.load_state_dict(saved["optimizer"])
        parts.scheduler.load_state_dict(saved["scheduler"])
        state = TrainState.from_checkpoint(saved)
        self._restore_rng(saved["rng"], state.global_step)
        logger.info(
            "resuming from %s: %d epochs done, step %d of epoch %d (global step %d)",
            self.latest_path,
            state.epoch,
            state.step_in_epoch,
            state.epoch + 1,
            state.global_step,
        )
        return state

    def _restore_rng(self, rng: list[Any], global_step: int) -> None:
        """This rank's saved generators, or fresh ones when the world grew."""
        if len(rng) != self.ctx.world_size:
            logger.warning(
                "%s was written by %d processes, now %d: weights, optimiser, schedule and "
                "data order continue exactly; random draws (dropout) of the ranks differ",
                self.latest_path,
                len(rng),
                self.ctx.world_size,
            )
        if self.ctx.rank < len(rng):
            restore_rng_state(rng[self.ctx.rank])
        else:
            entropy = [self.config.seed % 2**32, self.ctx.rank, global_step]
            seed_everything(int(np.random.SeedSequence(entropy).generate_state(1)[0]))
