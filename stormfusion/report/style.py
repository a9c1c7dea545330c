"""Shared look of the figures: the SEVIR VIL colour scale and the provenance footer.

The VIL colour scale is the SEVIR reference one: levels 0, 16, 31, 59, 74, 100, 133, 160,
181, 219 and 255 on the digital VIL scale with one colour per interval: grey below 16,
greens up to 100, yellow from 100, orange from 133, red-orange from 160, dark red from 181
and magenta from 219 (black below 0, never reached). Colour bars carry a second axis in
kg/m^2 (:func:`stormfusion.data.sevir.vil_to_kg_m2`). Images are drawn with
``origin="lower"`` because row 0 of a SEVIR image is its southern edge.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import BoundaryNorm, Colormap, ListedColormap
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine

from stormfusion.data.sevir import VIL_MAX, vil_to_kg_m2
from stormfusion.io import atomic_path

#: Boundaries of the SEVIR VIL colour scale (0..255 digital VIL).
VIL_LEVELS: tuple[float, ...] = (0, 16, 31, 59, 74, 100, 133, 160, 181, 219, VIL_MAX)
#: Colour below the first level (never reached), then the colours of the ten intervals;
#: the last one (magenta, 219 and up) also colours 255.
VIL_COLOURS: tuple[tuple[float, float, float], ...] = (
    (0.0, 0.0, 0.0),
    (0.30196, 0.30196, 0.30196),
    (0.15686, 0.74510, 0.15686),
    (0.09804, 0.58824, 0.09804),
    (0.03922, 0.41176, 0.03922),
    (0.03922, 0.29412, 0.03922),
    (0.96078, 0.96078, 0.0),
    (0.92941, 0.67451, 0.0),
    (0.94118, 0.43137, 0.0),
    (0.62745, 0.0, 0.0),
    (0.90588, 0.0, 1.0),
)


def vil_colormap() -> tuple[Colormap, BoundaryNorm]:
    """The SEVIR VIL colormap and its norm, for ``imshow(..., cmap=cmap, norm=norm)``."""
    cmap = ListedColormap(list(VIL_COLOURS[1:]), name="sevir_vil").with_extremes(
        under=VIL_COLOURS[0], bad=VIL_COLOURS[0], over=VIL_COLOURS[-1]
    )
    norm = BoundaryNorm(list(VIL_LEVELS), cmap.N)
    return cmap, norm


def vil_colorbar(fig: Figure, image: Any, cax: Axes | None = None, ax: Axes | None = None) -> None:
    """A VIL colour bar (in ``cax``, or beside ``ax``) with digital levels on the right and
    kg/m^2 on the left."""
    # proportional spacing keeps the bar linear in digital VIL, so both axes agree
    bar = fig.colorbar(
        image,
        cax=cax,
        ax=ax,
        label="VIL (digital, 0..255)",
        extend="min",
        spacing="proportional",
        shrink=1.0 if cax is not None else 0.7,
    )
    bar.set_ticks(list(VIL_LEVELS))
    second = bar.ax.secondary_yaxis("left")
    levels = np.asarray(VIL_LEVELS[:-1], dtype=np.float64)
    second.set_yticks(list(levels))
    second.set_yticklabels([f"{v:.3g}" for v in vil_to_kg_m2(levels)], fontsize=6)
    second.set_ylabel("VIL (kg/m$^2$)", fontsize=7)
    bar.ax.tick_params(labelsize=6)


def provenance_line(prov: Mapping[str, str]) -> str:
    """One line naming the config hash, data fingerprint, package version, git commit and,
    when known, the data source (e.g. the synthetic twin)."""
    line = (
        f"config {prov.get('config_hash', 'unknown')}"
        f" | data {prov.get('data_fingerprint', 'unknown')}"
        f" | stormfusion {prov.get('package_version', 'unknown')}"
        f" | git {str(prov.get('git_commit', 'unknown'))[:12]}"
    )
    source = prov.get("data_source")
    return f"{line} | {source}" if source else line


def save_figure(fig: Figure, out_dir: Path, name: str, prov: Mapping[str, str]) -> list[Path]:
    """Write ``name``.png and ``name``.pdf with the provenance in the footer and metadata."""
    engine = fig.get_layout_engine()
    if isinstance(engine, ConstrainedLayoutEngine):
        footer = 0.25 / fig.get_figheight()  # a quarter inch for the provenance line
        engine.set(rect=(0.0, footer, 1.0, 1.0 - footer))
    fig.text(0.5, 0.004, provenance_line(prov), ha="center", va="bottom", fontsize=6, color="0.4")
    text = json.dumps(dict(prov), sort_keys=True)
    paths = []
    for ext, meta in (
        ("png", {"Description": text, "Software": "stormfusion"}),
        ("pdf", {"Subject": text, "Creator": "stormfusion"}),
    ):
        path = out_dir / f"{name}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=120, metadata=meta)
        paths.append(path)
        fig.set_layout_engine("none")  # the layout is settled: the PDF reuses it
    return paths
