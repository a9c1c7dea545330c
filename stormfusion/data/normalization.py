"""Input normalisation with the constants published for SEVIR (raw stored units).

``normalized = (raw - offset) / scale``, per modality. The loader hands models the stored
units (:mod:`stormfusion.data.dataset`); models normalise on their device in
:meth:`stormfusion.models.base.ForecastModel.prepare_inputs`, and models that need physical
values back (persistence, optical flow) read the raw VIL or call :func:`denormalize`.

The constants of each modality are looked up by name in :data:`SEVIR_NORMALIZATION`, a
:class:`stormfusion.registry.Registry` (unknown names list the valid ones).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from stormfusion.registry import Registry


@dataclass(frozen=True)
class Normalization:
    """``(raw - offset) / scale`` for one modality (offset and scale in stored units)."""

    offset: float
    scale: float


#: modality -> its constants, from the SEVIR reference models.
SEVIR_NORMALIZATION: Registry[Normalization] = Registry("normalisation (by modality)")
SEVIR_NORMALIZATION.register("vil")(Normalization(33.44, 47.54))
SEVIR_NORMALIZATION.register("ir069")(Normalization(-3683.58, 1174.68))
SEVIR_NORMALIZATION.register("ir107")(Normalization(-1552.80, 2562.43))
SEVIR_NORMALIZATION.register("lght")(Normalization(0.0299, 0.60517))

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def normalize(modality: str, raw: ArrayT) -> ArrayT:
    """Raw stored units to normalised values."""
    c = SEVIR_NORMALIZATION.get(modality)
    return (raw - c.offset) / c.scale


def denormalize(modality: str, x: ArrayT) -> ArrayT:
    """Normalised values back to raw stored units."""
    c = SEVIR_NORMALIZATION.get(modality)
    return x * c.scale + c.offset
