"""Published reference numbers, each with its source and protocol, shown only beside results
scored the same way.

A published number depends on how it was computed as much as on the model: frames in and
out, grid, how contingency counts are aggregated (pooled over all lead times, per lead then
averaged, or per batch then averaged) and which checkpoint is reported (one, or the best
epoch per metric). Every row here carries that protocol; :func:`comparable` decides
whether this study's runs were scored the same way, and :func:`reference_table` puts only
those rows beside this study's numbers of the same aggregation. The seed study's Stage-4
numbers (12 -> 1 frame, per-batch means, best of 10 epochs per metric) are kept with their
label so that no one mistakes them for a target of a 12 -> 6 (or 13 -> 12) run: no run of
this pipeline is scored that way, so they never appear beside one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import pandas as pd

from stormfusion.report.stats import RunStats
from stormfusion.report.tables import PROVENANCE_COLUMNS, Column, Table

#: How contingency counts become CSI-M.
POOLED: Final = "counts pooled over all lead times"
PER_LEAD: Final = "CSI per lead time, then averaged"
PER_BATCH: Final = "CSI per batch, then averaged"
#: Which of this study's CSI-M variants is computed the same way (none for PER_BATCH).
OUR_VARIANT: Final = {POOLED: "csi_m", PER_LEAD: "csi_m_per_lead"}


@dataclass(frozen=True)
class PublishedProtocol:
    """How a published number was computed."""

    input_frames: int
    output_frames: int
    image_size: int
    counts: str  # POOLED, PER_LEAD or PER_BATCH
    checkpoint: str  # "one checkpoint" or "best epoch per metric"
    data: str  # "SEVIR" (the real archive) or a description

    def describe(self) -> str:
        return (
            f"{self.input_frames} -> {self.output_frames} frames, {self.image_size} px, "
            f"{self.counts}, {self.checkpoint}, {self.data}"
        )


SEVIR_POOLED: Final = PublishedProtocol(13, 12, 384, POOLED, "one checkpoint", "SEVIR")
SEVIR_PER_LEAD: Final = PublishedProtocol(13, 12, 384, PER_LEAD, "one checkpoint", "SEVIR")
SEED_STAGE4: Final = PublishedProtocol(
    12,
    1,
    384,
    PER_BATCH,
    "best epoch per metric (of 10, on validation)",
    "the seed study's 541 events; LPIPS fed [0, 1] instead of [-1, 1]",
)

EARTHFORMER_T6: Final = 'Gao et al., "Earthformer", NeurIPS 2022, Table 6'
EARTHFORMER_T13: Final = 'Gao et al., "Earthformer", NeurIPS 2022, Table 13 (per-lead averaging)'
CASCAST_T2: Final = 'Gong et al., "CasCast", ICML 2024, Table 2'
SEED: Final = "the seed study's Stage-4 UNet2D (its own notebook's printout)"


@dataclass(frozen=True)
class Published:
    """One published row: model, numbers (keys as in the tables), source, protocol."""

    model: str
    numbers: Mapping[str, float]
    source: str
    protocol: PublishedProtocol


def _csi(m: float, *per_threshold: float) -> dict[str, float]:
    keys = ("csi_219", "csi_181", "csi_160", "csi_133", "csi_74", "csi_16")
    return {"csi_m": m, **dict(zip(keys, per_threshold, strict=False))}


#: Every published number the project knows, with where it comes from and how it was made.
PUBLISHED: Final[tuple[Published, ...]] = (
    Published("Persistence", _csi(0.2613), EARTHFORMER_T6, SEVIR_POOLED),
    Published("UNet", _csi(0.3593), EARTHFORMER_T6, SEVIR_POOLED),
    Published(
        "PredRNN",
        {
            "csi_m": 0.4080,
            "csi_219": 0.1312,
            "csi_133": 0.3858,
            "csi_74": 0.6713,
            "mse_1e3": 3.9014,
        },
        EARTHFORMER_T6,
        SEVIR_POOLED,
    ),
    Published(
        "ConvLSTM",
        {**_csi(0.4185, 0.1288, 0.2482, 0.2928, 0.4052, 0.6793, 0.7569), "mse_1e3": 3.7532},
        EARTHFORMER_T6,
        SEVIR_POOLED,
    ),
    Published(
        "Earthformer",
        {**_csi(0.4419, 0.1791, 0.2848, 0.3232, 0.4271, 0.6860, 0.7513), "mse_1e3": 3.6957},
        EARTHFORMER_T6,
        SEVIR_POOLED,
    ),
    Published(
        "Earthformer (official checkpoint, re-scored)", _csi(0.4310), CASCAST_T2, SEVIR_POOLED
    ),
    Published(
        "CasCast",
        {
            **_csi(0.4401, 0.1851, 0.2879),
            "csi_m_pool4": 0.4640,
            "csi_m_pool16": 0.5225,
            "hss_m": 0.5602,
        },
        CASCAST_T2,
        SEVIR_POOLED,
    ),
    Published(
        "Earthformer",
        _csi(0.4359, 0.1480, 0.2748, 0.3126, 0.4231, 0.6886, 0.7682),
        EARTHFORMER_T13,
        SEVIR_PER_LEAD,
    ),
    Published("ConvLSTM", _csi(0.4126), EARTHFORMER_T13, SEVIR_PER_LEAD),
    Published("PredRNN", _csi(0.4048), EARTHFORMER_T13, SEVIR_PER_LEAD),
    Published(
        "UNet2D (seed, Stage 4)",
        {"csi_74": 0.818, "csi_181": 0.499, "csi_219": 0.334, "lpips": 0.137},
        SEED,
        SEED_STAGE4,
    ),
)


@dataclass(frozen=True)
class Protocol:
    """What this study ran: frames in and out, grid size, and whether the data are real."""

    input_frames: int
    output_frames: int
    image_size: int
    real_data: bool | None  # None: could not be established

    def comparable(self, published: PublishedProtocol) -> tuple[bool, str]:
        """Whether this study's scores can stand beside numbers of ``published``."""
        ours = (self.input_frames, self.output_frames, self.image_size)
        theirs = (published.input_frames, published.output_frames, published.image_size)
        if published.counts not in OUR_VARIANT:
            return False, f"the published protocol ({published.describe()}) is not one we score"
        if ours != theirs:
            return False, (
                f"protocol {ours[0]} -> {ours[1]} frames at {ours[2]} px differs from the "
                f"published {theirs[0]} -> {theirs[1]} at {theirs[2]} px"
            )
        if self.real_data is None:
            return False, "the data source (real archive or synthetic twin) is unknown"
        if not self.real_data:
            return False, "the data are the synthetic twin, not the real archive"
        return True, ""

    def matches(self) -> tuple[bool, str]:
        """Whether any published number is comparable, and why not when none is."""
        reasons = []
        for row in PUBLISHED:
            ok, why = self.comparable(row.protocol)
            if ok:
                return True, ""
            reasons.append(why)
        return False, next((r for r in reasons if "differs" in r), reasons[0])


def not_comparable(protocol: Protocol) -> list[dict[str, str]]:
    """Every published row that cannot stand beside this study's runs, and why."""
    out = []
    for row in PUBLISHED:
        ok, why = protocol.comparable(row.protocol)
        if not ok:
            out.append({"model": row.model, "source": row.source, "why": why})
    return out


def _our_row(s: RunStats, variant: str, counts: str, labels: Sequence[str]) -> dict[str, Any]:
    row: dict[str, Any] = {"model": s.name, "source": "this study", "counts": counts}
    cat = s.categorical
    if variant == "csi_m":
        row["csi_m"] = cat.csi_m
        for k, label in enumerate(labels):
            row[f"csi_{label}"] = float(cat.overall["csi"][k])
        row["mse_1e3"] = s.continuous.overall["mse_01"] * 1e3
    else:
        row["csi_m"] = cat.csi_m_per_lead
        for k, label in enumerate(labels):
            row[f"csi_{label}"] = float(cat.by_lead["csi"][k].mean())
    return row


def reference_table(
    stats: Mapping[str, RunStats],
    labels: Sequence[str],
    prov: Mapping[str, str],
    protocol: Protocol,
) -> Table:
    """For each published protocol this study matches: its rows, then this study's rows
    (no ablations) computed the same way."""
    keys = ["csi_m", *[f"csi_{t}" for t in reversed(labels)], "mse_1e3"]
    rows: list[dict[str, Any]] = []
    for counts, variant in OUR_VARIANT.items():
        group = [p for p in PUBLISHED if p.protocol.counts == counts]
        group = [p for p in group if protocol.comparable(p.protocol)[0]]
        if not group:
            continue
        for p in group:
            row: dict[str, Any] = {"model": p.model, "source": p.source, "counts": counts}
            row.update({k: p.numbers.get(k) for k in keys})
            rows.append(row)
        rows += [
            _our_row(s, variant, counts, labels) for s in stats.values() if s.ablation_of is None
        ]
    for row in rows:
        for k in PROVENANCE_COLUMNS:
            row[k] = prov.get(k, "unknown") if row["source"] == "this study" else ""
    columns = [
        Column("Model", "model", fmt="{}"),
        Column("Source", "source", fmt="{}"),
        Column("CSI-M from", "counts", fmt="{}"),
        Column("CSI-M", "csi_m"),
        *[Column(f"CSI-{t}", f"csi_{t}") for t in reversed(labels)],
        Column("MSE (1e-3, vil/255)", "mse_1e3"),
    ]
    notes = (
        "Published numbers with their source; each group's protocol: "
        + "; ".join(
            sorted({p.protocol.describe() for p in PUBLISHED if p.protocol.counts in OUR_VARIANT})
        )
        + ". Shown only because this study ran the same frames and grid on the real archive; "
        "our rows use the same aggregation as the group they follow. Splits and event sets "
        "may still differ.",
        "CasCast re-scored Earthformer's official checkpoint at 0.4310 against the 0.4419 "
        "Earthformer published: numbers copied between papers are not always comparable.",
    )
    return Table(
        "reference",
        "Published SEVIR reference numbers (separate from our results)",
        pd.DataFrame(rows),
        tuple(columns),
        notes,
    )
