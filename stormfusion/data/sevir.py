"""Facts about the SEVIR archive layout (see ``docs/data.md``).

These constants describe the real files; the synthetic twin writes the same layout from
them, and every reader checks what it reads against them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

#: Frames per event, 5 minutes apart, nominally -120 .. +120 minutes around ``time_utc``.
N_FRAMES: Final = 49
FRAME_MINUTES: Final = 5
#: Nominal minute offsets of the 49 frames.
NOMINAL_OFFSETS: Final = tuple(range(-120, 121, FRAME_MINUTES))

#: Columns of CATALOG.csv, in order.
CATALOG_COLUMNS: Final = (
    "id",
    "file_name",
    "file_index",
    "img_type",
    "time_utc",
    "minute_offsets",
    "episode_id",
    "event_id",
    "event_type",
    "llcrnrlat",
    "llcrnrlon",
    "urcrnrlat",
    "urcrnrlon",
    "proj",
    "size_x",
    "size_y",
    "height_m",
    "width_m",
    "data_min",
    "data_max",
    "pct_missing",
)

#: Patch extent in metres (both axes).
PATCH_METRES: Final = 384_000
#: Lambert azimuthal equal-area projection used by the catalog.
PROJ: Final = "+proj=laea +lat_0=38 +lon_0=-98 +units=m +a=6370997.0 +ellps=sphere"
#: Digital VIL value meaning "missing".
VIL_MISSING: Final = 255
#: Stored value meaning "missing", per modality that has one.
MISSING_VALUES: Final[dict[str, int]] = {"vil": VIL_MISSING}
#: Largest digital VIL value: the 0..255 scale's range (scores' data range, /255 scalings).
VIL_MAX: Final = 255
#: VIL verification thresholds on the 0..255 scale.
VIL_THRESHOLDS: Final = (16, 74, 133, 160, 181, 219)


@dataclass(frozen=True)
class Modality:
    """One SEVIR sensor type as stored in the archive."""

    name: str
    size: int  # pixels per side of the native grid
    dtype: type[np.generic]
    long_name: str
    units: str
    scale_factor: float  # physical = stored * scale_factor (VIL: see vil_to_kg_m2)
    raster: bool  # False: lightning flashes, one (n, 5) dataset per event


MODALITIES: Final[dict[str, Modality]] = {
    "vil": Modality(
        "vil", 384, np.uint8, "vertically integrated liquid (digital VIL)", "1", 1.0, True
    ),
    "ir069": Modality(
        "ir069",
        192,
        np.int16,
        "GOES-16 ABI band 9 (6.9 um) brightness temperature",
        "degC",
        1e-2,
        True,
    ),
    "ir107": Modality(
        "ir107",
        192,
        np.int16,
        "GOES-16 ABI band 13 (10.7 um) brightness temperature",
        "degC",
        1e-2,
        True,
    ),
    "lght": Modality(
        "lght", 48, np.int32, "GLM lightning flash count per frame", "flashes", 1.0, False
    ),
    "vis": Modality(
        "vis", 768, np.int16, "GOES-16 ABI band 2 (0.64 um) reflectance", "1", 1e-4, True
    ),
}

#: The modalities the study uses, in the order models see them.
STUDY_MODALITIES: Final = ("vil", "ir069", "ir107", "lght")


def vil_to_kg_m2(x: np.ndarray) -> np.ndarray:
    """Digital VIL (0..254) to physical VIL in kg/m^2 (255 = missing becomes NaN)."""
    x = np.asarray(x, dtype=np.float64)
    out = np.where(x <= 5, 0.0, np.where(x <= 18, (x - 2.0) / 90.66, np.exp((x - 83.9) / 38.9)))
    return np.where(x == VIL_MISSING, np.nan, out)
