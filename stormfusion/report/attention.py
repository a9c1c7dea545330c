"""The transformer-attention figure the seed planned and never built.

``transformer_attention``: over the last VIL input frame, the SGT transformer's last-layer
attention from the patches that hold storm cells (``explain_attention()``), drawn beside the
GNN-attention figure (``storm_graph``) of the same window.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from stormfusion.report.style import save_figure, vil_colormap

#: File name (without extension) of the figure.
NAME = "transformer_attention"


def transformer_attention(
    background: np.ndarray,
    attention: np.ndarray,
    graph: Mapping[str, Any],
    title: str,
    out_dir: Path,
    prov: Mapping[str, str],
) -> list[Path]:
    """Two panels: the last input VIL with the cells, and the attention map over it.

    ``background`` (H, W) 0..255 VIL, row 0 the south edge; ``attention`` (h_p, w_p) the
    patch-grid attention (sums to 1; row 0 the south edge too); ``graph`` one item of
    ``explain()`` (only its ``positions`` (N, 2), (x, y) in [0, 1], are drawn).
    """
    cmap, norm = vil_colormap()
    size_y, size_x = background.shape[-2:]
    attention = np.asarray(attention, dtype=float)
    pos = np.asarray(graph["positions"], dtype=float).reshape(-1, 2) * [size_x, size_y] - 0.5
    fig = Figure(figsize=(10.5, 5.0), layout="constrained")
    left, right = fig.subplots(1, 2)
    extent = (-0.5, size_x - 0.5, -0.5, size_y - 0.5)
    for ax in (left, right):
        ax.imshow(background, cmap=cmap, norm=norm, origin="lower", interpolation="nearest")
    left.set_title("last input frame (VIL) and storm cells", fontsize=9)
    shown = right.imshow(
        attention * attention.size,  # 1 = uniform attention
        cmap="magma",
        origin="lower",
        extent=extent,
        alpha=0.65,
        interpolation="nearest",
    )
    fig.colorbar(shown, ax=right, shrink=0.75, label="attention x patches (1 = uniform)")
    right.set_title("transformer attention from the cells' patches (last block)", fontsize=9)
    for ax in (left, right):
        if pos.shape[0]:
            ax.scatter(pos[:, 0], pos[:, 1], s=30, facecolors="none", edgecolors="cyan", zorder=3)
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, out_dir, NAME, prov)
