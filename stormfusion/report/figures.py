"""The paper figures (PNG and PDF, Agg backend, provenance in the footer and metadata).

- ``csi_lead``: CSI against lead time, one panel per threshold, one line per run;
- ``performance_diagram``: POD against success ratio with CSI contours and bias lines
  (Roebber 2009), one marker per (run, threshold), counts pooled over leads;
- ``panels_<event>``: inputs, truth and every run's forecast for one window, VIL colours;
- ``storm_graph``: the SGT's storm cells and GNN attention edges over the last VIL input;
- ``training_curves``: training and validation loss against epoch for the trained runs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from stormfusion.data.sevir import VIL_MAX
from stormfusion.report.stats import RunStats
from stormfusion.report.style import save_figure, vil_colorbar, vil_colormap

logger = logging.getLogger(__name__)

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def run_colours(runs: Sequence[str]) -> dict[str, Any]:
    """One colour per run, from the order of all configured runs: the same in every figure."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(runs) <= 10 else "tab20"]
    return {run: cmap(i % cmap.N) for i, run in enumerate(runs)}


def csi_vs_lead(
    stats: Mapping[str, RunStats],
    labels: Sequence[str],
    lead_times: Sequence[int],
    out_dir: Path,
    prov: Mapping[str, str],
) -> list[Path]:
    """CSI against lead time for every threshold (one panel each) and run."""
    n = len(labels)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(4.0 * cols, 3.2 * rows + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, sharex=True, squeeze=False)).ravel()
    colours = run_colours(list(stats))
    for k, label in enumerate(labels):
        ax = axes[k]
        for name, s in stats.items():
            style = "--" if s.ablation_of else "-"
            csi = s.categorical.by_lead["csi"][k]
            ax.plot(lead_times, csi, style, marker="o", ms=3, color=colours[name], label=name)
        ax.set_title(f"CSI, VIL >= {label}")
        ax.set_ylim(0.0, 1.0)
        ax.grid(alpha=0.3)
        ax.set_xlabel("lead time (min)")
        ax.set_ylabel("CSI")
    for ax in axes[n:]:
        ax.set_visible(False)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside right center", fontsize=8)
    paths = save_figure(fig, out_dir, "csi_lead", prov)
    return paths


def performance_diagram(
    stats: Mapping[str, RunStats],
    labels: Sequence[str],
    out_dir: Path,
    prov: Mapping[str, str],
) -> list[Path]:
    """POD against success ratio; CSI contours and frequency-bias lines in the background."""
    fig = Figure(figsize=(8.4, 6.2), layout="constrained")
    ax = fig.subplots()
    sr, pod_grid = np.meshgrid(np.linspace(0.001, 1, 200), np.linspace(0.001, 1, 200))
    csi_grid = 1.0 / (1.0 / sr + 1.0 / pod_grid - 1.0)
    filled = ax.contourf(
        sr, pod_grid, csi_grid, levels=np.linspace(0, 1, 11), cmap="Blues", alpha=0.6
    )
    fig.colorbar(filled, ax=ax, label="CSI")
    for b in (0.3, 0.5, 0.8, 1.0, 1.3, 2.0, 3.0, 5.0):
        x = np.linspace(0.001, 1, 100)
        y = b * x
        keep = y <= 1.0
        ax.plot(x[keep], y[keep], ":", color="0.35", lw=0.8)
        xe, ye = (1.0, b) if b <= 1.0 else (1.0 / b, 1.0)
        ax.annotate(
            f"{b:g}", (xe, ye), fontsize=7, color="0.3", xytext=(2, 2), textcoords="offset points"
        )
    colours = run_colours(list(stats))
    for name, s in stats.items():
        sucr, pod = s.categorical.overall["sucr"], s.categorical.overall["pod"]
        for k in range(len(labels)):
            if np.isfinite(sucr[k]) and np.isfinite(pod[k]):
                ax.plot(
                    sucr[k],
                    pod[k],
                    _MARKERS[k % len(_MARKERS)],
                    color=colours[name],
                    mec="k",
                    mew=0.4,
                    ms=7,
                    label=name if k == 0 else None,
                )
    for k, label in enumerate(labels):
        ax.plot([], [], _MARKERS[k % len(_MARKERS)], color="0.6", mec="k", label=f"VIL >= {label}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("success ratio (1 - FAR)")
    ax.set_ylabel("probability of detection")
    ax.set_title(
        "Performance diagram\n(counts pooled over lead times; dotted: frequency bias)", pad=14
    )
    # outside the axes, so that no point is hidden behind it
    fig.legend(*ax.get_legend_handles_labels(), fontsize=7, loc="outside right upper")
    return save_figure(fig, out_dir, "performance_diagram", prov)


def training_curves(
    curves: Mapping[str, pd.DataFrame],
    runs: Sequence[str],
    out_dir: Path,
    prov: Mapping[str, str],
) -> list[Path]:
    """Training (left) and validation (right) loss against epoch for every trained run
    (colours by position in ``runs``, all configured runs)."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    colours = run_colours(runs)
    for name, table in curves.items():
        for ax, column in zip(axes, ("train_loss", "val_loss"), strict=True):
            if column in table.columns and table[column].notna().any():
                ax.plot(
                    table["epoch"], table[column], marker="o", ms=3, color=colours[name], label=name
                )
    for ax, title in zip(axes, ("training loss", "validation loss"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        values = [line.get_ydata() for line in ax.get_lines()]
        if values and all(np.all(np.asarray(v, dtype=float) > 0) for v in values):
            ax.set_yscale("log")
    axes[0].set_ylabel("loss (each model's own objective)")
    if curves:
        axes[1].legend(fontsize=8)
    return save_figure(fig, out_dir, "training_curves", prov)


def forecast_panel(
    name: str,
    title: str,
    inputs: np.ndarray,
    truth: np.ndarray,
    forecasts: Mapping[str, np.ndarray],
    lead_times: Sequence[int],
    out_dir: Path,
    prov: Mapping[str, str],
    max_columns: int = 6,
) -> list[Path]:
    """One window: the last input frames, the truth and each run's forecast, VIL colours.

    ``inputs`` (T_in, H, W), ``truth`` and each forecast (T_out, H, W), 0..255 VIL.
    """
    cmap, norm = vil_colormap()
    n_out = truth.shape[0]
    leads = np.unique(np.linspace(0, n_out - 1, min(max_columns, n_out)).round().astype(int))
    cols = len(leads)
    shown_inputs = inputs[-cols:]
    rows = [
        (
            "inputs",
            shown_inputs,
            [f"t = {-5 * (len(shown_inputs) - 1 - i)} min" for i in range(len(shown_inputs))],
        )
    ]
    rows.append(("truth", truth[leads], [f"+{lead_times[j]} min" for j in leads]))
    rows += [
        (run, f[leads], [f"+{lead_times[j]} min" for j in leads]) for run, f in forecasts.items()
    ]
    # a regular grid: fixed margins are as good as a layout engine here, and much faster
    width, height = 1.7 * cols + 2.1, 1.8 * len(rows) + 1.1
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(
        left=0.5 / width,
        right=1.0 - 1.7 / width,
        bottom=0.4 / height,
        top=1.0 - 0.75 / height,
        wspace=0.06,
        hspace=0.25,
    )
    axes = fig.subplots(len(rows), cols, squeeze=False)
    image = None
    for r, (label, frames, titles) in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.set(xticks=[], yticks=[], visible=c < len(frames))
            if c >= len(frames):
                continue
            image = ax.imshow(
                frames[c], cmap=cmap, norm=norm, origin="lower", interpolation="nearest"
            )
            ax.set_title(titles[c], fontsize=7)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    if image is not None:
        vil_colorbar(fig, image, fig.add_axes((1.0 - 0.95 / width, 0.2, 0.12 / width, 0.6)))
    fig.suptitle(title, fontsize=9, y=1.0 - 0.15 / height, va="top")
    return save_figure(fig, out_dir, name, prov)


def cell_pixels(positions: Any, size: int) -> np.ndarray:
    """Cell positions ``(N, 2)`` (x, y) in [0, 1], pixel-centre convention (pixel ``i`` of
    any grid spans [i / n, (i + 1) / n)), as (column, row) image coordinates of a
    ``size``-pixel image, where pixel ``i``'s centre is at ``i`` (as ``imshow`` draws)."""
    return np.asarray(positions, dtype=float).reshape(-1, 2) * size - 0.5


def storm_graph(
    background: np.ndarray,
    graph: Mapping[str, Any],
    title: str,
    out_dir: Path,
    prov: Mapping[str, str],
) -> list[Path]:
    """Storm cells (nodes, coloured by peak VIL) and GNN attention edges over VIL.

    ``background`` (H, W) 0..255 VIL; ``graph`` one item of ``explain()``: ``positions``
    (N, 2) in [0, 1] as (x, y) with y northwards, ``edge_index`` (2, E), ``attention`` (E,),
    ``intensity`` (N,).
    """
    cmap, norm = vil_colormap()
    size = background.shape[-1]
    pos = cell_pixels(graph["positions"], size)
    edges = np.asarray(graph["edge_index"], dtype=int).reshape(2, -1)
    attention = np.asarray(graph["attention"], dtype=float).ravel()
    intensity = np.asarray(graph["intensity"], dtype=float).ravel()
    fig = Figure(figsize=(8.0, 5.6), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(background, cmap=cmap, norm=norm, origin="lower", interpolation="nearest")
    vil_colorbar(fig, image, ax=ax)
    if edges.shape[1]:
        segments = np.stack([pos[edges[0]], pos[edges[1]]], axis=1)
        span = float(np.ptp(attention)) if attention.size else 0.0
        weight = (attention - attention.min()) / span if span > 0 else np.ones_like(attention)
        lines = LineCollection(
            list(segments), cmap="plasma", linewidths=0.5 + 2.5 * weight, alpha=0.85
        )
        lines.set_array(attention)
        ax.add_collection(lines)
        fig.colorbar(lines, ax=ax, shrink=0.7, label="GNN attention (last layer, mean of heads)")
    if pos.shape[0]:
        ax.scatter(
            pos[:, 0],
            pos[:, 1],
            c=intensity,
            cmap="Greys",
            vmin=0,
            vmax=VIL_MAX,
            s=30,
            edgecolors="cyan",
            linewidths=0.8,
            zorder=3,
        )
    ax.set_xlim(-0.5, size - 0.5)
    ax.set_ylim(-0.5, size - 0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    return save_figure(fig, out_dir, "storm_graph", prov)
