"""The paper tables: ``main``, ``ablations``, ``per_lead`` (and ``reference``), each written as
CSV (every number, intervals in ``_lo``/``_hi`` columns, provenance columns), Markdown and
LaTeX (formatted, intervals in brackets, footnotes and a provenance line).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from stormfusion.io import write_text_atomic
from stormfusion.report.stats import RunStats
from stormfusion.report.style import provenance_line
from stormfusion.verification.bootstrap import CsiIntervals, Interval
from stormfusion.verification.pooling import Pooling
from stormfusion.verification.protocol import caption

NA = "n/a"
PROVENANCE_COLUMNS = ("config_hash", "data_fingerprint", "package_version", "git_commit")


def threshold_label(t: float) -> str:
    return str(int(t)) if float(t).is_integer() else str(t)


@dataclass(frozen=True)
class Column:
    """A displayed column: header, CSV key, whether it has an interval, number format."""

    header: str
    key: str
    ci: bool = False
    fmt: str = "{:.4f}"


@dataclass(frozen=True)
class Table:
    """A table's data (CSV), its displayed columns (Markdown/LaTeX) and footnotes."""

    name: str
    title: str
    data: pd.DataFrame
    columns: tuple[Column, ...]
    notes: tuple[str, ...]


def _put_interval(row: dict[str, Any], key: str, iv: Interval) -> None:
    row[key], row[f"{key}_lo"], row[f"{key}_hi"] = iv.value, iv.lo, iv.hi


def _put_csi(row: dict[str, Any], prefix: str, ivs: CsiIntervals, labels: Sequence[str]) -> None:
    _put_interval(row, f"{prefix}csi_m", ivs.csi_m)
    for label, iv in zip(labels, ivs.csi, strict=True):
        _put_interval(row, f"{prefix}csi_{label}", iv)


def _common(row: dict[str, Any], s: RunStats) -> None:
    """The scores every table row shows, straight from the verification code's results."""
    cat, cont = s.categorical, s.continuous.overall
    row["csi_m_per_lead"] = cat.csi_m_per_lead
    for name, pooled in s.pooled.items():
        kind, size = Pooling.parse(name).kind, Pooling.parse(name).size
        row[f"csi_m_pool{size}" if kind == "max" else f"csi_m_{kind}pool{size}"] = pooled.csi_m
    for name, value in cat.threshold_mean.items():
        if name != "csi":  # CSI's mean over thresholds is CSI-M
            row[f"{name}_m"] = value
    for name, value in cont.items():
        row[name] = value
    if s.summary.get("lpips") is None:
        row["lpips"] = NA
    row["latency_ms"] = NA if s.latency is None else s.latency * 1e3
    row["n_events"] = s.n_events
    row["architecture"] = s.model


def _with_provenance(
    rows: list[dict[str, Any]], prov: Mapping[str, str], columns: Sequence[Column] = ()
) -> pd.DataFrame:
    for row in rows:
        for k in PROVENANCE_COLUMNS:
            row[k] = prov.get(k, "unknown")
    if not rows:  # keep the header so that readers see the columns
        return pd.DataFrame(columns=[c.key for c in columns] + list(PROVENANCE_COLUMNS))
    return pd.DataFrame(rows)


def _threshold_columns(labels: Sequence[str]) -> list[Column]:
    return [Column(f"CSI-{t}", f"csi_{t}", ci=True) for t in labels]


def _score_columns() -> list[Column]:
    return [
        Column("HSS", "hss_m", fmt="{:.3f}"),
        Column("POD", "pod_m", fmt="{:.3f}"),
        Column("SUCR", "sucr_m", fmt="{:.3f}"),
        Column("BIAS", "bias_m", fmt="{:.3f}"),
        Column("MSE", "mse", fmt="{:.2f}"),
        Column("MAE", "mae", fmt="{:.2f}"),
        Column("SSIM", "ssim"),
        Column("MS-SSIM", "msssim"),
        Column("LPIPS", "lpips"),
        Column("Cons. err.", "conservation", fmt="{:.3f}"),
    ]


def _missing_note(stats: Mapping[str, RunStats], name: str, label: str) -> list[str]:
    absent = [s for s in stats.values() if s.summary.get(name) is None]
    if not absent:
        return []
    why = absent[0].summary.get(f"{name}_reason") or "no frame could be scored (missing truth)"
    return [f"{label} n/a: {why}."]


def _notes(stats: Mapping[str, RunStats], n_boot: int, seed: int) -> list[str]:
    first = next(iter(stats.values()))
    notes = [
        "CSI-M: counts summed over all pixels, samples and lead times, CSI per threshold "
        "(event: VIL >= threshold), mean over the six thresholds (as published); "
        "CSI-M (per lead): CSI per threshold and lead time, averaged over both. "
        "HSS, POD, SUCR, BIAS: the pooled counts, mean over thresholds; MSE, MAE on the "
        "0..255 VIL scale; Cons. err.: |sum forecast - sum truth| / sum truth per frame, "
        "summed over frames; latency: forecast time per sample on the device that ran it.",
        caption(first.summary.get("protocol", {})),
    ]
    excluded = first.summary.get("excluded", {})
    notes.append(
        f"Missing truth: {excluded.get('truth_pixels', 0)} pixels excluded, "
        f"{excluded.get('frames_skipped_by_ssim_msssim_lpips', 0)} frames skipped by SSIM, "
        "MS-SSIM and LPIPS."
    )
    if n_boot > 0:
        notes.append(
            f"Brackets: 95% percentile bootstrap intervals over {first.n_events} events "
            f"({n_boot} resamples, seed {seed}); differences resample the same events "
            "for both runs (paired)."
        )
    else:
        notes.append("No bootstrap intervals (bootstrap = 0).")
    notes += _missing_note(stats, "lpips", "LPIPS") + _missing_note(stats, "msssim", "MS-SSIM")
    return notes


def main_table(
    stats: Mapping[str, RunStats],
    labels: Sequence[str],
    reference: str | None,
    prov: Mapping[str, str],
    n_boot: int,
    seed: int,
) -> Table:
    """One row per model (runs that are no ablation), the reference (persistence) first."""
    rows = []
    order = sorted(stats.values(), key=lambda s: s.name != reference)  # stable otherwise
    for s in order:
        if s.ablation_of is not None:
            continue
        row: dict[str, Any] = {"model": s.name}
        _put_csi(row, "", s.intervals, labels)
        _common(row, s)
        if s.vs_reference is not None:
            _put_csi(row, "delta_", s.vs_reference, labels)
        rows.append(row)
    columns = [
        Column("Model", "model", fmt="{}"),
        Column("CSI-M", "csi_m", ci=True),
        Column("CSI-M (per lead)", "csi_m_per_lead"),
    ]
    columns += _threshold_columns(labels) + _score_columns()
    columns.append(Column("Latency (ms)", "latency_ms", fmt="{:.1f}"))
    notes = _notes(stats, n_boot, seed)
    if reference is not None:
        columns.append(Column(f"ΔCSI-M vs {reference}", "delta_csi_m", ci=True))
    return Table("main", "Main results", _with_provenance(rows, prov), tuple(columns), tuple(notes))


def ablation_table(
    stats: Mapping[str, RunStats],
    labels: Sequence[str],
    prov: Mapping[str, str],
    n_boot: int,
    seed: int,
) -> Table:
    """The base run(s) that ablations point at, then each ablation."""
    bases = [n for n in dict.fromkeys(s.ablation_of for s in stats.values()) if n is not None]
    rows = []
    for base in bases:
        for s in [stats[base], *[x for x in stats.values() if x.ablation_of == base]]:
            row: dict[str, Any] = {"model": s.name, "ablation_of": s.ablation_of or ""}
            _put_csi(row, "", s.intervals, labels)
            _common(row, s)
            if s.vs_base is not None:
                _put_csi(row, "delta_", s.vs_base, labels)
            rows.append(row)
    columns = [
        Column("Run", "model", fmt="{}"),
        Column("Ablation of", "ablation_of", fmt="{}"),
        Column("CSI-M", "csi_m", ci=True),
        *_threshold_columns(labels),
        *_score_columns(),
        Column("ΔCSI-M vs base", "delta_csi_m", ci=True),
    ]
    notes = _notes(stats, n_boot, seed) if stats else []
    if not rows:
        notes.append("No ablation runs are configured.")
    data = _with_provenance(rows, prov, columns)
    return Table("ablations", "Ablations", data, tuple(columns), tuple(notes))


def per_lead_table(
    stats: Mapping[str, RunStats],
    labels: Sequence[str],
    lead_times: Sequence[int],
    prov: Mapping[str, str],
) -> Table:
    """One row per (run, lead time): CSI-M and CSI per threshold at that lead, MSE, MAE, SSIM."""
    rows = []
    for s in stats.values():
        cat, cont = s.categorical, s.continuous.by_lead
        for j, lead in enumerate(lead_times):
            row: dict[str, Any] = {"model": s.name, "lead_time": int(lead)}
            row["csi_m"] = float(cat.csi_m_by_lead[j])
            for k, label in enumerate(labels):
                row[f"csi_{label}"] = float(cat.by_lead["csi"][k, j])
            for name, values in cont.items():
                row[name] = float(values[j])
            if s.summary.get("lpips") is None:
                row["lpips"] = NA
            rows.append(row)
    columns = [
        Column("Model", "model", fmt="{}"),
        Column("Lead (min)", "lead_time", fmt="{}"),
        Column("CSI-M", "csi_m"),
        *[Column(f"CSI-{t}", f"csi_{t}") for t in labels],
        Column("MSE", "mse", fmt="{:.2f}"),
        Column("MAE", "mae", fmt="{:.2f}"),
        Column("SSIM", "ssim"),
        Column("MS-SSIM", "msssim"),
        Column("LPIPS", "lpips"),
        Column("Cons. err.", "conservation", fmt="{:.3f}"),
    ]
    first = next(iter(stats.values()))
    notes = [
        "CSI per lead time: counts summed over pixels and samples at that lead.",
        caption(first.summary.get("protocol", {})),
    ]
    notes += _missing_note(stats, "lpips", "LPIPS") + _missing_note(stats, "msssim", "MS-SSIM")
    return Table(
        "per_lead",
        "Scores by lead time",
        _with_provenance(rows, prov),
        tuple(columns),
        tuple(notes),
    )


# ----------------------------------------------------------------------------- writers


def _cell(row: pd.Series, col: Column) -> str:
    value = row.get(col.key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-" if col.key.startswith("delta") or col.ci else NA
    if isinstance(value, str):
        return value
    text = col.fmt.format(value)
    if col.ci:
        lo, hi = row.get(f"{col.key}_lo"), row.get(f"{col.key}_hi")
        if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
            text += f" [{col.fmt.format(lo)}, {col.fmt.format(hi)}]"
    return text


def to_markdown(table: Table, prov: Mapping[str, str]) -> str:
    head = [c.header for c in table.columns]
    lines = [f"**{table.title}**", "", "| " + " | ".join(head) + " |"]
    lines.append("|" + "|".join("---" for _ in head) + "|")
    for _, row in table.data.iterrows():
        lines.append("| " + " | ".join(_cell(row, c) for c in table.columns) + " |")
    lines.append("")
    lines += [f"{i}. {n}" for i, n in enumerate(table.notes, 1)]
    lines += ["", f"Provenance: {provenance_line(prov)}", ""]
    return "\n".join(lines)


_TEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "_": r"\_",
    "%": r"\%",
    "&": r"\&",
    "#": r"\#",
    "$": r"\$",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "Δ": r"$\Delta$",
    ">=": r"$\geq$",
}


def tex_escape(text: str) -> str:
    out = []
    i = 0
    while i < len(text):
        if text.startswith(">=", i):
            out.append(_TEX_ESCAPES[">="])
            i += 2
            continue
        out.append(_TEX_ESCAPES.get(text[i], text[i]))
        i += 1
    return "".join(out)


#: Characters of \scriptsize text that fit the text width of a one-column page.
LATEX_LINE_CHARS = 120


def _column_groups(table: Table) -> list[list[Column]]:
    """The columns after the first, in groups whose cells fit one line of the page."""
    cells = [[_cell(row, c) for _, row in table.data.iterrows()] for c in table.columns]
    width = [
        max([len(c.header), *map(len, col)]) + 2
        for c, col in zip(table.columns, cells, strict=True)
    ]
    budget = LATEX_LINE_CHARS - width[0]
    groups: list[list[Column]] = [[]]
    used = 0
    for col, w in zip(table.columns[1:], width[1:], strict=True):
        if groups[-1] and used + w > budget:
            groups.append([])
            used = 0
        groups[-1].append(col)
        used += w
    return groups


def _tabular(table: Table, columns: Sequence[Column]) -> list[str]:
    lines = [
        rf"\begin{{tabular}}{{l{'r' * (len(columns) - 1)}}}",
        r"\toprule",
        " & ".join(tex_escape(c.header) for c in columns) + r" \\",
        r"\midrule",
    ]
    for _, row in table.data.iterrows():
        lines.append(" & ".join(tex_escape(_cell(row, c)) for c in columns) + r" \\")
    return [*lines, r"\bottomrule", r"\end{tabular}"]


def to_latex(table: Table, prov: Mapping[str, str]) -> str:
    """A ``table`` float; a table too wide for the page is split into stacked blocks, each
    repeating the first (name) column."""
    lines = [
        r"\begin{table}[t]",
        r"\centering\scriptsize",
        rf"\caption{{{tex_escape(table.title)}}}",
        rf"\label{{tab:{table.name}}}",
    ]
    for i, group in enumerate(_column_groups(table)):
        if i:
            lines.append(r"\par\medskip")
        lines += _tabular(table, [table.columns[0], *group])
    lines.append(r"\par\smallskip\raggedright")
    lines += [rf"{i}. {tex_escape(n)}\\" for i, n in enumerate(table.notes, 1)]
    lines += [rf"Provenance: {tex_escape(provenance_line(prov))}", r"\end{table}", ""]
    return "\n".join(lines)


def write_table(table: Table, out_dir: Path, prov: Mapping[str, str]) -> list[Path]:
    """Write ``out_dir/<name>.{csv,md,tex}`` atomically; returns the paths."""
    paths = [out_dir / f"{table.name}.{ext}" for ext in ("csv", "md", "tex")]
    write_text_atomic(paths[0], table.data.to_csv(index=False))
    write_text_atomic(paths[1], to_markdown(table, prov))
    write_text_atomic(paths[2], to_latex(table, prov))
    return paths
