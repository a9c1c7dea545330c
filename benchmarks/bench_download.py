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
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import boto3

from stormfusion.data.download import S3Options, download_keys, event_keys
from stormfusion.data.selection import SelectionOptions, run_selection
from stormfusion.data.synthetic import synthesize_archive
from stormfusion.testing import ThrottledRelay, free_port, upload_public

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
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.list_buckets()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--link-mbps", type=float, default=4.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait(endpoint)
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            root = Path(tmp)
            src = root / "src"
            synthesize_archive(src, n_storm=args.events, n_random=0, image_size=384, seed=0)
            run_selection(
                src / "CATALOG.csv",
                SelectionOptions(require_complete=False),
                root / "events.csv",
                root / "events.json",
            )
            keys = event_keys(root / "events.csv")
            client = boto3.client(
                "s3",
                endpoint_url=endpoint,
                region_name="us-east-1",
                aws_access_key_id="x",
                aws_secret_access_key="x",
            )
            client.create_bucket(Bucket="sevir")
            upload_public(client, "sevir", {key: src / key for key in keys}, 8 * MIB)
            total = sum((src / k).stat().st_size for k in keys) / 1e6

            copy_s = float("inf")
            for r in range(args.repeats):
                dst = root / f"copy{r}"
                start = time.perf_counter()
                for key in keys:
                    (dst / key).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src / key, dst / key)
                copy_s = min(copy_s, time.perf_counter() - start)
                shutil.rmtree(dst)

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
        print(f"{len(keys)} files, {total:.1f} MB (twin at 384, {args.events} storm events)")
        print("| path | concurrency | seconds | MB/s | vs concurrency 1 | vs local copy |")
        print("|---|---|---|---|---|---|")
        for conc in (1, 8):
            print(
                f"| loopback | {conc} | {best[conc]:.2f} | {total / best[conc]:.0f} | "
                f"{best[1] / best[conc]:.2f}x | {copy_s / best[conc]:.3f}x |"
            )
        print(f"| local copy (yardstick) | | {copy_s:.2f} | {total / copy_s:.0f} | | 1x |")
        for conc in (1, 8):
            print(
                f"| {args.link_mbps:g} MB/s per connection ({link_total:.1f} MB, vil + lght) "
                f"| {conc} | {slow[conc]:.2f} | {link_total / slow[conc]:.1f} | "
                f"{slow[1] / slow[conc]:.2f}x | |"
            )
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
