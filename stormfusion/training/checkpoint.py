"""Checkpoints: what a run needs to resume, to be rebuilt, and to be traced back.

A checkpoint is a plain dictionary saved with :func:`torch.save` and read back with
``torch.load(weights_only=True)``, so it holds only tensors, plain containers and
str/int/float/bool/None:

- ``format``: :data:`CHECKPOINT_FORMAT`;
- ``model_name``, ``model_args``: the registry name and the constructor arguments
  (:func:`load_model` rebuilds the model from them with :func:`get_model`);
- ``config``: the training settings (:class:`stormfusion.training.trainer.TrainingConfig`);
- ``model``, ``optimizer``, ``scheduler``: the state dicts;
- ``rng``: the random number generator states of every rank (tensors);
- ``epoch`` (completed epochs), ``step_in_epoch``, ``global_step``;
- ``partial_epoch``: running sums of an epoch interrupted by a mid-epoch checkpoint;
- ``history``: the rows of ``metrics.csv`` so far; ``best_val_loss``, ``best_epoch``;
- ``best``: in ``latest.pt`` only, the best checkpoint so far (so that ``best.pt`` can be
  rewritten from ``latest.pt`` alone);
- ``data``: ``data_fingerprint``, ``catalog_sha256`` and the ``events`` trained on;
- ``package_version`` and ``provenance``.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from stormfusion.errors import StormFusionError
from stormfusion.io import atomic_path
from stormfusion.models import ForecastModel, get_model

logger = logging.getLogger(__name__)

#: Version of the checkpoint layout; bumped when keys change meaning.
CHECKPOINT_FORMAT = 1

#: Keys every checkpoint has.
REQUIRED_KEYS = ("format", "model_name", "model_args", "config", "model", "epoch", "data")


def plain_args(args: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments as plain JSON values (tuples become lists), keys sorted."""
    try:
        plain: dict[str, Any] = json.loads(json.dumps(args, sort_keys=True))
    except (TypeError, ValueError) as exc:
        raise StormFusionError(
            f"model arguments {args!r} are not plain JSON values: {exc}"
        ) from None
    return plain


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically (a kill never leaves a truncated file)."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint on the CPU with ``weights_only=True`` and check its layout."""
    path = Path(path)
    if not path.is_file():
        raise StormFusionError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StormFusionError(f"checkpoint {path} cannot be read: {first}") from None
    if not isinstance(payload, dict):
        raise StormFusionError(f"checkpoint {path} is not a StormFusion checkpoint (not a dict)")
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise StormFusionError(
            f"checkpoint {path} is not a StormFusion checkpoint: missing keys {missing}"
        )
    if payload["format"] != CHECKPOINT_FORMAT:
        raise StormFusionError(
            f"checkpoint {path} has format {payload['format']}; this version reads "
            f"format {CHECKPOINT_FORMAT}"
        )
    return payload


def check_model_matches(
    payload: dict[str, Any],
    model_name: str,
    model_args: dict[str, Any],
    path: str | os.PathLike[str],
) -> None:
    """Raise a clear error when a checkpoint holds another model or other arguments."""
    if payload["model_name"] != model_name:
        raise StormFusionError(
            f"checkpoint {path} holds model {payload['model_name']!r}, not {model_name!r}"
        )
    saved, wanted = plain_args(payload["model_args"]), plain_args(model_args)
    if saved != wanted:
        keys = sorted(set(saved) | set(wanted))
        diff = ", ".join(
            f"{k}: checkpoint {saved.get(k, '(unset)')!r} vs requested {wanted.get(k, '(unset)')!r}"
            for k in keys
            if saved.get(k, "(unset)") != wanted.get(k, "(unset)")
        )
        raise StormFusionError(
            f"checkpoint {path} was trained with other {model_name} arguments ({diff})"
        )


def build_model_from(payload: dict[str, Any], path: str | os.PathLike[str]) -> ForecastModel:
    """The model a checkpoint describes, with its weights loaded (on the CPU)."""
    args = payload["model_args"]
    try:
        model = get_model(payload["model_name"], **args)
    except (TypeError, ValueError) as exc:
        raise StormFusionError(
            f"checkpoint {path}: model {payload['model_name']!r} cannot be built with "
            f"arguments {args}: {exc}"
        ) from None
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise StormFusionError(
            f"checkpoint {path}: weights do not fit model {payload['model_name']!r} "
            f"with arguments {args}: {first}"
        ) from None
    return model


def load_model(
    path: str | os.PathLike[str],
    *,
    model_name: str | None = None,
    model_args: dict[str, Any] | None = None,
) -> ForecastModel:
    """Rebuild the model saved in checkpoint ``path`` and load its weights (CPU, eval mode).

    When ``model_name`` (and ``model_args``) are given, the checkpoint must hold that model
    with exactly those arguments; otherwise a :class:`StormFusionError` says what differs.
    """
    payload = read_checkpoint(path)
    if model_name is not None:
        check_model_matches(
            payload, model_name, payload["model_args"] if model_args is None else model_args, path
        )
    model = build_model_from(payload, path)
    model.eval()
    return model


def capture_rng_state() -> dict[str, Any]:
    """The state of every random number generator this process uses, as tensors and ints."""
    np_state = cast(tuple[Any, ...], np.random.get_state(legacy=True))
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_has_gauss": int(np_state[3]),
        "numpy_gauss": float(np_state[4]),
        "python_version": int(py_version),
        "python_internal": torch.tensor(py_internal, dtype=torch.int64),
        "python_gauss": py_gauss,
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back the generator states :func:`capture_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(
        (
            "MT19937",
            state["numpy_keys"].numpy().astype(np.uint32),
            state["numpy_pos"],
            state["numpy_has_gauss"],
            state["numpy_gauss"],
        )
    )
    random.setstate(
        (
            state["python_version"],
            tuple(int(v) for v in state["python_internal"].tolist()),
            state["python_gauss"],
        )
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
