"""Training settings: one dataclass, the single source of their defaults.

:class:`TrainingConfig` holds every setting ``stormfusion train`` takes besides its
inputs and outputs. The command's options are generated from its fields
(:func:`add_config_arguments`, :func:`config_from_args`), the workflow builds the command
line from config values with :func:`config_argv`, and ``tests/test_training_config.py``
checks that the defaults in ``workflow/schemas/config.schema.yaml`` (``training`` and the
data-loading keys of ``data``) are these. This module imports neither torch nor the
models, so the workflow can use it cheaply.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from stormfusion.errors import StormFusionError


def _setting(default: Any, text: str, *, schema: str = "training") -> Any:
    """A field with its help text and the config section that documents it."""
    return field(default=default, metadata={"help": text, "schema": schema})


@dataclass(frozen=True)
class TrainingConfig:
    """Training settings (the seed study's defaults). ``batch_size`` is the global batch."""

    epochs: int = _setting(20, "epochs to train")
    batch_size: int = _setting(4, "global batch over all processes (all GPUs of all nodes)")
    lr: float = _setting(1e-4, "AdamW learning rate (not scaled with the number of processes)")
    weight_decay: float = _setting(1e-5, "AdamW weight decay")
    grad_clip: float = _setting(1.0, "max gradient norm")
    seed: int = _setting(0, "seed of weights, data order, augmentation and dropout")
    checkpoint_every_steps: int = _setting(
        0, "also write latest.pt every N optimiser steps (0: at epoch ends only)"
    )
    max_steps_per_epoch: int | None = _setting(None, "cap on optimiser steps per epoch")
    scheduler_factor: float = _setting(
        0.5, "ReduceLROnPlateau: factor applied to the learning rate on a plateau"
    )
    scheduler_patience: int = _setting(
        3, "ReduceLROnPlateau: epochs without a lower validation loss before lowering the rate"
    )
    image_size: int = _setting(384, "model grid (pixels per side)", schema="data")
    augment: bool = _setting(True, "dihedral augmentation of training windows", schema="data")
    num_workers: int = _setting(2, "DataLoader worker processes per process", schema="data")
    lightning_frames: str = _setting(
        "official",
        "lightning frame k holds [T_k, T_k + 5 min) as SEVIR grids it (official) or the 5 "
        "minutes before T_k (causal)",
        schema="data",
    )
    window_sampling: str = _setting(
        "fixed",
        "training windows: the windows table's (fixed) or one per event per epoch with a "
        "seeded random start, validating on each event's frame-0 window (random)",
        schema="split",
    )

    #: Settings a resumed run must share with its checkpoint (the others may change).
    #: A key a checkpoint does not record (written before the key existed) is not compared.
    RESUME_KEYS: ClassVar[tuple[str, ...]] = (
        "batch_size",
        "lr",
        "weight_decay",
        "grad_clip",
        "seed",
        "max_steps_per_epoch",
        "scheduler_factor",
        "scheduler_patience",
        "image_size",
        "augment",
        "lightning_frames",
        "window_sampling",
    )
    #: Old names of settings, as earlier checkpoints recorded them.
    RENAMED: ClassVar[dict[str, str]] = {
        "lr_factor": "scheduler_factor",
        "lr_patience": "scheduler_patience",
    }

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
            "scheduler_factor": 0 < self.scheduler_factor < 1,
            "scheduler_patience": self.scheduler_patience >= 0,
            "image_size": self.image_size >= 16,
            "num_workers": self.num_workers >= 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"{k}={getattr(self, k)!r}" for k in bad)
            raise StormFusionError(f"invalid training settings: {values}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionary (stored in checkpoints)."""
        return asdict(self)

    @classmethod
    def saved(cls, stored: Mapping[str, Any]) -> dict[str, Any]:
        """A checkpoint's recorded settings under today's names."""
        return {cls.RENAMED.get(k, k): v for k, v in stored.items()}


def config_fields() -> tuple[dataclasses.Field[Any], ...]:
    """The settings, in declaration order."""
    return dataclasses.fields(TrainingConfig)


def _flag(f: dataclasses.Field[Any]) -> str:
    name = f.name.replace("_", "-")
    return f"--no-{name}" if f.default is True else f"--{name}"


def _value_type(f: dataclasses.Field[Any]) -> type:
    kind = str(f.type).split("|")[0].strip()
    return {"int": int, "float": float, "str": str}[kind]


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per setting, with the dataclass's default and help text."""
    for f in config_fields():
        text = str(f.metadata["help"])
        if f.default is True:
            parser.add_argument(_flag(f), dest=f.name, action="store_false", help=f"no {text}")
        else:
            parser.add_argument(
                _flag(f),
                dest=f.name,
                type=_value_type(f),
                default=f.default,
                help=f"{text} (default: {f.default})",
            )


def config_from_args(args: argparse.Namespace) -> TrainingConfig:
    """The settings parsed by the options :func:`add_config_arguments` added."""
    return TrainingConfig(**{f.name: getattr(args, f.name) for f in config_fields()})


def config_argv(values: Mapping[str, Any]) -> list[str]:
    """Command-line options for the given settings (absent or None: the default).

    Keys that are not settings are ignored (the workflow passes whole config sections).
    """
    argv: list[str] = []
    for f in config_fields():
        value = values.get(f.name)
        if value is None:
            continue
        if isinstance(f.default, bool):
            if not value:
                argv.append(_flag(f))
        else:
            argv += [_flag(f), str(value)]
    return argv
