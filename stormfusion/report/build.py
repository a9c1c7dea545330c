"""The ``report`` step: every table and figure of the paper from the scored runs.

Reads ``RESULTS/scores/RUN.{json,counts.npz}`` (all runs), ``RESULTS/forecasts/RUN.zarr``
(forecast panels), ``RESULTS/models/RUN/metrics.csv`` (training curves of trained runs) and
``RESULTS/models/<sgt run>/best.pt`` (storm-cell graph), and writes

- ``RESULTS/tables/{main,ablations,per_lead}.{csv,md,tex}`` and, only when the protocol is
  the published one on the real archive, ``RESULTS/tables/reference.*``;
- ``RESULTS/tables/report.json``: provenance, bootstrap settings, what was left out and why;
- ``RESULTS/figures/*.{png,pdf}`` (the directory is replaced whole).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stormfusion.data.event_index import read_events_json
from stormfusion.data.splits import read_windows
from stormfusion.errors import StormFusionError
from stormfusion.io import atomic_path, remove_path, write_json_atomic
from stormfusion.provenance import provenance
from stormfusion.report import attention, figures
from stormfusion.report.inputs import (
    RunScores,
    RunSpec,
    check_comparable,
    load_scores,
    parse_runs,
    read_metrics,
)
from stormfusion.report.reference import Protocol, not_comparable, reference_table
from stormfusion.report.stats import RunStats, compute_stats
from stormfusion.report.tables import (
    Table,
    ablation_table,
    main_table,
    per_lead_table,
    threshold_label,
    write_table,
)
from stormfusion.verification.scoring import open_forecast

logger = logging.getLogger(__name__)

#: Threshold whose exceedances rank events for the forecast panels (heavy cores).
PANEL_THRESHOLD = 133.0
#: Model name whose explain() draws the storm-cell graph.
GRAPH_MODEL = "sgt"
SYNTHETIC_MANIFEST = "synthetic_manifest.json"
#: What the data are, by ``Protocol.real_data``: in every caption, footer and the report.
DATA_LABELS: dict[bool | None, str] = {
    True: "real SEVIR archive",
    False: "synthetic twin of SEVIR (tests the pipeline, not the models)",
    None: "data source unknown",
}


def label_data(table: Table, real: bool | None) -> Table:
    """The table with its data source in the title and a note."""
    short = "synthetic twin" if real is False else DATA_LABELS[real]
    return replace(
        table, title=f"{table.title} ({short})", notes=(*table.notes, f"Data: {DATA_LABELS[real]}.")
    )


@dataclass(frozen=True)
class ReportOptions:
    """The report's inputs (the CLI's options)."""

    runs: str
    results: Path
    zarr_dir: Path
    windows: Path
    events_meta: Path
    config_hash: str
    panel_events: int = 2
    bootstrap: int = 1000
    seed: int = 0


def _check_fingerprints(scores: Mapping[str, RunScores], fingerprint: str, meta: Path) -> None:
    for s in scores.values():
        theirs = s.summary.get("data_fingerprint")
        if theirs is None:
            logger.warning("scores of %s carry no data fingerprint", s.name)
        elif theirs != fingerprint:
            raise StormFusionError(
                f"scores of run {s.name!r} are from data {theirs}, but {meta} is data "
                f"{fingerprint}: rescore the run"
            )


def _real_data(meta: Mapping[str, Any]) -> bool | None:
    root = meta.get("data_root")
    if not root or not Path(root).is_dir():
        return None
    return not (Path(root) / SYNTHETIC_MANIFEST).exists()


def _protocol(options: ReportOptions, meta: Mapping[str, Any], image_size: int) -> Protocol:
    table = read_windows(options.windows)
    return Protocol(
        input_frames=int(table["input_frames"].iloc[0]),
        output_frames=int(table["output_frames"].iloc[0]),
        image_size=image_size,
        real_data=_real_data(meta),
    )


# ----------------------------------------------------------------------------- panels


@dataclass(frozen=True)
class PanelWindow:
    event_id: str
    window_start: int
    sample: int  # index in the forecast stores (windows-table order of the split)


def _vil_dataset(options: ReportOptions, split: str, size: int, modalities: tuple[str, ...]) -> Any:
    from stormfusion.data.dataset import SevirWindowDataset

    return SevirWindowDataset(
        zarr_dir=options.zarr_dir,
        windows=options.windows,
        split=split,
        modalities=modalities,
        image_size=size,
    )


def choose_panels(scores: RunScores, forecast: Any, dataset: Any, n: int) -> list[PanelWindow]:
    """The ``n`` events with most truth pixels >= 133, each at its most intense window."""
    if n <= 0:
        return []
    k = int(np.searchsorted(scores.thresholds, PANEL_THRESHOLD))
    k = min(k, len(scores.thresholds) - 1)
    observed = scores.counts[:, k, :, 0] + scores.counts[:, k, :, 1]  # hits + misses
    order = np.argsort(-observed.sum(axis=1), kind="stable")[:n]
    ids = [str(e) for e in forecast["event_id"].values]
    starts = [int(s) for s in forecast["window_start"].values]
    chosen = []
    for idx in order:
        event = scores.event_ids[int(idx)]
        samples = [i for i, e in enumerate(ids) if e == event]
        if not samples:
            continue
        best = max(samples, key=lambda i: float((dataset[i]["target"] >= PANEL_THRESHOLD).sum()))
        chosen.append(PanelWindow(event, starts[best], best))
    return chosen


def _panel_figures(
    options: ReportOptions,
    scores: Mapping[str, RunScores],
    stores: Mapping[str, Any],
    out_dir: Path,
    prov: Mapping[str, str],
) -> list[PanelWindow]:
    first = next(iter(scores))
    store = stores[first]
    split = str(store.attrs["split"])
    size = int(store.sizes["y"])
    dataset = _vil_dataset(options, split, size, ("vil",))
    if len(dataset) != store.sizes["sample"]:
        raise StormFusionError(
            f"{options.windows}: split {split!r} has {len(dataset)} windows but the forecasts "
            f"of {first!r} have {store.sizes['sample']}"
        )
    panels = choose_panels(scores[first], store, dataset, options.panel_events)
    lead_times = [int(v) for v in scores[first].lead_times]
    for p in panels:
        item = dataset[p.sample]
        if (str(item["event_id"]), int(item["window_start"])) != (p.event_id, p.window_start):
            raise StormFusionError(
                f"{options.windows}: window {p.sample} of split {split!r} is not event "
                f"{p.event_id} start {p.window_start} as in the forecast store"
            )
        forecasts = {}
        for run, ds in stores.items():
            ids = ds["event_id"].values
            starts = ds["window_start"].values
            hit = np.flatnonzero((ids == p.event_id) & (starts == p.window_start))
            if hit.size:
                forecasts[run] = np.asarray(ds["forecast"][int(hit[0])].values)
        figures.forecast_panel(
            f"panels_{p.event_id}",
            f"event {p.event_id}, window start frame {p.window_start} ({split} split)",
            item["inputs"]["vil"].numpy(),
            item["target"].numpy(),
            forecasts,
            lead_times,
            out_dir,
            prov,
        )
    return panels


def _graph_figure(
    options: ReportOptions,
    specs: Mapping[str, RunSpec],
    stores: Mapping[str, Any],
    panel: PanelWindow | None,
    out_dir: Path,
    prov: Mapping[str, str],
) -> str:
    """Draw the storm-cell graph; returns why it was skipped ("" when drawn)."""
    run = next(
        (s.name for s in specs.values() if s.model == GRAPH_MODEL and s.ablation_of is None), None
    )
    if run is None:
        return f"no {GRAPH_MODEL} run is configured"
    ckpt = options.results / "models" / run / "best.pt"
    if not ckpt.is_file():
        return f"{ckpt} does not exist"
    if panel is None:
        return "no panel window was chosen (panel_events = 0)"
    from stormfusion.training.checkpoint import load_model

    model = load_model(ckpt)
    explain = getattr(model, "explain", None)
    if explain is None:
        return f"model {type(model).__name__} has no explain()"
    store = stores[run]
    split = str(store.attrs["split"])
    size = int(store.sizes["y"])
    data = _vil_dataset(options, split, size, tuple(model.modalities))
    raw = _vil_dataset(options, split, size, ("vil",))
    item = data[panel.sample]
    inputs = {m: x[None] for m, x in item["inputs"].items()}
    with torch.no_grad():
        graph = explain(inputs, item["mask"][None])[0]
    background = raw[panel.sample]["inputs"]["vil"][-1].numpy()
    title = (
        f"{run}: storm cells and GNN attention over the last input frame\n"
        f"event {panel.event_id}, window start {panel.window_start}"
    )
    figures.storm_graph(background, graph, title, out_dir, prov)
    explain_attention = getattr(model, "explain_attention", None)
    if explain_attention is not None and getattr(model, "transformer", None) is not None:
        maps = explain_attention(inputs, item["mask"][None])
        title = title.replace("storm cells and GNN attention", "transformer attention")
        attention.transformer_attention(background, maps[0].numpy(), graph, title, out_dir, prov)
    return ""


# ----------------------------------------------------------------------------- main


def _write_tables(
    options: ReportOptions,
    stats: Mapping[str, RunStats],
    ref: str | None,
    protocol: Protocol,
    prov: Mapping[str, str],
) -> list[Table]:
    """main, ablations, per_lead (and reference when a published protocol matches)."""
    first = next(iter(stats.values()))
    labels = [threshold_label(t) for t in first.categorical.thresholds]
    lead_times = [int(v) for v in first.summary["lead_times"]]
    tables_dir = options.results / "tables"
    tables = [
        main_table(stats, labels, ref, prov, options.bootstrap, options.seed),
        ablation_table(stats, labels, prov, options.bootstrap, options.seed),
        per_lead_table(stats, labels, lead_times, prov),
    ]
    matches, why_not = protocol.matches()
    if matches:
        tables.append(reference_table(stats, labels, prov, protocol))
    else:
        logger.info("published reference table left out: %s", why_not)
        for ext in ("csv", "md", "tex"):
            remove_path(tables_dir / f"reference.{ext}")
    tables = [label_data(t, protocol.real_data) for t in tables]
    for table in tables:
        write_table(table, tables_dir, prov)
        logger.info("wrote %s/%s.{csv,md,tex}", tables_dir, table.name)
    return tables


def _write_figures(
    options: ReportOptions,
    specs: Mapping[str, RunSpec],
    scores: Mapping[str, RunScores],
    stores: Mapping[str, Any],
    stats: Mapping[str, RunStats],
    prov: Mapping[str, str],
) -> tuple[list[str], dict[str, str], list[PanelWindow]]:
    """Every figure into RESULTS/figures (replaced whole); (files, skipped, panels)."""
    first = next(iter(stats.values()))
    labels = [threshold_label(t) for t in first.categorical.thresholds]
    lead_times = [int(v) for v in first.summary["lead_times"]]
    skipped: dict[str, str] = {}
    with atomic_path(options.results / "figures") as fig_dir:
        fig_dir.mkdir(parents=True)
        figures.csi_vs_lead(stats, labels, lead_times, fig_dir, prov)
        figures.performance_diagram(stats, labels, fig_dir, prov)
        curves = {}
        for spec in specs.values():
            if spec.trainable:
                metrics = read_metrics(options.results / "models" / spec.name / "metrics.csv")
                if metrics is not None:
                    curves[spec.name] = metrics
        if curves:
            figures.training_curves(curves, list(specs), fig_dir, prov)
        else:
            skipped["training_curves"] = "no trained run has metrics.csv"
        panels = _panel_figures(options, scores, stores, fig_dir, prov)
        reason = _graph_figure(options, specs, stores, panels[0] if panels else None, fig_dir, prov)
        if reason:
            skipped["storm_graph"] = reason
        written = sorted(p.name for p in fig_dir.iterdir())
    for name, reason in skipped.items():
        logger.info("figure %s left out: %s", name, reason)
    return written, skipped, panels


def _reference_run(stats: Mapping[str, RunStats]) -> str | None:
    return next(
        (
            s.name
            for s in stats.values()
            if s.vs_reference is not None and s.model == "persistence" and s.ablation_of is None
        ),
        None,
    )


def make_report(options: ReportOptions) -> dict[str, Any]:
    """Write every table and figure; return the report record (also tables/report.json)."""
    if options.bootstrap < 0 or options.panel_events < 0:
        raise StormFusionError("--bootstrap and --panel-events must be >= 0")
    specs = parse_runs(options.runs)
    meta = read_events_json(options.events_meta)
    fingerprint = str(meta["data_fingerprint"])
    scores = {name: load_scores(options.results, spec) for name, spec in specs.items()}
    _check_fingerprints(scores, fingerprint, options.events_meta)
    check_comparable(scores)
    stats: dict[str, RunStats] = compute_stats(scores, options.bootstrap, options.seed)
    ref = _reference_run(stats)
    stores = {name: open_forecast(options.results / "forecasts" / f"{name}.zarr") for name in specs}
    protocol = _protocol(options, meta, int(next(iter(stores.values())).sizes["y"]))
    prov = provenance(config_hash=options.config_hash, data_fingerprint=fingerprint)
    prov["data_source"] = DATA_LABELS[protocol.real_data]
    tables = _write_tables(options, stats, ref, protocol, prov)
    written, skipped, panels = _write_figures(options, specs, scores, stores, stats, prov)
    matches, why_not = protocol.matches()
    record = {
        "provenance": prov,
        "runs": list(specs),
        "bootstrap": {
            "resamples": options.bootstrap,
            "seed": options.seed,
            "level": 0.95,
            "unit": "event",
            "n_events": len(next(iter(scores.values())).event_ids),
        },
        "reference_run": ref,
        "reference_table": matches,
        "reference_reason": why_not or None,
        "published_not_comparable": not_comparable(protocol),
        "data": DATA_LABELS[protocol.real_data],
        "protocol": next(iter(stats.values())).summary.get("protocol"),
        "panels": [p.__dict__ for p in panels],
        "figures": written,
        "skipped_figures": skipped,
        "tables": [t.name for t in tables],
    }
    write_json_atomic(options.results / "tables" / "report.json", record)
    logger.info("report: %d tables, %d figure files", len(tables), len(written))
    return record
