"""Hand-built CATALOG.csv rows written from the archive's documented facts (docs/data.md).

Rows carry the 21 columns in the real order; storm ids are ``S<NWS event id>`` with an
episode id and an event type, random ids ``R<digits>`` with those three fields empty;
``time_utc`` is ``YYYY-MM-DD HH:MM:SS`` off the 5-minute marks; ``minute_offsets`` are 49
colon-separated offsets, often shifted by 1 or 2 minutes (empty for lght); VIL lives in
half-year STORMEVENTS and third-of-year RANDOMEVENTS files, ``file_index`` counting the
events of one file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from stormfusion.data.sevir import CATALOG_COLUMNS

PROJ = "+proj=laea +lat_0=38 +lon_0=-98 +units=m +a=6370997.0 +ellps=sphere "
SIZES = {"vis": 768, "ir069": 192, "ir107": 192, "vil": 384, "lght": 48}
#: The Earthformer cut instants (midnight UTC).
TRAIN_END = pd.Timestamp("2019-01-01 00:00:00")
VAL_END = pd.Timestamp("2019-06-01 00:00:00")


def offsets(first: int) -> str:
    """49 offsets 5 minutes apart starting at ``first`` (nominally -120)."""
    return ":".join(str(first + 5 * k) for k in range(49))


def vil_file(event_id: str, time: pd.Timestamp, img_type: str = "vil") -> str:
    """The file an event's ``img_type`` lives in, named as on the bucket."""
    y = time.year
    if img_type == "lght":
        start, end = f"{time.month:02d}01", f"{time.month % 12 + 1:02d}01"
        return f"lght/{y}/SEVIR_LGHT_ALLEVENTS_{y}_{start}_{end}.h5"
    if event_id.startswith("S"):
        half = "0101_0630" if time.month <= 6 else "0701_1231"
        kind = "STORMEVENTS"
    else:
        half = ("0101_0430", "0501_0831", "0901_1231")[(time.month - 1) // 4]
        kind = "RANDOMEVENTS"
    return f"{img_type}/{y}/SEVIR_{img_type.upper()}_{kind}_{y}_{half}.h5"


@dataclass
class CatalogBuilder:
    """Accumulates catalog rows; ``file_index`` counts the rows of each file."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    _next_index: dict[str, int] = field(default_factory=dict)

    def add(
        self,
        event_id: str,
        time: str,
        img_type: str = "vil",
        pct_missing: float | None = 0.0,
        first_offset: int = -120,
        file_name: str | None = None,
    ) -> dict[str, Any]:
        """One row of ``event_id`` for ``img_type``; returns it."""
        t = pd.Timestamp(time)
        name = file_name or vil_file(event_id, t, img_type)
        index = self._next_index.get(name, 0)
        self._next_index[name] = index + 1
        storm = event_id.startswith("S")
        row = {
            "id": event_id,
            "file_name": name,
            "file_index": index,
            "img_type": img_type,
            "time_utc": t.strftime("%Y-%m-%d %H:%M:%S"),
            "minute_offsets": "" if img_type == "lght" else offsets(first_offset),
            "episode_id": 100000 + int(event_id[1:]) % 1000 if storm else None,
            "event_id": int(event_id[1:]) if storm else None,
            "event_type": "Hail" if storm else None,
            "llcrnrlat": 33.1,
            "llcrnrlon": -101.2,
            "urcrnrlat": 36.4,
            "urcrnrlon": -96.9,
            "proj": PROJ,
            "size_x": SIZES[img_type],
            "size_y": SIZES[img_type],
            "height_m": 384000,
            "width_m": 384000,
            "data_min": 0,
            "data_max": 254 if img_type == "vil" else 10,
            "pct_missing": pct_missing,
        }
        self.rows.append(row)
        return row

    def frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.rows, columns=list(CATALOG_COLUMNS))
        for col in ("episode_id", "event_id"):
            frame[col] = frame[col].astype("Int64")
        return frame

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.frame().to_csv(path, index=False)
        return path


def protocol_catalog() -> CatalogBuilder:
    """A catalog exercising every rule of the published protocol's selection and split.

    Storm and random events on every side of both cuts, some exactly ON the cut instants
    (2019-01-01 00:00:00, 2019-06-01 00:00:00) and one second after; shifted minute offsets;
    an id whose vis row is duplicated (kept by a VIL-only request); an id whose vil row is
    duplicated (dropped); a duplicated vil row whose twin has ``pct_missing > 0`` (kept: the
    official filter drops the incomplete row first); ``pct_missing > 0`` rows; an id with no
    vil row; ir and lght rows beside the vil ones.
    """
    b = CatalogBuilder()
    times = [
        "2018-03-04 11:54:00",
        "2018-08-15 19:54:00",
        "2018-12-31 23:57:00",
        "2019-01-01 00:00:00",  # on the first cut: train
        "2019-01-01 00:00:01",  # just after: val
        "2019-02-11 06:31:00",
        "2019-05-31 23:59:59",
        "2019-06-01 00:00:00",  # on the second cut: val
        "2019-06-01 00:00:01",  # just after: test
        "2019-07-02 20:06:00",
        "2019-11-23 02:13:00",
    ]
    shifts = [-120, -118, -122, -121, -119]
    for k, t in enumerate(times):
        storm, rand = f"S{827400 + k}", f"R{19000000000 + 37 * k}"
        for n, event in enumerate((storm, rand)):
            first = shifts[(k + n) % len(shifts)]
            b.add(event, t, "vil", first_offset=first)
            b.add(event, t, "ir107", first_offset=first + 1)
            if event.startswith("S"):
                b.add(event, t, "lght", pct_missing=None)
    # vis duplicated only: kept for a VIL-only request
    b.add("S900001", "2018-05-05 13:22:00", "vil")
    b.add("S900001", "2018-05-05 13:22:00", "vis")
    b.add("S900001", "2018-05-05 13:22:00", "vis")
    # vil duplicated (two patches sharing an id): dropped
    b.add("R18032505027684", "2018-03-25 05:02:00", "vil")
    b.add("R18032505027684", "2018-03-25 05:02:00", "vil")
    # vil duplicated, one twin incomplete: the complete one is kept
    b.add("S900002", "2019-06-01 00:00:00", "vil", pct_missing=3.5)
    b.add("S900002", "2019-06-01 00:00:00", "vil")
    # missing pixels: dropped
    b.add("S900003", "2019-03-03 03:03:00", "vil", pct_missing=0.4)
    b.add("R19010100000001", "2019-01-01 00:00:00", "vil", pct_missing=12.0)
    # no vil at all: dropped
    b.add("S900004", "2019-08-08 08:08:00", "ir069")
    b.add("S900004", "2019-08-08 08:08:00", "ir107")
    return b
