"""Benchmark ``stormfusion download``: throughput from a loopback S3 at concurrency 1 vs 8.

Run: ``python -m benchmarks.bench_download [--events 6] [--workdir DIR]``.

A moto S3 server runs in its own process on 127.0.0.1 and serves a full-size synthetic twin
(image size 384: 7.2 MB of VIL and 3.6 MB of each IR band per event), uploaded public-read in
8 MiB parts (multipart ETags, as on the real bucket). Every file the event index names is
downloaded anonymously into an empty directory, verified (size + ETag) and renamed, at
concurrency 1 and 8 (best of ``--repeats``). Yardsticks in the same run: the ratio of the
two, and a local copy of the same files (``shutil.copyfile``), the ceiling of the disk.

Loopback moto is CPU-bound (a Python server on the same 2 cores), so a second pass goes
through a relay that limits every TCP connection to ``--link-mbps`` MB/s, as a long-haul link
to the bucket does: there the transfer manager's parallel connections should pay off.

Events only (``--events-only``): a second twin of ``--total-events`` storm events at full
size (VIL, IR and lightning; the VIL and IR files of 2018 H2, 2019 H1 and 2019 H2), and
``--selected`` events spread over those files. Bytes and wall time of fetching them with
``--events-only`` (range requests into subset files) against the whole files they live in
(the yardstick, same run, same server), on loopback and through the ``--link-mbps`` relay.
Also the cost of reading a file's HDF5 layout: the ranged reader of ``stormfusion.data.subset``
(h5py on a boto3 range-request file) at three block sizes, and fsspec's HTTP file (h5py on
aiohttp range requests, its default 5 MiB read-ahead) as the alternative.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from stormfusion.data.download import (
    S3Options,
    download_events,
    download_keys,
    event_keys,
    head_object,
    make_client,
)
from stormfusion.data.selection import SelectionOptions, run_selection
from stormfusion.data.subset import RangedObject, Traffic, download_events_only, read_layout
from stormfusion.data.synthetic import synthesize_archive
from stormfusion.testing import ThrottledRelay, free_port, loopback_client, upload_public

MIB = 1 << 20


def _timed(endpoint: str, keys: Sequence[str], root: Path, repeats: int) -> dict[int, float]:
    best: dict[int, float] = {}
    for r in range(repeats):
        for conc in (1, 8):
            out = root / f"dl{conc}-{r}"
            opts = S3Options(bucket="sevir", endpoint_url=endpoint, concurrency=conc, retries=0)
            start = time.perf_counter()
            entries = download_keys(opts, keys, out)
            seconds = time.perf_counter() - start
            if any(e["status"] != "downloaded" for e in entries):
                raise RuntimeError("a file was skipped: the output was not empty")
            best[conc] = min(best.get(conc, float("inf")), seconds)
            shutil.rmtree(out)
    return best


def _wait(endpoint: str, timeout: float = 30.0) -> None:
    client = loopback_client(endpoint)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.list_buckets()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _events_only(endpoint: str, root: Path, args: argparse.Namespace) -> list[str]:
    """The events-only rows of the report (markdown lines)."""
    src = root / "full"
    synthesize_archive(src, n_storm=args.total_events, n_random=0, image_size=384, seed=1)
    opts = SelectionOptions(require_complete=False, modalities=["vil", "ir069", "ir107", "lght"])
    run_selection(src / "CATALOG.csv", opts, root / "all.csv", root / "all.json")
    index = pd.read_csv(root / "all.csv", dtype={"id": str})
    picks = index.iloc[np.linspace(0, len(index) - 1, args.selected).round().astype(int)]
    picks.to_csv(root / "plan.csv", index=False)
    shutil.copyfile(root / "all.json", root / "plan.json")
    keys = event_keys(root / "plan.csv")
    client = loopback_client(endpoint)
    client.create_bucket(Bucket="full")
    upload_public(client, "full", {k: src / k for k in [*keys, "CATALOG.csv"]}, 8 * MIB)
    lines = [
        f"{args.selected} of {len(index)} events (full size), files: {len(keys)}",
        "| path | mode | MB transferred | seconds | bytes vs whole | time vs whole |",
        "|---|---|---|---|---|---|",
    ]
    relay = ThrottledRelay(("127.0.0.1", int(endpoint.rsplit(":", 1)[1])), args.link_mbps * 1e6)
    threading.Thread(target=relay.serve_forever, daemon=True).start()
    try:
        for name, url in (
            ("loopback", endpoint),
            (
                f"{args.link_mbps:g} MB/s per connection",
                f"http://127.0.0.1:{relay.server_address[1]}",
            ),
        ):
            s3 = S3Options(bucket="full", endpoint_url=url, region="us-east-1", retries=0)
            start = time.perf_counter()
            whole = download_events(s3, root / "plan.csv", root / f"whole-{name}")
            whole_s = time.perf_counter() - start
            start = time.perf_counter()
            sub = download_events_only(
                s3, root / "plan.csv", src / "CATALOG.csv", root / f"sub-{name}"
            )
            sub_s = time.perf_counter() - start
            wb, sb = whole["downloaded_bytes"], sub["downloaded_bytes"]
            lines.append(
                f"| {name} | whole files (yardstick) | {wb / 1e6:.1f} | {whole_s:.2f} | 1 | 1 |"
            )
            lines.append(
                f"| {name} | events only | {sb / 1e6:.1f} | {sub_s:.2f} | {sb / wb:.3f} | "
                f"{sub_s / whole_s:.3f} |"
            )
    finally:
        relay.shutdown()
        relay.server_close()
    return [*lines, "", *_layout_costs(endpoint, keys)]


def _layout_costs(endpoint: str, keys: list[str]) -> list[str]:
    """Requests, bytes and time to read one VIL file's HDF5 layout, by reader."""
    import fsspec

    key = next(k for k in keys if "/vil/" in k)
    s3 = S3Options(bucket="full", endpoint_url=endpoint, region="us-east-1")
    client = make_client(s3)
    obj = head_object(client, s3, key)
    lines = [
        f"HDF5 layout of {key} ({obj.size / 1e6:.0f} MB)",
        "| reader | block | requests | KB read | seconds |",
        "|---|---|---|---|---|",
    ]
    for block in (8 * 1024, 64 * 1024, MIB):
        traffic = Traffic()
        start = time.perf_counter()
        read_layout(RangedObject(client, s3, obj, traffic, block=block), "vil", key)
        lines.append(
            f"| boto3 ranged reader (ours) | {block // 1024} KiB | {traffic.requests} | "
            f"{traffic.bytes / 1e3:.0f} | {time.perf_counter() - start:.3f} |"
        )
    start = time.perf_counter()
    with fsspec.open(f"{endpoint}/full/{key}", "rb") as fh:
        read_layout(fh, "vil", key)
    lines.append(f"| fsspec HTTP file | 5 MiB read-ahead | | | {time.perf_counter() - start:.3f} |")
    return lines


@contextlib.contextmanager
def _moto_process() -> Iterator[tuple[str, int]]:
    """A moto S3 server in its own process (so that it does not share the timed client's
    interpreter); yields (endpoint, port)."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait(endpoint)
        yield endpoint, port
    finally:
        server.terminate()
        server.wait(timeout=10)


def _copy_seconds(src: Path, keys: Sequence[str], root: Path, repeats: int) -> float:
    """The yardstick: best time to copy the same files on the local disk."""
    best = float("inf")
    for r in range(repeats):
        dst = root / f"copy{r}"
        start = time.perf_counter()
        for key in keys:
            (dst / key).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / key, dst / key)
        best = min(best, time.perf_counter() - start)
        shutil.rmtree(dst)
    return best


def _whole_files(endpoint: str, port: int, root: Path, args: argparse.Namespace) -> list[str]:
    """The whole-file rows of the report (markdown lines): loopback at concurrency 1 and
    8 against a local copy, then through a throttled link."""
    src = root / "src"
    synthesize_archive(src, n_storm=args.events, n_random=0, image_size=384, seed=0)
    selection = SelectionOptions(require_complete=False)
    run_selection(src / "CATALOG.csv", selection, root / "events.csv", root / "events.json")
    keys = event_keys(root / "events.csv")
    client = loopback_client(endpoint)
    client.create_bucket(Bucket="sevir")
    upload_public(client, "sevir", {key: src / key for key in keys}, 8 * MIB)
    total = sum((src / k).stat().st_size for k in keys) / 1e6
    copy_s = _copy_seconds(src, keys, root, args.repeats)
    best = _timed(endpoint, keys, root, args.repeats)
    relay = ThrottledRelay(("127.0.0.1", port), args.link_mbps * 1e6)
    threading.Thread(target=relay.serve_forever, daemon=True).start()
    try:
        link_keys = [k for k in keys if "/vil/" in k or "/lght/" in k]
        link_total = sum((src / k).stat().st_size for k in link_keys) / 1e6
        slow = _timed(f"http://127.0.0.1:{relay.server_address[1]}", link_keys, root, 1)
    finally:
        relay.shutdown()
        relay.server_close()
    lines = [
        f"{len(keys)} files, {total:.1f} MB (twin at 384, {args.events} storm events)",
        "| path | concurrency | seconds | MB/s | vs concurrency 1 | vs local copy |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| loopback | {conc} | {best[conc]:.2f} | {total / best[conc]:.0f} | "
        f"{best[1] / best[conc]:.2f}x | {copy_s / best[conc]:.3f}x |"
        for conc in (1, 8)
    ]
    lines.append(f"| local copy (yardstick) | | {copy_s:.2f} | {total / copy_s:.0f} | | 1x |")
    lines += [
        f"| {args.link_mbps:g} MB/s per connection ({link_total:.1f} MB, vil + lght) "
        f"| {conc} | {slow[conc]:.2f} | {link_total / slow[conc]:.1f} | "
        f"{slow[1] / slow[conc]:.2f}x | |"
        for conc in (1, 8)
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--link-mbps", type=float, default=4.0)
    parser.add_argument("--total-events", type=int, default=40)
    parser.add_argument("--selected", type=int, default=3)
    parser.add_argument(
        "--only-events-only", action="store_true", help="run only the events-only section"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with _moto_process() as (endpoint, port), tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        root = Path(tmp)
        print("\n".join(_events_only(endpoint, root / "events-only", args)))
        if not args.only_events_only:
            print("\n".join(_whole_files(endpoint, port, root, args)))


if __name__ == "__main__":
    main()
