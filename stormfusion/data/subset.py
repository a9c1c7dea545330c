"""Events-only download: fetch just the selected events' bytes of SEVIR's raster files.

SEVIR raster files are plain HDF5 whose image dataset is stored contiguously without
filters, so event ``i`` of a file is the byte range ``[offset + i * E, offset + (i + 1) * E)``
with ``E = H * W * 49 * itemsize`` (7,225,344 bytes for a 384 x 384 VIL event). For every
raster file the selected events need:

1. **Layout.** h5py opens the object through :class:`RangedObject`, a read-only file-like
   object whose reads are HTTP range requests (64 KiB blocks, cached), and reports the image
   dataset's shape, dtype, filters, storage layout and data offset, and the ``id`` dataset.
   Only the metadata blocks are read: a few hundred KiB of a multi-GB file. A dataset that
   is chunked one event per chunk without filters is read the same way (each chunk's offset
   comes from the chunk index); any other layout (compressed, or chunks across events) is an
   error naming the key: use whole-file download (``s3.events_only: false``) for it.
2. **Events.** Each selected event is one range request for exactly its bytes, staged as
   ``<index>.bin`` in a staging folder beside the target (written to a temporary name and
   renamed), so a killed run keeps every finished event.
3. **Subset file.** A SEVIR-layout HDF5 file at the same path under the output root: ``id``
   (the source's dtype) and the image dataset (N, H, W, 49), contiguous, holding only the
   selected events in their source order, written to a temporary name and renamed. Its root
   attribute ``stormfusion_subset`` (JSON) records the source key, size and ETag and, per
   event, its id, source index and byte range. Reruns rebuild the same bytes.
4. **Catalog overlay.** ``<out>/CATALOG.csv`` holds the source catalog's rows of the selected
   events (the raster rows with ``file_index`` rewritten to the position in the subset file,
   lightning rows unchanged), so select-events, convert and every later step run unchanged.

Integrity: every range request carries ``If-Match: "<ETag>"`` (the ETag of the HEAD before
the file's first request): an object that changes meanwhile is an error (HTTP 412), never a
mixed file; an answer whose length is not the range asked for is an error. Lightning files
are fetched whole by :func:`stormfusion.data.download.download_keys`.
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import botocore.exceptions
import h5py
import numpy as np
import pandas as pd

from stormfusion.data.catalog import DATA_PREFIX, check_file_name
from stormfusion.data.download import (
    CATALOG_KEY,
    RemoteObject,
    S3Options,
    _describe,
    _State,
    download_keys,
    head_object,
    key_path,
    make_client,
    resolve_region,
    wanted_modalities,
)
from stormfusion.data.event_index import event_sources, modalities_in_index, read_event_index
from stormfusion.data.sevir import MODALITIES, N_FRAMES
from stormfusion.errors import StormFusionError
from stormfusion.io import atomic_path, remove_path, sha256_file, write_json_atomic

logger = logging.getLogger(__name__)

#: Root attribute of a subset file: its sources (JSON).
SUBSET_ATTR = "stormfusion_subset"
#: Block size of the metadata reads (bytes).
META_BLOCK = 64 * 1024
_STAGE_MARK = ".events-"


class ObjectChangedError(StormFusionError):
    """An object's ETag changed between requests (HTTP 412 on ``If-Match``)."""


@dataclass
class Traffic:
    """Bytes and requests of range reads (thread-safe counters)."""

    bytes: int = 0
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, n: int) -> None:
        with self.lock:
            self.bytes += n
            self.requests += 1


def get_range(
    client: Any, opts: S3Options, obj: RemoteObject, start: int, stop: int, traffic: Traffic
) -> bytes:
    """Bytes ``[start, stop)`` of ``obj``, pinned to its ETag with ``If-Match``.

    Raises:
        StormFusionError: the object changed (ETag mismatch), the answer has the wrong
            length, or the request failed (naming key and range).
    """
    url = f"s3://{opts.bucket}/{obj.key}"
    what = f"bytes {start}-{stop - 1}"
    try:
        resp = client.get_object(
            Bucket=opts.bucket,
            Key=obj.key,
            Range=f"bytes={start}-{stop - 1}",
            IfMatch=f'"{obj.etag}"',
        )
        data: bytes = resp["Body"].read()
    except botocore.exceptions.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("PreconditionFailed", "412"):
            raise ObjectChangedError(
                f"{url}: the object changed while it was read ({what}): its ETag is no longer "
                f"{obj.etag}; rerun to read the new version from the start"
            ) from None
        raise StormFusionError(f"{_describe(exc, opts, obj.key)} ({what})") from None
    except (botocore.exceptions.BotoCoreError, OSError) as exc:
        raise StormFusionError(f"{_describe(exc, opts, obj.key)} ({what})") from None
    traffic.add(len(data))
    if len(data) != stop - start:
        raise StormFusionError(
            f"{url}: range request for {what} answered with {len(data)} bytes, "
            f"expected {stop - start}"
        )
    return data


class RangedObject(io.RawIOBase):
    """A read-only, seekable file over an S3 object; reads are cached range requests.

    Reads are rounded out to ``block`` bytes (aligned) and blocks are kept, so h5py's many
    small metadata reads cost few requests.
    """

    def __init__(
        self,
        client: Any,
        opts: S3Options,
        obj: RemoteObject,
        traffic: Traffic,
        block: int = META_BLOCK,
    ) -> None:
        super().__init__()
        self.client, self.opts, self.obj, self.traffic = client, opts, obj, traffic
        self.block = block
        self.pos = 0
        self.blocks: dict[int, bytes] = {}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.obj.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def _block(self, n: int) -> bytes:
        if n not in self.blocks:
            start = n * self.block
            stop = min(start + self.block, self.obj.size)
            self.blocks[n] = get_range(self.client, self.opts, self.obj, start, stop, self.traffic)
        return self.blocks[n]

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self.obj.size - self.pos)
        if want <= 0:
            return 0
        done = 0
        while done < want:
            n, skip = divmod(self.pos + done, self.block)
            chunk = self._block(n)[skip : skip + want - done]
            view[done : done + len(chunk)] = chunk
            done += len(chunk)
        self.pos += done
        return done


@dataclass(frozen=True)
class RasterLayout:
    """Where each event of a raster file lies: ids, frame shape, dtype and byte offsets."""

    ids: list[str]
    id_dtype: np.dtype
    frame_shape: tuple[int, int, int]  # (H, W, 49)
    dtype: np.dtype
    offsets: list[int]  # byte offset of each event's contiguous block

    @property
    def event_bytes(self) -> int:
        h, w, t = self.frame_shape
        return h * w * t * self.dtype.itemsize


def read_layout(fileobj: Any, img_type: str, key: str) -> RasterLayout:
    """The layout of a raster file opened from ``fileobj`` (see the module docstring).

    Raises:
        StormFusionError: not HDF5, no ``id`` or image dataset, wrong rank or frames, or a
            layout that is not one contiguous unfiltered block per event.
    """
    try:
        f = h5py.File(fileobj, "r")
    except OSError as exc:
        raise StormFusionError(f"{key}: not a readable HDF5 file: {exc}") from None
    with f:
        for name in ("id", img_type):
            if name not in f:
                raise StormFusionError(f"{key}: no dataset {name!r}; found {sorted(f.keys())}")
        dset = f[img_type]
        if dset.ndim != 4 or dset.shape[3] != N_FRAMES:
            raise StormFusionError(
                f"{key}: dataset {img_type!r} has shape {dset.shape}, expected (N, H, W, 49)"
            )
        ids_raw = f["id"][()]
        ids = [x.decode("ascii") if isinstance(x, bytes) else str(x) for x in ids_raw]
        if len(ids) != dset.shape[0]:
            raise StormFusionError(f"{key}: {len(ids)} ids for {dset.shape[0]} events")
        return RasterLayout(
            ids, f["id"].dtype, tuple(dset.shape[1:]), dset.dtype, _offsets(dset, key)
        )


def _offsets(dset: h5py.Dataset, key: str) -> list[int]:
    """Byte offset of each event's block: contiguous, or one unfiltered chunk per event."""
    plist = dset.id.get_create_plist()
    n = dset.shape[0]
    event = int(np.prod(dset.shape[1:])) * dset.dtype.itemsize
    if plist.get_nfilters() > 0:
        filters = [plist.get_filter(i)[3].decode() for i in range(plist.get_nfilters())]
        raise StormFusionError(
            f"{key}: dataset {dset.name!r} is filtered ({', '.join(filters)}), not SEVIR's "
            "unfiltered layout: events cannot be read as byte ranges; download whole files "
            "(s3.events_only: false)"
        )
    layout = plist.get_layout()
    if layout == h5py.h5d.CONTIGUOUS:
        base = dset.id.get_offset()
        if base is None:
            raise StormFusionError(f"{key}: dataset {dset.name!r} has no storage allocated")
        return [int(base) + i * event for i in range(n)]
    if layout == h5py.h5d.CHUNKED and dset.chunks == (1, *dset.shape[1:]):
        infos = [dset.id.get_chunk_info_by_coord((i, 0, 0, 0)) for i in range(n)]
        return [int(info.byte_offset) for info in infos]
    raise StormFusionError(
        f"{key}: dataset {dset.name!r} is not stored contiguously (layout {layout}, chunks "
        f"{dset.chunks}): events cannot be read as byte ranges; download whole files "
        "(s3.events_only: false)"
    )


@dataclass(frozen=True)
class FilePlan:
    """One raster file of the bucket and the events wanted from it (source indexes)."""

    key: str
    img_type: str
    events: tuple[tuple[str, int], ...]  # (event id, source index), source order


def plan_subsets(events_csv: str | os.PathLike[str]) -> tuple[list[FilePlan], list[str]]:
    """Raster files (with their events) and lightning keys the event index needs for the
    selected modalities."""
    frame = read_event_index(events_csv)
    plans: list[FilePlan] = []
    whole: set[str] = set()
    wanted = wanted_modalities(events_csv)
    for modality in modalities_in_index(frame):
        if wanted is not None and modality not in wanted:
            continue
        by_file: dict[str, list[tuple[str, int]]] = {}
        for src in event_sources(frame, modality, where=events_csv):
            check_file_name(src.file, where=f"{events_csv}: column {modality}_file")
            if MODALITIES[modality].raster:
                by_file.setdefault(src.file, []).append((src.event_id, src.index))
            else:
                whole.add(f"{DATA_PREFIX}/{src.file}")
        for file, events in sorted(by_file.items()):
            ordered = tuple(sorted(set(events), key=lambda e: e[1]))
            plans.append(FilePlan(f"{DATA_PREFIX}/{file}", modality, ordered))
    if not plans and not whole:
        raise StormFusionError(f"{events_csv}: the event index names no files")
    return plans, sorted(whole)


def _subset_record(
    opts: S3Options, obj: RemoteObject, plan: FilePlan, layout: RasterLayout
) -> dict[str, Any]:
    """What a subset file records of its sources (its ``stormfusion_subset`` attribute)."""
    size = layout.event_bytes
    return {
        "bucket": opts.bucket,
        "source_key": obj.key,
        "source_etag": obj.etag,
        "source_size": obj.size,
        "img_type": plan.img_type,
        "event_bytes": size,
        "events": [
            {
                "id": eid,
                "source_index": idx,
                "start": layout.offsets[idx],
                "stop": layout.offsets[idx] + size,
            }
            for eid, idx in plan.events
        ],
    }


def read_subset_record(path: Path) -> dict[str, Any] | None:
    """The ``stormfusion_subset`` record of a local file; None if it is not a subset file."""
    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get(SUBSET_ATTR)
    except OSError:
        return None
    if raw is None:
        return None
    try:
        record = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _check_events(plan: FilePlan, layout: RasterLayout) -> None:
    for eid, idx in plan.events:
        if not 0 <= idx < len(layout.ids):
            raise StormFusionError(
                f"{plan.key}: event {eid}: index {idx} out of range for the "
                f"{len(layout.ids)} events of the file"
            )
        if layout.ids[idx] != eid:
            raise StormFusionError(
                f"{plan.key}: event {eid}: index {idx} holds event {layout.ids[idx]!r}"
            )


def _stage_events(
    client: Any,
    opts: S3Options,
    obj: RemoteObject,
    plan: FilePlan,
    layout: RasterLayout,
    stage: Path,
    traffic: Traffic,
) -> None:
    """Fetch every planned event not yet staged into ``stage/<index>.bin`` (atomically)."""
    stage.mkdir(parents=True, exist_ok=True)
    for stale in stage.glob(".*.tmp-*"):
        remove_path(stale)  # an event a killed run was writing
    size = layout.event_bytes

    def fetch(idx: int) -> None:
        target = stage / f"{idx}.bin"
        if target.is_file() and target.stat().st_size == size:
            return
        start = layout.offsets[idx]
        data = get_range(client, opts, obj, start, start + size, traffic)
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)

    with ThreadPoolExecutor(max_workers=opts.concurrency) as pool:
        for future in [pool.submit(fetch, idx) for _, idx in plan.events]:
            future.result()


def _write_subset(
    path: Path, plan: FilePlan, layout: RasterLayout, stage: Path, record: dict[str, Any]
) -> None:
    """Write the subset file (SEVIR layout, contiguous) from the staged events, atomically."""
    n = len(plan.events)
    ids = np.array([eid.encode("ascii") for eid, _ in plan.events], dtype=layout.id_dtype)
    with atomic_path(path) as tmp, h5py.File(tmp, "w", libver="earliest", track_order=False) as f:
        f.create_dataset("id", data=ids, track_times=False)
        dset = f.create_dataset(
            plan.img_type, shape=(n, *layout.frame_shape), dtype=layout.dtype, track_times=False
        )
        for j, (_, idx) in enumerate(plan.events):
            raw = (stage / f"{idx}.bin").read_bytes()
            dset[j] = np.frombuffer(raw, dtype=layout.dtype).reshape(layout.frame_shape)
        f.attrs[SUBSET_ATTR] = json.dumps(record, sort_keys=True)


def _stages_of(final: Path) -> list[Path]:
    return sorted(final.parent.glob(f".{final.name}{_STAGE_MARK}*"))


def sweep_temporaries(final: Path) -> None:
    """Remove the temporaries (``.NAME.tmp-*``) a killed run left for ``final``."""
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        logger.info("removing %s left by an interrupted run", stale)
        remove_path(stale)


def fetch_subset(
    client: Any, opts: S3Options, plan: FilePlan, root: Path, traffic: Traffic
) -> dict[str, Any]:
    """Write the subset file of one raster object (or keep a matching one); its entry."""
    final = key_path(root, plan.key)
    obj = head_object(client, opts, plan.key)
    wanted = [[eid, idx] for eid, idx in plan.events]
    if final.exists():
        record = read_subset_record(final)
        if record is None:
            raise StormFusionError(
                f"{final} exists and is not an events-only subset file (a whole file from the "
                "bucket?): events-only downloads need their own raw root (paths.raw); "
                "remove it or point paths.raw elsewhere"
            )
        have = [[e["id"], e["source_index"]] for e in record.get("events", [])]
        if record.get("source_etag") == obj.etag and have == wanted:
            return _subset_entry(root, final, record, "skipped")
    sweep_temporaries(final)
    layout = read_layout(RangedObject(client, opts, obj, traffic), plan.img_type, plan.key)
    _check_events(plan, layout)
    stage = final.with_name(f".{final.name}{_STAGE_MARK}{obj.etag[:16]}")
    for old in _stages_of(final):
        if old != stage:
            remove_path(old)  # events of an older version of the object
    try:
        _stage_events(client, opts, obj, plan, layout, stage, traffic)
    except ObjectChangedError:
        remove_path(stage)  # its events belong to a version that no longer exists
        raise
    record = _subset_record(opts, obj, plan, layout)
    _write_subset(final, plan, layout, stage, record)
    remove_path(stage)
    return _subset_entry(root, final, record, "downloaded")


def _fetch_all(
    client: Any, opts: S3Options, plans: Sequence[FilePlan], root: Path, traffic: Traffic
) -> list[dict[str, Any]]:
    """:func:`fetch_subset` for every file, files in parallel (``opts.concurrency`` requests
    in flight in all: the files' threads share them), entries in plan order."""
    outer = max(1, min(len(plans), opts.concurrency))
    inner = replace(opts, concurrency=max(1, opts.concurrency // outer))
    with ThreadPoolExecutor(max_workers=outer) as pool:
        futures = [pool.submit(fetch_subset, client, inner, p, root, traffic) for p in plans]
        return [f.result() for f in futures]


def _subset_entry(root: Path, path: Path, record: dict[str, Any], status: str) -> dict[str, Any]:
    return {
        "key": record["source_key"],
        "path": path.relative_to(root).as_posix(),
        "etag": record["source_etag"],
        "source_size": record["source_size"],
        "size": path.stat().st_size,
        "sha256": sha256_file(path),
        "events": record["events"],
        "status": status,
    }


def write_catalog_overlay(
    source_catalog: str | os.PathLike[str],
    plans: Sequence[FilePlan],
    whole_keys: Sequence[str],
    out: str | os.PathLike[str],
) -> int:
    """Write the catalog of the subset (see the module docstring); return its row count.

    Raises:
        StormFusionError: the source catalog is unreadable, or lacks a planned event's row.
    """
    src = Path(source_catalog)
    try:
        cat = pd.read_csv(src, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise StormFusionError(f"{src}: not a readable catalog: {exc}") from None
    missing = [c for c in ("id", "file_name", "file_index", "img_type") if c not in cat.columns]
    if missing:
        raise StormFusionError(f"{src}: catalog lacks column(s) {', '.join(missing)}")
    position: dict[tuple[str, int], int] = {}
    for plan in plans:
        name = plan.key.removeprefix(f"{DATA_PREFIX}/")
        for j, (_, idx) in enumerate(plan.events):
            position[(name, idx)] = j
    index = pd.to_numeric(cat["file_index"], errors="coerce").fillna(-1).astype("int64")
    keys = list(zip(cat["file_name"], index, strict=True))
    raster = pd.Series([k in position for k in keys], index=cat.index)
    ids = {eid for plan in plans for eid, _ in plan.events}
    light = {k.removeprefix(f"{DATA_PREFIX}/") for k in whole_keys}
    lght = (cat["img_type"] == "lght") & cat["file_name"].isin(light) & cat["id"].isin(ids)
    found = {k for k, r in zip(keys, raster, strict=True) if r}
    absent = [f"{n}[{i}]" for (n, i) in position if (n, i) not in found]
    if absent:
        raise StormFusionError(
            f"{src}: no catalog row for planned event(s) {', '.join(absent[:5])}"
        )
    overlay = cat[raster | lght].copy()
    overlay.loc[raster, "file_index"] = [
        str(position[k]) for k, r in zip(keys, raster, strict=True) if r
    ]
    with atomic_path(out) as tmp:
        overlay.to_csv(tmp, index=False)
    return len(overlay)


def _record(
    opts: S3Options,
    events_csv: str | os.PathLike[str],
    rows: int,
    entries: list[dict[str, Any]],
    lightning: list[dict[str, Any]],
    traffic: Traffic,
) -> dict[str, Any]:
    """The manifest of an events-only download (bytes: range reads + lightning files)."""
    fetched = sum(e["size"] for e in lightning if e["status"] == "downloaded")
    return {
        "bucket": opts.bucket,
        "endpoint_url": opts.endpoint_url,
        "region": opts.region,
        "events_only": True,
        "events": str(events_csv),
        "catalog_rows": rows,
        "files": entries + lightning,
        "range_bytes": traffic.bytes,
        "range_requests": traffic.requests,
        "downloaded_bytes": traffic.bytes + fetched,
        "source_bytes": sum(e["source_size"] for e in entries) + sum(e["size"] for e in lightning),
    }


def download_events_only(
    opts: S3Options,
    events_csv: str | os.PathLike[str],
    source_catalog: str | os.PathLike[str],
    out_root: str | os.PathLike[str],
    manifest: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Subset files of the selected events, whole lightning files, and the catalog overlay.

    Args:
        opts: the bucket and transfer options.
        events_csv: the event index selected on ``source_catalog`` (original indexes).
        source_catalog: the bucket's full ``CATALOG.csv`` (not ``<out_root>/CATALOG.csv``).
        out_root: the raw root of the subset (the bucket's tree).
        manifest: JSON to write: per file key, ETag, sizes, subset SHA-256 and events.

    Returns:
        The manifest record (also ``range_bytes`` and ``range_requests``: the traffic).
    """
    root = Path(out_root)
    overlay = root / CATALOG_KEY
    if Path(source_catalog).resolve() == overlay.resolve():
        raise StormFusionError(
            f"{source_catalog}: the source catalog cannot be {overlay}, which the overlay replaces"
        )
    started = time.perf_counter()
    plans, whole = plan_subsets(events_csv)
    opts = resolve_region(opts)
    client = make_client(opts)
    traffic = Traffic()
    root.mkdir(parents=True, exist_ok=True)
    entries = _fetch_all(client, opts, plans, root, traffic)
    state = _State(root)
    for entry in entries:
        state.mark_made(entry["key"], root / entry["path"], entry["sha256"], entry["etag"])
    state.save()
    lightning = download_keys(opts, whole, root) if whole else []
    sweep_temporaries(overlay)
    rows = write_catalog_overlay(source_catalog, plans, whole, overlay)
    record = _record(opts, events_csv, rows, entries, lightning, traffic)
    record["seconds"] = round(time.perf_counter() - started, 3)
    logger.info(
        "%d subset files (%d events) and %d lightning files; %.1f MB in %d range requests, %.1f s",
        len(entries),
        sum(len(e["events"]) for e in entries),
        len(lightning),
        traffic.bytes / 1e6,
        traffic.requests,
        record["seconds"],
    )
    if manifest is not None:
        write_json_atomic(manifest, record)
    return record
