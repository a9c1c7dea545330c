"""SEVIR's Lambert azimuthal equal-area projection (spherical), without pyproj.

The catalog's ``proj`` string is ``+proj=laea +lat_0=38 +lon_0=-98 +a=6370997 +ellps=sphere``:
on a sphere the forward and inverse maps have closed forms (Snyder, "Map Projections: A
Working Manual", USGS PP 1395, eqs. 24-2 .. 24-4 and 20-14 .. 20-18), used here to place the
synthetic twin's patches and flashes and to give the catalog plausible corner coordinates.
"""

from __future__ import annotations

from typing import Final

import numpy as np

#: Sphere radius of the SEVIR projection, metres.
EARTH_RADIUS_M: Final = 6370997.0
#: Projection centre (degrees).
LAT_0: Final = 38.0
LON_0: Final = -98.0


def laea_forward(lat: np.ndarray | float, lon: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Degrees of latitude and longitude to projection metres ``(x, y)`` (east, north)."""
    phi = np.radians(np.asarray(lat, dtype=np.float64))
    lam = np.radians(np.asarray(lon, dtype=np.float64)) - np.radians(LON_0)
    phi0 = np.radians(LAT_0)
    k = np.sqrt(2.0 / (1.0 + np.sin(phi0) * np.sin(phi) + np.cos(phi0) * np.cos(phi) * np.cos(lam)))
    x = EARTH_RADIUS_M * k * np.cos(phi) * np.sin(lam)
    y = EARTH_RADIUS_M * k * (np.cos(phi0) * np.sin(phi) - np.sin(phi0) * np.cos(phi) * np.cos(lam))
    return x, y


def laea_inverse(x: np.ndarray | float, y: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Projection metres ``(x, y)`` to degrees ``(lat, lon)``."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    phi0 = np.radians(LAT_0)
    rho = np.hypot(x, y)
    c = 2.0 * np.arcsin(np.clip(rho / (2.0 * EARTH_RADIUS_M), -1.0, 1.0))
    safe_rho = np.where(rho == 0.0, 1.0, rho)
    phi = np.arcsin(
        np.clip(np.cos(c) * np.sin(phi0) + y * np.sin(c) * np.cos(phi0) / safe_rho, -1.0, 1.0)
    )
    lam = np.arctan2(x * np.sin(c), rho * np.cos(phi0) * np.cos(c) - y * np.sin(phi0) * np.sin(c))
    phi = np.where(rho == 0.0, phi0, phi)
    lam = np.where(rho == 0.0, 0.0, lam)
    return np.degrees(phi), np.degrees(lam) + LON_0
