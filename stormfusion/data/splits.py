"""Train/validation/test splits by event, and the forecast windows cut from each event.

Every event goes to exactly one split, so no frame is seen in two splits. The strategies
are one typed registry, :data:`STRATEGIES` (unknown names list the valid ones):

- ``random``: the event ids, sorted, are permuted by ``numpy.random.default_rng(seed)``;
  the first ``ceil(n * test_fraction)`` go to test, the next ``ceil(n * val_fraction)`` to
  validation, the rest to training (541 events at 0.2 give 432 / 109). The result depends
  only on the set of ids and the seed, not on the index's row order. This is NOT the split
  the seed study's runs used (they printed 438 / 103): that one is ``seed_catalog``.
- ``seed_catalog`` (the seed study's own split): numpy's legacy
  ``RandomState(seed).permutation`` of the catalog's unique VIL ids, in the order pandas'
  ``unique()`` returns them from the WHOLE CATALOG.csv; the first
  ``int((1 - val_fraction) * n)`` are training ids, the rest validation ids; then both are
  restricted to the selected events. With seed 42 and val_fraction 0.2 this is the seed's
  recipe (``int(0.8 * n)`` training ids).
- ``date`` (SEVIR paper / Earthformer; the boundaries are inclusive on the earlier side,
  as the published loaders compare ``time_utc > start`` and ``time_utc <= end``):
  ``time_utc <= train_end`` trains, ``train_end < time_utc <= val_end`` validates,
  ``time_utc > val_end`` tests. When the two cuts coincide (the SEVIR paper's train/test
  split), the validation events are a seeded random ``val_fraction`` of the training side,
  chosen as ``random`` chooses them (``val_fraction`` 0: no validation split).
- ``window_list`` and ``manifest``: exactly the windows an external list names (one
  ``<img_type>-<year>-<file name>-<file_index>-<window>`` per line, one file per split) or a
  ``windows_manifest.json`` written by an earlier run (its digest is checked); see
  :mod:`stormfusion.data.window_manifest`.

Windows: an event's 49 frames give windows starting at ``0, stride, 2 stride, ...`` while
``start + input_frames + output_frames <= 49``; window ``k`` starts at ``k * stride``. The
``sevir`` preset (13 in, 12 out, stride 12) gives exactly the published benchmark's
[0:13]->[13:25], [12:25]->[25:37], [24:37]->[37:49]; the ``seed`` preset is the seed
study's 12 in, 6 out, stride 12.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from stormfusion.data.catalog import read_catalog
from stormfusion.data.event_index import read_event_index
from stormfusion.data.sevir import N_FRAMES
from stormfusion.errors import StormFusionError
from stormfusion.registry import Registry

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
    """How events are assigned to splits (each strategy reads the fields it needs).

    Attributes:
        seed: ``random``, ``date`` (coinciding cuts) and ``seed_catalog`` seed.
        val_fraction, test_fraction: shares of events (``random``; ``val_fraction`` also
            for ``seed_catalog`` and ``date`` with coinciding cuts).
        train_end, val_end: the ``date`` cuts (``YYYY-MM-DD``, midnight UTC).
        catalog: CATALOG.csv, for ``seed_catalog``.
        window_lists: ``(split, path)`` pairs, for ``window_list``.
        window_manifest: a ``windows_manifest.json``, for ``manifest``.
    """

    seed: int = 0
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    train_end: str = "2019-01-01"
    val_end: str = "2019-06-01"
    catalog: str | None = None
    window_lists: tuple[tuple[str, str], ...] = ()
    window_manifest: str | None = None


Assigner = Callable[[pd.DataFrame, SplitOptions], pd.Series]
Cutter = Callable[[pd.DataFrame, SplitOptions, WindowSpec], pd.DataFrame]


def _check_fractions(opts: SplitOptions) -> None:
    for name, f in (("val_fraction", opts.val_fraction), ("test_fraction", opts.test_fraction)):
        if not 0.0 <= f < 1.0:
            raise StormFusionError(f"{name} must be in [0, 1), got {f}")
    if opts.val_fraction + opts.test_fraction >= 1.0:
        raise StormFusionError(
            f"val_fraction + test_fraction = {opts.val_fraction + opts.test_fraction} "
            "leaves no training events"
        )


def _seeded_order(ids: Sequence[str], seed: int) -> np.ndarray:
    """The ids, sorted, then permuted by ``numpy.random.default_rng(seed)``."""
    ordered = np.array(sorted(ids), dtype=object)
    return ordered[np.random.default_rng(seed).permutation(len(ordered))]


def split_random(events: pd.DataFrame, opts: SplitOptions) -> pd.Series:
    """Seeded random assignment by event (see the module docstring); index = event id."""
    _check_fractions(opts)
    order = _seeded_order(events["id"].astype(str).tolist(), opts.seed)
    n = len(order)
    n_test = math.ceil(n * opts.test_fraction - 1e-9)
    n_val = math.ceil(n * opts.val_fraction - 1e-9)
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
    """Assignment by ``time_utc`` against the two cuts (inclusive on the earlier side).

    Returns:
        The split label per event id: ``train`` for ``t <= train_end``, ``val`` for
        ``train_end < t <= val_end``, ``test`` for ``t > val_end``; with equal cuts, a
        seeded ``val_fraction`` of the training side goes to ``val``.
    """
    train_end, val_end = _date(opts.train_end, "train_end"), _date(opts.val_end, "val_end")
    if val_end < train_end:
        raise StormFusionError(f"val_end {opts.val_end} is before train_end {opts.train_end}")
    t = pd.to_datetime(events["time_utc"])
    if t.dt.tz is not None:
        t = t.dt.tz_convert("UTC").dt.tz_localize(None)
    labels = np.where(t <= train_end, "train", np.where(t <= val_end, "val", "test"))
    ids = events["id"].astype(str).to_numpy()
    if val_end == train_end and opts.val_fraction > 0:
        _check_fractions(SplitOptions(val_fraction=opts.val_fraction))
        order = _seeded_order(ids[labels == "train"].tolist(), opts.seed)
        n_val = math.ceil(len(order) * opts.val_fraction - 1e-9)
        labels = np.where(np.isin(ids, order[:n_val].astype(str)), "val", labels)
    return pd.Series(labels, index=ids, name="split")


def split_seed_catalog(events: pd.DataFrame, opts: SplitOptions) -> pd.Series:
    """The seed study's split (see the module docstring); index = event id.

    Raises:
        StormFusionError: no catalog given, a test share asked for, or a selected event
            that has no VIL row in the catalog.
    """
    if opts.catalog is None:
        raise StormFusionError("split strategy 'seed_catalog' needs the catalog (--catalog)")
    if opts.test_fraction > 0:
        raise StormFusionError(
            f"split strategy 'seed_catalog' makes train and val only; test_fraction is "
            f"{opts.test_fraction}"
        )
    _check_fractions(opts)
    catalog = read_catalog(opts.catalog)
    vil_ids = np.asarray(catalog.loc[catalog["img_type"] == "vil", "id"].unique(), dtype=object)
    order = np.random.RandomState(opts.seed).permutation(vil_ids)
    train_ids = set(order[: int((1.0 - opts.val_fraction) * len(order))])
    ids = events["id"].astype(str)
    unknown = ids[~ids.isin(set(vil_ids))].tolist()
    if unknown:
        raise StormFusionError(
            f"{opts.catalog}: {len(unknown)} selected event(s) have no vil row, so the "
            f"seed_catalog split cannot place them: {', '.join(unknown[:5])}"
        )
    labels = np.where(ids.isin(train_ids), "train", "val")
    return pd.Series(labels, index=ids.to_numpy(), name="split")


def _random_required(opts: SplitOptions) -> dict[str, bool]:
    return {"train": True, "val": opts.val_fraction > 0, "test": opts.test_fraction > 0}


def _seed_catalog_required(opts: SplitOptions) -> dict[str, bool]:
    return {"train": True, "val": opts.val_fraction > 0, "test": False}


def _date_required(opts: SplitOptions) -> dict[str, bool]:
    train_end, val_end = _date(opts.train_end, "train_end"), _date(opts.val_end, "val_end")
    return {"train": True, "val": val_end > train_end or opts.val_fraction > 0, "test": True}


def _none_required(opts: SplitOptions) -> dict[str, bool]:
    return dict.fromkeys(SPLITS, False)


def _random_describe(opts: SplitOptions) -> str:
    return f"seed {opts.seed}, val_fraction {opts.val_fraction}, test_fraction {opts.test_fraction}"


def _seed_catalog_describe(opts: SplitOptions) -> str:
    return f"catalog {opts.catalog}, seed {opts.seed}, val_fraction {opts.val_fraction}"


def _date_describe(opts: SplitOptions) -> str:
    return f"train_end {opts.train_end}, val_end {opts.val_end}"


def _lists_describe(opts: SplitOptions) -> str:
    return ", ".join(f"{split} {path}" for split, path in opts.window_lists) or "no lists"


def _manifest_describe(opts: SplitOptions) -> str:
    return f"manifest {opts.window_manifest}"


def _by_event(assign: Assigner) -> Cutter:
    """A cutter that labels events with ``assign`` and gives every event all its windows."""

    def cut(events: pd.DataFrame, opts: SplitOptions, spec: WindowSpec) -> pd.DataFrame:
        labels = assign(events, opts).reindex(events["id"].astype(str).to_numpy())
        return make_windows(events, labels, spec)

    return cut


def _cut_lists(events: pd.DataFrame, opts: SplitOptions, spec: WindowSpec) -> pd.DataFrame:
    from stormfusion.data.window_manifest import windows_from_lists

    return windows_from_lists(events, opts.window_lists, spec)


def _cut_manifest(events: pd.DataFrame, opts: SplitOptions, spec: WindowSpec) -> pd.DataFrame:
    from stormfusion.data.window_manifest import windows_from_manifest

    if opts.window_manifest is None:
        raise StormFusionError("split strategy 'manifest' needs --window-manifest")
    return windows_from_manifest(events, opts.window_manifest, spec)


@dataclass(frozen=True)
class SplitStrategy:
    """A way to assign events (or windows) to splits.

    Attributes:
        cut: the windows table (:data:`WINDOW_COLUMNS`) of the events, split.
        required: which splits the options ask for (each must receive windows).
        describe: the options that matter, for messages.
        assign: the split label per event id, for strategies that split whole events.
    """

    cut: Cutter
    required: Callable[[SplitOptions], dict[str, bool]]
    describe: Callable[[SplitOptions], str]
    assign: Assigner | None = None


def _by_event_strategy(
    assign: Assigner,
    required: Callable[[SplitOptions], dict[str, bool]],
    describe: Callable[[SplitOptions], str],
) -> SplitStrategy:
    return SplitStrategy(_by_event(assign), required, describe, assign)


#: Split strategies by name (see the module docstring).
STRATEGIES: Final[Registry[SplitStrategy]] = Registry("split strategy")
STRATEGIES.register("random")(_by_event_strategy(split_random, _random_required, _random_describe))
STRATEGIES.register("date")(_by_event_strategy(split_by_date, _date_required, _date_describe))
STRATEGIES.register("seed_catalog")(
    _by_event_strategy(split_seed_catalog, _seed_catalog_required, _seed_catalog_describe)
)
STRATEGIES.register("window_list")(SplitStrategy(_cut_lists, _none_required, _lists_describe))
STRATEGIES.register("manifest")(SplitStrategy(_cut_manifest, _none_required, _manifest_describe))


def _check_required(
    counts: pd.Series, strategy: str, method: SplitStrategy, opts: SplitOptions, n: int
) -> None:
    asked = method.required(opts)
    for split in SPLITS:
        if asked[split] and counts.get(split, 0) == 0:
            raise StormFusionError(
                f"split {split!r} is empty with strategy {strategy!r} "
                f"({n} events; {method.describe(opts)}): "
                "change the fractions or cut dates, or select more events"
            )


def assign_splits(events: pd.DataFrame, strategy: str, opts: SplitOptions) -> pd.Series:
    """Split label per event id, in index order; every split that is asked for is non-empty.

    Raises:
        StormFusionError: unknown strategy (listing the valid ones), a strategy that picks
            windows rather than events, bad options or an empty split.
    """
    method = STRATEGIES.get(strategy)
    if method.assign is None:
        raise StormFusionError(
            f"split strategy {strategy!r} picks windows, not whole events: use cut_windows"
        )
    labels = method.assign(events, opts).reindex(events["id"].astype(str).to_numpy())
    _check_required(labels.value_counts(), strategy, method, opts, len(events))
    return labels


def cut_windows(
    events: pd.DataFrame, strategy: str, opts: SplitOptions, spec: WindowSpec
) -> pd.DataFrame:
    """The windows table of ``events`` split by ``strategy``; asked-for splits non-empty."""
    method = STRATEGIES.get(strategy)
    windows = method.cut(events, opts, spec)
    per_event = windows.drop_duplicates("event_id")["split"].value_counts()
    _check_required(per_event, strategy, method, opts, len(events))
    return check_windows(windows, f"{strategy} split")


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


def _data_root(events_csv: str | os.PathLike[str]) -> str | None:
    """The raw data root ``events.json`` (beside the index) records, if any."""
    meta_path = Path(events_csv).with_suffix(".json")
    if not meta_path.is_file():
        return None
    try:
        root = json.loads(meta_path.read_text(encoding="utf-8")).get("data_root")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise StormFusionError(f"{meta_path}: not a readable events.json: {exc}") from None
    return str(root) if root else None


def run_split(
    events_csv: str | os.PathLike[str],
    out: str | os.PathLike[str],
    manifest_json: str | os.PathLike[str],
    strategy: str,
    opts: SplitOptions,
    spec: WindowSpec,
) -> dict[str, Any]:
    """The split step: cut the windows, write ``windows.csv`` and the manifest beside it.

    Everything is computed and checked before anything is written; each file is written
    atomically (see :mod:`stormfusion.data.window_manifest` for the manifest).

    Returns:
        The manifest's JSON (``digest``, ``strategy``, ``counts``, ...).
    """
    from stormfusion.data.window_manifest import (
        manifest_csv_bytes,
        manifest_meta,
        manifest_paths,
        manifest_table,
        with_source_indices,
        write_split_outputs,
    )

    events = with_source_indices(read_event_index(events_csv), _data_root(events_csv))
    windows = cut_windows(events, strategy, opts, spec)
    table = manifest_table(events, windows, spec)
    csv_path = manifest_paths(manifest_json)[0]
    meta = manifest_meta(table, manifest_csv_bytes(table), csv_path.name, strategy, opts, spec)
    write_split_outputs(windows, table, meta, out, manifest_json)
    logger.info(
        "%s split of %d events: %s (%d in, %d out, stride %d) -> %s; manifest digest %s",
        strategy,
        len(events),
        ", ".join(
            f"{s} {c['events']} events / {c['windows']} windows" for s, c in meta["counts"].items()
        ),
        spec.input_frames,
        spec.output_frames,
        spec.stride,
        Path(out),
        meta["digest"],
    )
    return meta


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
