"""A tiny raw SEVIR archive for the archive, split and loader tests.

It is written with the same writers as the synthetic twin (``stormfusion.data.hdf5``) in
SEVIR's real layout: time-last raster files with an ``id`` dataset, a lightning file with
one (n, 5) flash table per event, an event index and its metadata. Grids follow the twin:
VIL ``size``, IR ``size / 2``, lightning ``size / 8``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from stormfusion.data.hdf5 import write_lightning_file, write_raster_file
from stormfusion.data.sevir import N_FRAMES

RASTER_FILES = {
    "vil": "vil/2019/SEVIR_VIL_STORMEVENTS_2019_0101_1231.h5",
    "ir069": "ir069/2019/SEVIR_IR069_STORMEVENTS_2019_0101_1231.h5",
    "ir107": "ir107/2019/SEVIR_IR107_STORMEVENTS_2019_0101_1231.h5",
}
LGHT_FILE = "lght/2019/SEVIR_LGHT_ALLEVENTS_2019_0101_1231.h5"


@dataclass
class Twin:
    """Paths and the exact source values of a tiny archive."""

    root: Path
    events_csv: Path
    ids: list[str]
    rasters: dict[str, np.ndarray]  # modality -> (N, H, W, 49) as written
    flashes: dict[str, np.ndarray] = field(default_factory=dict)  # id -> (n, 5)
    sizes: dict[str, int] = field(default_factory=dict)


def _flashes(
    rng: np.random.Generator, ids: list[str], grid: int, first: str
) -> dict[str, np.ndarray]:
    """Random flash tables ``[t, lat, lon, x, y]`` for ``ids`` (none for event ``first``),
    some beyond +-120 min and some outside the ``grid``-pixel square."""
    flashes: dict[str, np.ndarray] = {}
    for event_id in ids:
        n = int(rng.integers(0, 200)) if event_id != first else 0
        t = rng.uniform(-7800, 7800, n)
        x = rng.uniform(-1, grid + 1, n)
        y = rng.uniform(-1, grid + 1, n)
        flashes[event_id] = np.stack([t, np.zeros(n), np.zeros(n), x, y], axis=1)
    return flashes


def make_twin(
    root: Path,
    n_events: int = 4,
    size: int = 32,
    seed: int = 0,
    without_lght: tuple[str, ...] = (),
    times: list[str] | None = None,
    missing_vil: int = 0,
) -> Twin:
    """Write a tiny raw archive under ``root`` and its event index ``root/events.csv``.

    Args:
        without_lght: event ids that get no lightning (empty ``lght_file``).
        times: ``time_utc`` per event (default: one day apart from 2019-01-01).
        missing_vil: number of VIL pixels set to 255 in the first event.
    """
    rng = np.random.default_rng(seed)
    ids = [f"S{1000 + i}" for i in range(n_events)]
    sizes = {"vil": size, "ir069": size // 2, "ir107": size // 2, "lght": size // 8}
    rasters: dict[str, np.ndarray] = {}
    data = root / "data"
    vil = rng.integers(0, 255, (n_events, size, size, N_FRAMES), dtype=np.uint8)
    flat = vil[0].reshape(-1)
    flat[rng.choice(flat.size, missing_vil, replace=False)] = 255
    rasters["vil"] = vil
    for m in ("ir069", "ir107"):
        s = sizes[m]
        rasters[m] = rng.integers(-7000, 2500, (n_events, s, s, N_FRAMES), dtype=np.int16)
    # raster files list the events in reverse order: the index, not file order, rules
    order = list(reversed(range(n_events)))
    for m, rel in RASTER_FILES.items():
        write_raster_file(data / rel, m, [ids[i] for i in order], rasters[m][order])
    g = sizes["lght"]
    flashes = _flashes(rng, [e for e in ids if e not in without_lght], g, first=ids[0])
    write_lightning_file(data / LGHT_FILE, flashes)
    if times is None:
        day0 = pd.Timestamp("2019-01-01 12:00")
        times = [str(day0 + pd.Timedelta(days=i)) for i in range(n_events)]
    rows = []
    for i, event_id in enumerate(ids):
        row: dict[str, object] = {
            "id": event_id,
            "time_utc": times[i],
            "event_type": "Hail",
            "episode_id": 100 + i,
            "event_id": int(event_id[1:]),
            "kind": "storm",
        }
        for m, rel in RASTER_FILES.items():
            row.update({f"{m}_file": rel, f"{m}_index": order.index(i), f"{m}_size": sizes[m]})
        has = event_id not in without_lght
        row.update({"lght_file": LGHT_FILE if has else "", "lght_index": -1, "lght_size": g})
        rows.append(row)
    events_csv = root / "events.csv"
    pd.DataFrame(rows).to_csv(events_csv, index=False)
    (root / "events.json").write_text(json.dumps({"data_fingerprint": f"fp-{seed}-{n_events}"}))
    return Twin(root, events_csv, ids, rasters, flashes, sizes)
