"""Benchmark the synthetic twin: MB written per second and events per second.

Run: ``python -m benchmarks.bench_synthesize [--workdir DIR]``.

Two archives: the demo twin (24 storm + 4 random events at image size 64, config/demo.yaml)
and a full-size twin (4 storm events at 384, the real archive's grid). The yardstick, measured
in the same run, is writing the same arrays with the same HDF5 writer without simulating them
(``hdf5.write_raster_file`` on pre-built arrays of the archive's shapes): the ratio says what
the weather simulation costs on top of the I/O.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from stormfusion.data import hdf5
from stormfusion.data.synthetic import synthesize_archive

CASES = (("demo twin (S=64)", 24, 4, 64), ("full-size twin (S=384)", 4, 0, 384))


def _write_only(root: Path, n_events: int, size: int) -> float:
    """Seconds to write n_events of VIL + IR069 + IR107 arrays (random bytes) as HDF5."""
    rng = np.random.default_rng(0)
    vil = rng.integers(0, 255, size=(n_events, size, size, 49), dtype=np.uint8)
    ir = rng.integers(-7000, 2500, size=(n_events, size // 2, size // 2, 49), dtype=np.int16)
    ids = [f"S{i}" for i in range(n_events)]
    start = time.perf_counter()
    hdf5.write_raster_file(root / "vil.h5", "vil", ids, vil)
    hdf5.write_raster_file(root / "ir069.h5", "ir069", ids, ir)
    hdf5.write_raster_file(root / "ir107.h5", "ir107", ids, ir)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        root = Path(tmp)
        print(
            "| archive | events | MB written | seconds | MB/s | events/s | "
            "write-only MB/s (yardstick) | synth / write-only time |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for name, n_storm, n_random, size in CASES:
            best = float("inf")
            manifest: dict = {}
            for r in range(args.repeats):
                out = root / f"{size}-{r}"
                start = time.perf_counter()
                manifest = synthesize_archive(out, n_storm, n_random, size, 2019, seed=r)
                best = min(best, time.perf_counter() - start)
            mb = sum(f["size"] for f in manifest["files"]) / 1e6
            n = n_storm + n_random
            io = min(_write_only(root, n, size) for _ in range(args.repeats))
            io_mb = (n * size * size * 49 + 2 * n * (size // 2) ** 2 * 49 * 2) / 1e6
            print(
                f"| {name} | {n} | {mb:.1f} | {best:.2f} | {mb / best:.1f} | {n / best:.1f} "
                f"| {io_mb / io:.0f} | {best / io:.0f}x |"
            )


if __name__ == "__main__":
    main()
