"""What every score declares about how it was computed (score JSON, table captions, README).

A number from this pipeline is only comparable with another computed the same way: frames
in and out, thresholds and the ``>=`` event rule, how counts are pooled, how missing truth
is treated, the pooling kernels, the LPIPS input scaling, the split and the digest of the
windows manifest (the exact list of windows scored).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from stormfusion.errors import StormFusionError
from stormfusion.verification.masking import MISSING_DECLARATION
from stormfusion.verification.pooling import DEFAULT_POOLINGS

logger = logging.getLogger(__name__)

#: What the digest is declared as when no windows manifest is available.
UNKNOWN: Final = "unknown"
EVENT_RULE: Final = "value >= threshold (0..255 digital VIL)"
COUNT_POOLING: Final = {
    "csi_m": "contingency counts summed over samples x lead times x pixels, CSI per "
    "threshold, mean over thresholds (the published SEVIR tables' convention)",
    "csi_m_per_lead": "CSI per threshold and lead time (counts summed over samples x "
    "pixels), mean over leads and thresholds",
    "scores_by_lead": "counts summed over samples x pixels at each lead time",
}
LPIPS_INPUT: Final = (
    "AlexNet LPIPS v0.1 per frame; VIL repeated to 3 channels and scaled to [-1, 1] as "
    "x / 255 * 2 - 1; averaged over frames"
)
FRAME_SCORES: Final = (
    "SSIM: Gaussian window sigma 1.5 (11 taps), data range 255, valid positions, per frame; "
    "MS-SSIM: the same at 5 scales (2 x 2 average pooling), weights 0.0448, 0.2856, 0.3001, "
    "0.2363, 0.1333, on integer (uint8) forecasts; both averaged over frames"
)
CONSERVATION: Final = (
    "per lead: sum over frames of |sum forecast - sum truth| / sum over frames of sum truth, "
    "over valid truth pixels"
)


def manifest_digest(path: str | os.PathLike[str] | None) -> str:
    """The ``digest`` of a windows manifest (JSON), or ``unknown`` when there is none."""
    if path is None:
        return UNKNOWN
    p = Path(path)
    if not p.is_file():
        logger.warning("%s: no windows manifest; the windows' digest is declared unknown", p)
        return UNKNOWN
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StormFusionError(f"{p}: windows manifest is not valid JSON ({exc})") from None
    digest = data.get("digest") if isinstance(data, dict) else None
    if not isinstance(digest, str) or not digest:
        raise StormFusionError(f"{p}: windows manifest has no 'digest' string")
    return digest


def declaration(
    *,
    input_frames: int,
    output_frames: int,
    lead_times: Sequence[int],
    thresholds: Sequence[float],
    image_size: int,
    split: str,
    digest: str,
) -> dict[str, Any]:
    """The protocol block of a score file."""
    return {
        "input_frames": int(input_frames),
        "output_frames": int(output_frames),
        "lead_times_min": [int(t) for t in lead_times],
        "image_size": int(image_size),
        "thresholds": [int(t) if float(t).is_integer() else float(t) for t in thresholds],
        "event_definition": EVENT_RULE,
        "count_pooling": dict(COUNT_POOLING),
        "missing_values": MISSING_DECLARATION,
        "pooling_kernels": {
            p.name: f"{p.kind}-pool, kernel = stride = {p.size} px, forecast and truth, "
            "before thresholding"
            for p in DEFAULT_POOLINGS
        },
        "lpips_input": LPIPS_INPUT,
        "frame_scores": FRAME_SCORES,
        "conservation": CONSERVATION,
        "split": split,
        "windows_manifest_digest": digest,
    }


def caption(protocol: Mapping[str, Any]) -> str:
    """One sentence for a table caption from a protocol block."""
    thresholds = ", ".join(str(t) for t in protocol.get("thresholds", []))
    return (
        f"Protocol: {protocol.get('input_frames')} -> {protocol.get('output_frames')} frames "
        f"({protocol.get('image_size')} px), split {protocol.get('split')!r}, windows manifest "
        f"{protocol.get('windows_manifest_digest', UNKNOWN)}; events VIL >= threshold "
        f"({thresholds}); CSI-M: {COUNT_POOLING['csi_m']}; missing truth: "
        f"{protocol.get('missing_values')}; pooled CSI: max/avg pooling with kernel = stride "
        f"= 4 and 16 px; LPIPS: {LPIPS_INPUT}."
    )
