"""Benchmark the Zarr archive: layouts, conversion speed, window reads and the loader.

Run: ``python -m benchmarks.bench_archive [--events 10] [--workdir DIR]``.

On a synthetic twin at image size 384 (VIL 384, IR 192, lightning 48, as real SEVIR):

1. layout sweep (VIL): store size, conversion MB/s and window reads for candidate chunk
   lengths along time and compressors, for the training access pattern "one window of one
   event" (seed windows: 18 frames, sevir windows: 25 frames);
2. conversion of every modality with the chosen layout against a raw h5py read of the same
   bytes in the same run (goal: >= 0.5x);
3. training windows per second, all four modalities, from the Zarr stores against the same
   windows read straight from the HDF5 files with h5py (goal: >= 3x), with warm page
   cache and cold (each file's cached pages dropped with posix_fadvise before each pass);
4. the loader (SevirWindowDataset at 384 through a DataLoader) at 0 and 2 workers against
   the window reader reading exactly the same frames (goal: >= 0.5x); prints lines
   ``loader/reader <ratio>x at <n> workers``. ``--sections loader`` builds the twin and
   the stores it needs on its own.

Every number is a ratio against a yardstick measured in the same run.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch
import zarr
from torch.utils.data import DataLoader

from stormfusion.data.chunks import WindowReader
from stormfusion.data.convert import DEFAULT_LAYOUT, StoreLayout, convert_modality
from stormfusion.data.dataset import SevirWindowDataset, collate_windows
from stormfusion.data.event_index import EventSource, event_sources, raw_file, read_event_index
from stormfusion.data.hdf5 import grid_lightning
from stormfusion.data.selection import SelectionOptions, run_selection
from stormfusion.data.sevir import MODALITIES, STUDY_MODALITIES
from stormfusion.data.splits import PRESETS, SplitOptions, assign_splits, make_windows
from stormfusion.data.synthetic import synthesize_archive
from stormfusion.io import remove_path

CANDIDATES = (
    StoreLayout(1, "blosc-lz4"),
    StoreLayout(7, "blosc-lz4"),
    StoreLayout(13, "blosc-lz4"),
    StoreLayout(49, "blosc-lz4"),
    StoreLayout(7, "zstd1"),
    StoreLayout(7, "zstd3"),
    StoreLayout(7, "blosc-zstd1"),
    StoreLayout(7, "none"),
    StoreLayout(7, "blosc-lz4", shard=True),
)


def evict(paths: Iterable[Path]) -> None:
    """Drop the page-cache pages of these files (only ours: posix_fadvise DONTNEED)."""
    for path in paths:
        for f in [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]:
            fd = os.open(f, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def best_of(
    fn: Callable[[], object], repeats: int, before: Callable[[], None] | None = None
) -> float:
    """Fewest seconds of ``repeats`` calls (``before`` runs untimed before each).

    The minimum, not the mean: on a shared machine every disturbance only adds time.
    """
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def cpu_of(
    fn: Callable[[], object], repeats: int, before: Callable[[], None] | None = None
) -> float:
    """Fewest CPU seconds of this process over ``repeats`` calls (all threads summed)."""
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def build_twin(workdir: Path, n_events: int, image_size: int = 384) -> Path:
    """A synthetic twin of ``n_events`` storm events under ``workdir`` and its event index."""
    root = workdir / "raw"
    events = workdir / "events.csv"
    if not events.exists():
        synthesize_archive(
            root, n_storm=n_events, n_random=0, image_size=image_size, year=2019, seed=0
        )
        run_selection(
            root / "CATALOG.csv",
            SelectionOptions(),
            events,
            workdir / "events.json",
            data_root=root,
        )
    return events


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------- readers


def h5_window(root: Path, modality: str, src: EventSource, start: int, stop: int) -> np.ndarray:
    """A window straight from the HDF5 file: (T, n, n), as a loader without Zarr would."""
    path = raw_file(root, src.file)
    with h5py.File(path, "r") as f:
        if MODALITIES[modality].raster:
            return np.ascontiguousarray(
                np.moveaxis(f[modality][src.index, :, :, start:stop], -1, 0)
            )
        flashes = np.asarray(f[src.event_id][()], dtype=np.float64).reshape(-1, 5)
    return np.ascontiguousarray(np.moveaxis(grid_lightning(flashes, src.size), -1, 0)[start:stop])


def read_windows_h5(
    root: Path, sources: dict[str, list[EventSource]], windows: list[tuple[int, int, int]]
) -> int:
    nbytes = 0
    for row, start, stop in windows:
        for m, srcs in sources.items():
            nbytes += h5_window(root, m, srcs[row], start, stop).nbytes
    return nbytes


def read_windows_zarr(stores: dict[str, zarr.Array], windows: list[tuple[int, int, int]]) -> int:
    """Windows through zarr-python's own indexing."""
    nbytes = 0
    for row, start, stop in windows:
        for arr in stores.values():
            nbytes += np.asarray(arr[row, start:stop]).nbytes
    return nbytes


def read_windows_chunks(stores: dict[str, zarr.Array], windows: list[tuple[int, int, int]]) -> int:
    """Windows through the loader's direct chunk reader."""
    readers = [WindowReader(arr) for arr in stores.values()]
    nbytes = 0
    for row, start, stop in windows:
        for reader in readers:
            nbytes += reader.read(row, start, stop).nbytes
    return nbytes


def raw_h5_read(root: Path, modality: str, sources: list[EventSource]) -> int:
    """The yardstick of conversion: every event's stored bytes read with h5py."""
    nbytes = 0
    for src in sources:
        with h5py.File(raw_file(root, src.file), "r") as f:
            data = f[modality][src.index] if MODALITIES[modality].raster else f[src.event_id][()]
            nbytes += np.asarray(data).nbytes
    return nbytes


# ----------------------------------------------------------------------------- sections


def window_list(n_events: int, preset: str) -> list[tuple[int, int, int]]:
    spec = PRESETS[preset]
    length = spec.input_frames + spec.output_frames
    return [(e, s, s + length) for e in range(n_events) for s in spec.starts()]


def layout_sweep(events: Path, root: Path, workdir: Path, repeats: int) -> pd.DataFrame:
    index = read_event_index(events)
    n = len(index)
    rows = []
    raw_bytes = n * 384 * 384 * 49
    for layout in CANDIDATES:
        out = workdir / "sweep" / "vil.zarr"
        remove_path(out)
        seconds = best_of(
            lambda layout=layout, out=out: convert_modality(
                events, root, "vil", out, verify_events=0, workers=2, layout=layout
            ),
            1,
        )
        arr = zarr.open_array(out / "vil", mode="r")
        row = {
            "layout": layout.describe(),
            "stored_MB": du(out) / 1e6,
            "ratio": raw_bytes / du(out),
            "convert_MB_s": raw_bytes / 1e6 / seconds,
        }
        for preset in ("seed", "sevir"):
            wins = window_list(n, preset)
            for name, read in (("zarr", read_windows_zarr), ("chunks", read_windows_chunks)):
                stores = {"vil": arr}
                warm = best_of(lambda w=wins, r=read, s=stores: r(s, w), repeats)
                cold = best_of(
                    lambda w=wins, r=read, s=stores: r(s, w),
                    repeats,
                    before=lambda o=out: evict([o]),
                )
                row[f"{preset}_{name}_warm"] = len(wins) / warm
                row[f"{preset}_{name}_cold"] = len(wins) / cold
        rows.append(row)
    return pd.DataFrame(rows)


def conversion(events: Path, root: Path, workdir: Path, repeats: int) -> pd.DataFrame:
    """Conversion MB/s against h5py reading the same events, warm and cold page cache.

    Each conversion writes a fresh store (replacing a store is not per-byte work). Cold:
    the HDF5 files' cached pages are dropped before every read and every conversion.
    """
    index = read_event_index(events)
    rows = []
    for m in STUDY_MODALITIES:
        sources = event_sources(index, m)
        files = sorted({raw_file(root, s.file) for s in sources})
        out = workdir / "zarr" / f"{m}.zarr"
        nbytes = raw_h5_read(root, m, sources)
        for cache in ("warm", "cold"):

            def fresh(out: Path = out, files: list[Path] = files, cache: str = cache) -> None:
                remove_path(out)
                if cache == "cold":
                    evict(files)

            def read_only(files: list[Path] = files, cache: str = cache) -> None:
                if cache == "cold":
                    evict(files)

            raw = best_of(lambda m=m, s=sources: raw_h5_read(root, m, s), repeats, read_only)
            row: dict[str, object] = {
                "modality": m,
                "cache": cache,
                "MB": nbytes / 1e6,
                "h5py_MB_s": nbytes / 1e6 / raw,
            }
            for workers in (1, 2):
                conv = best_of(
                    lambda m=m, out=out, w=workers: convert_modality(
                        events, root, m, out, verify_events=0, workers=w
                    ),
                    repeats,
                    fresh,
                )
                row[f"convert_{workers}w_MB_s"] = nbytes / 1e6 / conv
                row[f"ratio_{workers}w"] = raw / conv
            if cache == "warm":
                raw_cpu = cpu_of(lambda m=m, s=sources: raw_h5_read(root, m, s), repeats)
                conv_cpu = cpu_of(
                    lambda m=m, out=out: convert_modality(
                        events, root, m, out, verify_events=0, workers=1
                    ),
                    repeats,
                    fresh,
                )
                row["ratio_cpu_1w"] = raw_cpu / conv_cpu
            rows.append(row)
    return pd.DataFrame(rows)


def windows(events: Path, root: Path, workdir: Path, repeats: int) -> pd.DataFrame:
    index = read_event_index(events)
    sources = {m: event_sources(index, m) for m in STUDY_MODALITIES}
    stores = {
        m: zarr.open_array(workdir / "zarr" / f"{m}.zarr" / m, mode="r") for m in STUDY_MODALITIES
    }
    h5_files = sorted({raw_file(root, s.file) for srcs in sources.values() for s in srcs})
    rows = []
    for preset in ("seed", "sevir"):
        wins = window_list(len(index), preset)
        for cache in ("warm", "cold"):
            before_h5 = (lambda: evict(h5_files)) if cache == "cold" else None
            before_zarr = (lambda: evict([workdir / "zarr"])) if cache == "cold" else None
            t_h5 = best_of(
                lambda wins=wins: read_windows_h5(root, sources, wins), repeats, before_h5
            )
            t_zarr = best_of(
                lambda wins=wins: read_windows_zarr(stores, wins), repeats, before_zarr
            )
            t_chunks = best_of(
                lambda wins=wins: read_windows_chunks(stores, wins), repeats, before_zarr
            )
            cpu_h5 = cpu_of(
                lambda wins=wins: read_windows_h5(root, sources, wins), repeats, before_h5
            )
            cpu_chunks = cpu_of(
                lambda wins=wins: read_windows_chunks(stores, wins), repeats, before_zarr
            )
            rows.append(
                {
                    "windows": preset,
                    "cache": cache,
                    "h5py_win_s": len(wins) / t_h5,
                    "zarr_indexing_win_s": len(wins) / t_zarr,
                    "loader_reader_win_s": len(wins) / t_chunks,
                    "ratio_indexing": t_h5 / t_zarr,
                    "ratio_reader": t_h5 / t_chunks,
                    "ratio_reader_cpu": cpu_h5 / cpu_chunks,
                }
            )
    return pd.DataFrame(rows)


def ensure_stores(events: Path, root: Path, workdir: Path) -> Path:
    """The four stores with the default layout under ``workdir/zarr`` (built if absent)."""
    zarr_dir = workdir / "zarr"
    for m in STUDY_MODALITIES:
        if not (zarr_dir / f"{m}.zarr").is_dir():
            convert_modality(events, root, m, zarr_dir / f"{m}.zarr", verify_events=0)
    return zarr_dir


def read_loader_windows(ds: SevirWindowDataset) -> int:
    """The yardstick: exactly the frames the loader reads, through the window reader alone
    (VIL inputs and target, the other modalities' inputs), in table order."""
    readers = {m: WindowReader(zarr.open_array(ds.stores[m].path / m, mode="r")) for m in ds.stores}
    rows = {m: ds._rows[m] for m in ds.stores}
    t_in, t_out = ds.input_frames, ds.output_frames
    nbytes = 0
    for i in range(len(ds)):
        start = ds.window_start(i)
        for m, reader in readers.items():
            row = int(rows[m][i])
            if row >= 0:
                stop = start + t_in + (t_out if m == "vil" else 0)
                nbytes += reader.read(row, start, stop).nbytes
    return nbytes


def loader(events: Path, root: Path, workdir: Path, repeats: int) -> pd.DataFrame:
    """The loader's windows/s (DataLoader, batch 4, shuffled, augmented, seed windows at
    384) against the window reader reading the same windows in the same run."""
    zarr_dir = ensure_stores(events, root, workdir)
    index = read_event_index(events)
    labels = assign_splits(index, "random", SplitOptions(val_fraction=0.0))
    table = make_windows(index, labels, PRESETS["seed"])
    ds = SevirWindowDataset(zarr_dir, table, "train", image_size=384, augment=True)
    # one torch thread in the main process, as in each DataLoader worker: like for like
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    # persistent workers (as training uses them), so that a pass is not a start-up
    loaders = {
        workers: DataLoader(
            ds,
            batch_size=4,
            num_workers=workers,
            shuffle=True,
            persistent_workers=workers > 0,
            collate_fn=collate_windows,
        )
        for workers in (0, 2)
    }
    # interleaved passes, best of each: on a shared machine load only ever adds time
    passes: dict[str, list[float]] = {"reader": [], **{str(w): [] for w in loaders}}
    for _ in range(repeats + 1):  # the first round warms the workers up
        passes["reader"].append(best_of(lambda: read_loader_windows(ds), 1))
        for workers, dl in loaders.items():
            passes[str(workers)].append(best_of(lambda dl=dl: sum(1 for _ in dl), 1))
    torch.set_num_threads(threads)
    reader = min(passes["reader"])
    return pd.DataFrame(
        [
            {
                "num_workers": workers,
                "windows": len(ds),
                "reader_windows_s": len(ds) / reader,
                "loader_windows_s": len(ds) / min(passes[str(workers)][1:]),
                "loader_over_reader": reader / min(passes[str(workers)][1:]),
            }
            for workers in loaders
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10, help="storm events to synthesize")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--sections", nargs="+", default=["layouts", "conversion", "windows", "loader"]
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_archive_"))
    workdir.mkdir(parents=True, exist_ok=True)
    events = build_twin(workdir, args.events)
    root = workdir / "raw"
    print(f"twin: {len(read_event_index(events))} events at 384, workdir {workdir}")
    print(f"default layout: {DEFAULT_LAYOUT.describe()}")
    pd.set_option("display.width", 200)
    pd.set_option("display.float_format", lambda v: f"{v:.2f}")
    if "layouts" in args.sections:
        print("\n## layout sweep (vil; windows/s read with zarr, one modality)")
        print(layout_sweep(events, root, workdir, args.repeats).to_string(index=False))
    if "conversion" in args.sections or "windows" in args.sections:
        print("\n## conversion vs raw h5py read of the same bytes (goal ratio >= 0.5)")
        print(conversion(events, root, workdir, args.repeats).to_string(index=False))
    if "windows" in args.sections:
        print("\n## windows/s, 4 modalities: zarr vs straight from HDF5 (goal ratio >= 3)")
        print(windows(events, root, workdir, args.repeats).to_string(index=False))
    if "loader" in args.sections:
        print("\n## loader: SevirWindowDataset at 384, augment, batch 4 (seed windows)")
        table = loader(events, root, workdir, args.repeats)
        print(table.to_string(index=False))
        for row in table.itertuples():
            print(
                f"loader/reader {row.loader_over_reader:.2f}x at {row.num_workers} workers "
                f"(goal >= 0.5x): loader {row.loader_windows_s:.1f} windows/s, "
                f"reader {row.reader_windows_s:.1f} windows/s"
            )


if __name__ == "__main__":
    main()
