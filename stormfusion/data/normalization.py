"""Input normalisation with the constants published for SEVIR (raw stored units).

``normalized = (raw - offset) / scale``. The loader normalises every modality this way;
models that need physical values back (persistence, optical flow) call :func:`denormalize`.
"""

from __future__ import annotations

from typing import Final, TypeVar

import numpy as np
import torch

from stormfusion.errors import StormFusionError

#: modality -> (offset, scale), from the SEVIR reference models.
SEVIR_NORMALIZATION: Final[dict[str, tuple[float, float]]] = {
    "vil": (33.44, 47.54),
    "ir069": (-3683.58, 1174.68),
    "ir107": (-1552.80, 2562.43),
    "lght": (0.0299, 0.60517),
}

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def _constants(modality: str) -> tuple[float, float]:
    try:
        return SEVIR_NORMALIZATION[modality]
    except KeyError:
        valid = ", ".join(sorted(SEVIR_NORMALIZATION))
        raise StormFusionError(
            f"no normalisation constants for modality {modality!r}; valid: {valid}"
        ) from None


def normalize(modality: str, raw: ArrayT) -> ArrayT:
    """Raw stored units to normalised values."""
    offset, scale = _constants(modality)
    return (raw - offset) / scale


def denormalize(modality: str, x: ArrayT) -> ArrayT:
    """Normalised values back to raw stored units."""
    offset, scale = _constants(modality)
    return x * scale + offset
