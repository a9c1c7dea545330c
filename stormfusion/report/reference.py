"""Published reference numbers, shown only beside results of the same protocol.

The numbers are Earthformer's SEVIR table (Gao et al., NeurIPS 2022): 13 input frames ->
12 output frames (5 to 60 min), 384 x 384 VIL of the real archive, counts pooled over the
12 lead times. They are never mixed into the study's own tables; they appear in a separate
``reference`` table, and only when this study's protocol is that one on real data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from stormfusion.report.stats import RunStats
from stormfusion.report.tables import PROVENANCE_COLUMNS, Column, Table

SOURCE = 'Gao et al., "Earthformer", NeurIPS 2022, SEVIR table'
#: The published protocol: input frames, output frames, image size.
PROTOCOL = (13, 12, 384)

#: model -> published numbers (None where the table gives none). MSE is x 1e-3 on vil/255.
PUBLISHED: dict[str, dict[str, float | None]] = {
    "Persistence": {"csi_m": 0.2613},
    "UNet": {"csi_m": 0.3593},
    "ConvLSTM": {
        "csi_m": 0.4185,
        "csi_219": 0.1288,
        "csi_181": 0.2482,
        "csi_160": 0.2928,
        "csi_133": 0.4052,
        "csi_74": 0.6793,
        "csi_16": 0.7569,
        "mse_1e3": 3.7532,
    },
    "Earthformer": {
        "csi_m": 0.4419,
        "csi_219": 0.1791,
        "csi_181": 0.2848,
        "csi_160": 0.3232,
        "csi_133": 0.4271,
        "csi_74": 0.6860,
        "csi_16": 0.7513,
        "mse_1e3": 3.6957,
    },
}


@dataclass(frozen=True)
class Protocol:
    """What this study ran: frames in and out, grid size, and whether the data are real."""

    input_frames: int
    output_frames: int
    image_size: int
    real_data: bool | None  # None: could not be established

    def matches(self) -> tuple[bool, str]:
        """Whether the published numbers are comparable, and why not when they are not."""
        ours = (self.input_frames, self.output_frames, self.image_size)
        if ours != PROTOCOL:
            return False, (
                f"protocol {ours[0]} -> {ours[1]} frames at {ours[2]} px differs from the "
                f"published {PROTOCOL[0]} -> {PROTOCOL[1]} at {PROTOCOL[2]} px"
            )
        if self.real_data is None:
            return False, "the data source (real archive or synthetic twin) is unknown"
        if not self.real_data:
            return False, "the data are the synthetic twin, not the real archive"
        return True, ""


def reference_table(
    stats: Mapping[str, RunStats], labels: Sequence[str], prov: Mapping[str, str]
) -> Table:
    """Published rows, then this study's rows (no ablations) in the same columns."""
    keys = ["csi_m", *[f"csi_{t}" for t in reversed(labels)], "mse_1e3"]
    rows: list[dict[str, Any]] = []
    for model, numbers in PUBLISHED.items():
        row: dict[str, Any] = {"model": model, "source": SOURCE}
        row.update({k: numbers.get(k) for k in keys})
        rows.append(row)
    for s in stats.values():
        if s.ablation_of is not None:
            continue
        row = {"model": s.name, "source": "this study"}
        row["csi_m"] = s.intervals.csi_m.value
        for label, iv in zip(labels, s.intervals.csi, strict=True):
            row[f"csi_{label}"] = iv.value
        row["mse_1e3"] = s.mse_01 * 1e3
        rows.append(row)
    for row in rows:
        for k in PROVENANCE_COLUMNS:
            row[k] = prov.get(k, "unknown") if row["source"] == "this study" else ""
    columns = [Column("Model", "model", fmt="{}"), Column("Source", "source", fmt="{}")]
    columns += [Column("CSI-M", "csi_m")]
    columns += [Column(f"CSI-{t}", f"csi_{t}") for t in reversed(labels)]
    columns += [Column("MSE (1e-3, vil/255)", "mse_1e3")]
    notes = (
        "Published numbers: " + SOURCE + "; 13 -> 12 frames, 384 x 384, counts pooled over "
        "the 12 lead times. Shown only because this study ran the same protocol on the real "
        "archive; splits and event sets may still differ.",
    )
    return Table(
        "reference",
        "Published SEVIR reference numbers (separate from our results)",
        pd.DataFrame(rows),
        tuple(columns),
        notes,
    )
