"""Train/validation/test splits by event, and the forecast windows cut from each event.

Every event goes to exactly one split, so no frame is seen in two splits. Two strategies,
one function each in :data:`STRATEGIES`:

- ``random`` (the seed study: 80/20 of 541 storm events): the event ids, sorted, are
  permuted by ``numpy.random.default_rng(seed)``; the first ``ceil(n * test_fraction)``
  go to test, the next ``ceil(n * val_fraction)`` to validation, the rest to training
  (541 events at 0.2 give 432 / 109, the seed study's counts). The result depends only on
  the set of ids and the seed, not on the index's row order.
- ``date`` (SEVIR / Earthformer): ``time_utc < train_end`` trains, ``train_end <= time_utc
  < val_end`` validates, ``time_utc >= val_end`` tests.

Windows: an event's 49 frames give windows starting at ``0, stride, 2 stride, ...`` while
``start + input_frames + output_frames <= 49``. The ``sevir`` preset (13 in, 12 out,
stride 12) gives exactly the published benchmark's [0:13]->[13:25], [12:25]->[25:37],
[24:37]->[37:49]; the ``seed`` preset is the seed study's 12 in, 6 out, stride 12.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from stormfusion.data.event_index import read_event_index
from stormfusion.data.sevir import N_FRAMES
from stormfusion.errors import StormFusionError
from stormfusion.io import atomic_path

logger = logging.getLogger(__name__)

SPLITS: Final = ("train", "val", "test")
#: Columns of windows.csv, in order.
WINDOW_COLUMNS: Final = ("event_id", "window_start", "input_frames", "output_frames", "split")


@dataclass(frozen=True)
class WindowSpec:
    """Frames per window and the step between window starts."""

    input_frames: int
    output_frames: int
    stride: int

    def starts(self, n_frames: int = N_FRAMES) -> list[int]:
        """Start frames of the windows of one event (inputs ``[s, s + input_frames)``)."""
        for name, value in (
            ("input_frames", self.input_frames),
            ("output_frames", self.output_frames),
            ("stride", self.stride),
        ):
            if value < 1:
                raise StormFusionError(f"{name} must be >= 1, got {value}")
        length = self.input_frames + self.output_frames
        if length > n_frames:
            raise StormFusionError(
                f"a window of {self.input_frames} input + {self.output_frames} output frames "
                f"= {length} is longer than an event's {n_frames} frames"
            )
        return list(range(0, n_frames - length + 1, self.stride))


#: Named window settings; explicit numbers override them.
PRESETS: Final[dict[str, WindowSpec]] = {
    "seed": WindowSpec(input_frames=12, output_frames=6, stride=12),
    "sevir": WindowSpec(input_frames=13, output_frames=12, stride=12),
}


@dataclass(frozen=True)
class SplitOptions:
    """How events are assigned to splits (each strategy reads the fields it needs)."""

    seed: int = 0
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    train_end: str = "2019-01-01"
    val_end: str = "2019-06-01"


Strategy = Callable[[pd.DataFrame, SplitOptions], pd.Series]


def split_random(events: pd.DataFrame, opts: SplitOptions) -> pd.Series:
    """Seeded random assignment by event (see the module docstring); index = event id."""
    for name, f in (("val_fraction", opts.val_fraction), ("test_fraction", opts.test_fraction)):
        if not 0.0 <= f < 1.0:
            raise StormFusionError(f"{name} must be in [0, 1), got {f}")
    if opts.val_fraction + opts.test_fraction >= 1.0:
        raise StormFusionError(
            f"val_fraction + test_fraction = {opts.val_fraction + opts.test_fraction} "
            "leaves no training events"
        )
    ids = np.array(sorted(events["id"].astype(str)), dtype=object)
    n = len(ids)
    n_test = math.ceil(n * opts.test_fraction - 1e-9)
    n_val = math.ceil(n * opts.val_fraction - 1e-9)
    order = ids[np.random.default_rng(opts.seed).permutation(n)]
    labels = np.array(["train"] * n, dtype=object)
    labels[:n_test] = "test"
    labels[n_test : n_test + n_val] = "val"
    return pd.Series(labels, index=order, name="split")


def _date(value: str, name: str) -> pd.Timestamp:
    try:
        return pd.Timestamp(value)
    except (ValueError, TypeError):
        raise StormFusionError(f"{name}: {value!r} is not a date (YYYY-MM-DD)") from None


def split_by_date(events: pd.DataFrame, opts: SplitOptions) -> pd.Series:
    """Assignment by ``time_utc`` against the two cut dates; index = event id."""
    train_end, val_end = _date(opts.train_end, "train_end"), _date(opts.val_end, "val_end")
    if val_end < train_end:
        raise StormFusionError(f"val_end {opts.val_end} is before train_end {opts.train_end}")
    t = pd.to_datetime(events["time_utc"])
    if t.dt.tz is not None:
        t = t.dt.tz_convert("UTC").dt.tz_localize(None)
    labels = np.where(t < train_end, "train", np.where(t < val_end, "val", "test"))
    return pd.Series(labels, index=events["id"].astype(str).to_numpy(), name="split")


def _random_required(opts: SplitOptions) -> dict[str, bool]:
    return {"train": True, "val": opts.val_fraction > 0, "test": opts.test_fraction > 0}


def _date_required(opts: SplitOptions) -> dict[str, bool]:
    later = _date(opts.val_end, "val_end") > _date(opts.train_end, "train_end")
    return {"train": True, "val": later, "test": True}


def _random_describe(opts: SplitOptions) -> str:
    return f"val_fraction {opts.val_fraction}, test_fraction {opts.test_fraction}"


def _date_describe(opts: SplitOptions) -> str:
    return f"train_end {opts.train_end}, val_end {opts.val_end}"


@dataclass(frozen=True)
class SplitStrategy:
    """A way to assign events to splits.

    Attributes:
        assign: split label per event, as a Series indexed by event id.
        required: which splits the options ask for (each must receive events).
        describe: the options that matter, for messages.
    """

    assign: Strategy
    required: Callable[[SplitOptions], dict[str, bool]]
    describe: Callable[[SplitOptions], str]


#: Split strategies by name. ``random`` asks for train, val if ``val_fraction > 0`` and
#: test if ``test_fraction > 0``; ``date`` for train, val if ``val_end > train_end``, test.
STRATEGIES: Final[dict[str, SplitStrategy]] = {
    "random": SplitStrategy(split_random, _random_required, _random_describe),
    "date": SplitStrategy(split_by_date, _date_required, _date_describe),
}


def assign_splits(events: pd.DataFrame, strategy: str, opts: SplitOptions) -> pd.Series:
    """Split label per event id, in index order; every split that is asked for is non-empty.

    Raises:
        StormFusionError: unknown strategy, bad options or an empty split.
    """
    try:
        method = STRATEGIES[strategy]
    except KeyError:
        raise StormFusionError(
            f"unknown split strategy {strategy!r}; valid: {', '.join(STRATEGIES)}"
        ) from None
    labels = method.assign(events, opts).reindex(events["id"].astype(str).to_numpy())
    counts = labels.value_counts()
    asked = method.required(opts)
    for split in SPLITS:
        if asked[split] and counts.get(split, 0) == 0:
            raise StormFusionError(
                f"split {split!r} is empty with strategy {strategy!r} "
                f"({len(events)} events; {method.describe(opts)}): "
                "change the fractions or cut dates, or select more events"
            )
    return labels


def make_windows(
    events: pd.DataFrame, labels: pd.Series, spec: WindowSpec, n_frames: int = N_FRAMES
) -> pd.DataFrame:
    """The windows table: one row per (event, window start), events in index order."""
    starts = spec.starts(n_frames)
    ids = events["id"].astype(str).to_numpy()
    n = len(starts)
    return pd.DataFrame(
        {
            "event_id": np.repeat(ids, n),
            "window_start": np.tile(np.asarray(starts, dtype=np.int64), len(ids)),
            "input_frames": spec.input_frames,
            "output_frames": spec.output_frames,
            "split": np.repeat(labels.reindex(ids).to_numpy(), n),
        },
        columns=list(WINDOW_COLUMNS),
    )


def split_events(
    events_csv: str | os.PathLike[str],
    out: str | os.PathLike[str],
    strategy: str,
    opts: SplitOptions,
    spec: WindowSpec,
) -> pd.DataFrame:
    """Read the index, assign splits, cut windows and write ``windows.csv`` atomically."""
    events = read_event_index(events_csv)
    labels = assign_splits(events, strategy, opts)
    windows = make_windows(events, labels, spec)
    with atomic_path(out) as tmp:
        windows.to_csv(tmp, index=False)
    per_split = labels.value_counts()
    logger.info(
        "%s split of %d events: %s; %d windows per event (%d in, %d out, stride %d) -> %s",
        strategy,
        len(events),
        ", ".join(f"{s} {int(per_split.get(s, 0))}" for s in SPLITS),
        len(spec.starts()),
        spec.input_frames,
        spec.output_frames,
        spec.stride,
        Path(out),
    )
    return windows


def read_windows(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read ``windows.csv`` (``event_id`` as str) and check its columns and values."""
    p = Path(path)
    if not p.is_file():
        raise StormFusionError(f"{p}: windows table not found")
    try:
        table = pd.read_csv(p, dtype={"event_id": str, "split": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise StormFusionError(f"{p}: not a readable windows table: {exc}") from None
    return check_windows(table, str(p))


def check_windows(table: pd.DataFrame, where: str = "windows") -> pd.DataFrame:
    """Validate a windows table (columns, integer frames, splits, lengths <= 49)."""
    missing = [c for c in WINDOW_COLUMNS if c not in table.columns]
    if missing:
        raise StormFusionError(f"{where}: lacks column(s) {', '.join(missing)}")
    table = table.copy()
    table["event_id"] = table["event_id"].astype(str)
    for col in ("window_start", "input_frames", "output_frames"):
        try:
            table[col] = table[col].astype(np.int64)
        except (ValueError, TypeError):
            raise StormFusionError(f"{where}: column {col} has non-integer values") from None
    bad = sorted(set(table["split"].astype(str)) - set(SPLITS))
    if bad:
        raise StormFusionError(f"{where}: unknown split label(s) {', '.join(bad)}")
    end = table["window_start"] + table["input_frames"] + table["output_frames"]
    if (table["window_start"] < 0).any() or (end > N_FRAMES).any():
        row = int(np.flatnonzero((table["window_start"] < 0) | (end > N_FRAMES))[0])
        raise StormFusionError(
            f"{where}: row {row} (event {table['event_id'].iloc[row]}) reaches frame "
            f"{int(end.iloc[row])}, beyond an event's {N_FRAMES} frames"
        )
    if (table["input_frames"] < 1).any() or (table["output_frames"] < 1).any():
        raise StormFusionError(f"{where}: input_frames and output_frames must be >= 1")
    twice = table.groupby("event_id")["split"].nunique()
    if (twice > 1).any():
        raise StormFusionError(
            f"{where}: event(s) in two splits: {', '.join(twice[twice > 1].index[:5])}"
        )
    return table
