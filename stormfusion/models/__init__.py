"""Forecast models behind one registry.

>>> from stormfusion.models import get_model, list_models
>>> model = get_model("persistence", input_frames=12, output_frames=6)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

from stormfusion.models.base import ForecastModel
from stormfusion.registry import Registry

#: name -> model class. Modules register themselves on import (see ``_MODULES``).
MODELS: Registry[type[ForecastModel]] = Registry("model")

#: Modules that define registered models; imported on first use of the registry.
_MODULES: tuple[str, ...] = (
    "stormfusion.models.persistence",
    "stormfusion.models.optical_flow",
    "stormfusion.models.unet2d",
    "stormfusion.models.convlstm",
    "stormfusion.models.sgt.seed.model",
    "stormfusion.models.sgt.advect.model",
    "stormfusion.models.unet2d_stage4",
)


def _load_all() -> None:
    for module in _MODULES:
        importlib.import_module(module)


def get_model_class(name: str) -> type[ForecastModel]:
    """The class registered as ``name`` (unknown names list the valid ones)."""
    _load_all()
    return MODELS.get(name)


def get_model(name: str, **kwargs: Any) -> ForecastModel:
    """Build the model registered as ``name`` with constructor arguments ``kwargs``."""
    return get_model_class(name)(**kwargs)


def list_models() -> list[str]:
    """Registered model names."""
    _load_all()
    return MODELS.names()


__all__ = ["MODELS", "ForecastModel", "get_model", "get_model_class", "list_models"]
