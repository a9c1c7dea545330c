"""Download SEVIR from S3 (the public ``sevir`` bucket, a mirror, or a loopback test server).

- Requests are anonymous (``botocore.UNSIGNED``) unless ``signed`` is asked for.
- ``CATALOG.csv`` goes to ``<out>/CATALOG.csv``; data keys ``data/<file_name>`` go to
  ``<out>/data/<file_name>``, the same tree as the bucket.
- The bucket names its own region: an unsigned ``HEAD`` of the bucket answers with the
  header ``x-amz-bucket-region``, and that region is used (logged when it differs from the
  configured one, default ``us-west-2``).
- Files are fetched in parallel by boto3's transfer manager (``max_concurrency`` threads
  shared by all files, ranged GETs for large ones) into a temporary name in the target's
  directory; each file is verified and renamed as soon as it completes, so a kill loses at
  most the files in flight. The next run promotes a temporary that is complete and verifies
  (a kill between the last byte and the rename) and removes the others.
- A stalled connection fails naming the key, the read timeout and how long the file was
  waited for; a connection closed before the last byte is named a truncated transfer.
- Local paths are checked after resolving symbolic links: nothing is written through a link
  that leads out of the output root.
- Verification: the size must equal the object's ``ContentLength`` and the ETag must match:
  a single-part ETag is the MD5 of the bytes; a multipart ETag (``<hex>-N``) is the MD5 of
  the N part MD5s concatenated, so the part size is needed: it is taken from ``HEAD
  ?partNumber=1`` where the server answers it, else from the transfer configuration's
  ``multipart_chunksize``, else from every whole-MiB part size consistent with the size and
  N. All candidates are checked in one pass over the file.
- A file already present and matching is skipped (``<out>/.download_state.json`` remembers
  verified files by size and mtime so they are not hashed again).
- A failed or unverifiable file is deleted and retried with exponential backoff; after
  ``retries`` retries the run fails naming every file that could not be fetched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore import UNSIGNED
from botocore.config import Config
from s3transfer.exceptions import RetriesExceededError
from s3transfer.futures import TransferFuture
from s3transfer.subscribers import BaseSubscriber
from tqdm import tqdm

from stormfusion.data.catalog import DATA_PREFIX, check_file_name
from stormfusion.data.event_index import DOWNLOAD_STATE
from stormfusion.errors import StormFusionError
from stormfusion.io import remove_path, write_json_atomic

logger = logging.getLogger(__name__)

CATALOG_KEY = "CATALOG.csv"
STATE_NAME = DOWNLOAD_STATE
MIB = 1 << 20
_BLOCK = 4 * MIB
_PART_MARK = ".part-"
#: The response header in which S3 names a bucket's region.
REGION_HEADER = "x-amz-bucket-region"


class EndpointUnreachableError(StormFusionError):
    """The S3 endpoint did not answer (transient: retried with backoff)."""


@dataclass(frozen=True)
class S3Options:
    """Where and how to fetch."""

    bucket: str = "sevir"
    region: str = "us-west-2"
    endpoint_url: str | None = None
    retries: int = 5
    concurrency: int = 8
    signed: bool = False
    #: multipart threshold and part size of the transfer manager (bytes)
    chunk_size: int = 8 * MIB
    #: first backoff delay in seconds (doubles each retry, with jitter)
    backoff_s: float = 1.0
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0

    def where(self) -> str:
        return f"s3://{self.bucket}" + (f" at {self.endpoint_url}" if self.endpoint_url else "")


@dataclass(frozen=True)
class RemoteObject:
    """An object's key, size and ETag (quotes stripped), and its part-1 size if known."""

    key: str
    size: int
    etag: str
    part_size: int | None = None

    @property
    def parts(self) -> int:
        """Number of multipart parts (1 for a single-part upload)."""
        _, _, n = self.etag.partition("-")
        return int(n) if n.isdigit() else 1


def make_client(opts: S3Options) -> Any:
    """A boto3 S3 client: unsigned unless ``opts.signed``."""
    config = Config(
        signature_version=None if opts.signed else UNSIGNED,
        region_name=opts.region,
        connect_timeout=opts.connect_timeout_s,
        read_timeout=opts.read_timeout_s,
        retries={"max_attempts": 2, "mode": "standard"},
        max_pool_connections=max(10, 2 * opts.concurrency),
    )
    return boto3.session.Session().client("s3", endpoint_url=opts.endpoint_url, config=config)


def bucket_region(opts: S3Options) -> str | None:
    """The region the bucket names in an unsigned ``HEAD`` (header ``x-amz-bucket-region``).

    S3 sends the header with success and with error answers (403, or 301/400 from a wrong
    regional endpoint). None when there is no answer or no header (a missing bucket).
    """
    client = make_client(replace(opts, signed=False))
    try:
        response = client.head_bucket(Bucket=opts.bucket)
        headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    except botocore.exceptions.ClientError as exc:
        headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    except (botocore.exceptions.BotoCoreError, OSError) as exc:
        logger.debug("HEAD of bucket %s not answered: %s", opts.bucket, exc)
        return None
    region = headers.get(REGION_HEADER)
    return str(region) if region else None


def resolve_region(opts: S3Options) -> S3Options:
    """``opts`` with the region the bucket names (logged when it is not the configured one)."""
    region = bucket_region(opts)
    if region is None or region == opts.region:
        return opts
    logger.info(
        "bucket %s names region %s (configured: %s); using %s",
        opts.bucket,
        region,
        opts.region,
        region,
    )
    return replace(opts, region=region)


def _error_code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _root_cause(exc: BaseException) -> BaseException:
    """The error under s3transfer's "max retries exceeded" wrapper."""
    while isinstance(exc, RetriesExceededError) and exc.last_exception is not None:
        exc = exc.last_exception
    return exc


def _is_stall(exc: BaseException) -> bool:
    return isinstance(exc, botocore.exceptions.ReadTimeoutError | TimeoutError)


def _is_truncation(exc: BaseException) -> bool:
    if isinstance(
        exc, botocore.exceptions.IncompleteReadError | botocore.exceptions.ResponseStreamingError
    ):
        return True
    text = f"{type(exc).__name__} {exc}"
    return "IncompleteRead" in text or "Connection broken" in text


def _describe(
    exc: BaseException, opts: S3Options, key: str, waited_s: float | None = None
) -> StormFusionError:
    """Turn a boto error about ``key`` into one clear message."""
    url = f"s3://{opts.bucket}/{key}"
    exc = _root_cause(exc)
    waited = f" after waiting {waited_s:.1f} s in all" if waited_s is not None else ""
    if _is_stall(exc):
        return StormFusionError(
            f"{url}: the connection stalled: no data for the read timeout of "
            f"{opts.read_timeout_s:g} s{waited} ({opts.where()})"
        )
    if _is_truncation(exc):
        return StormFusionError(
            f"{url}: truncated transfer: the connection closed before the last byte{waited} "
            f"({type(exc).__name__}: {exc})"
        )
    if isinstance(
        exc, botocore.exceptions.EndpointConnectionError | (botocore.exceptions.ConnectTimeoutError)
    ):
        return EndpointUnreachableError(
            f"cannot reach the S3 endpoint {opts.endpoint_url or 'of AWS'} for {url}: {exc}"
        )
    if isinstance(exc, botocore.exceptions.ClientError):
        code = _error_code(exc)
        if code in ("NoSuchBucket",):
            return StormFusionError(f"bucket {opts.bucket!r} does not exist ({opts.where()})")
        if code in ("404", "NoSuchKey", "NotFound"):
            return StormFusionError(f"{url}: no such object ({opts.where()})")
        if code in ("403", "AccessDenied", "Forbidden"):
            hint = "" if opts.signed else " (anonymous request: is it public? --signed signs)"
            return StormFusionError(f"{url}: access denied{hint}")
        return StormFusionError(f"{url}: S3 error {code}: {exc}")
    return StormFusionError(f"{url}: {type(exc).__name__}: {exc}")


def head_object(client: Any, opts: S3Options, key: str) -> RemoteObject:
    """Size and ETag of ``key`` (and its part size for multipart objects)."""
    try:
        head = client.head_object(Bucket=opts.bucket, Key=key)
    except botocore.exceptions.ClientError as exc:
        if _error_code(exc) in ("404", "NotFound", "NoSuchKey") and not _bucket_exists(
            client, opts
        ):
            raise StormFusionError(
                f"bucket {opts.bucket!r} does not exist ({opts.where()})"
            ) from None
        raise _describe(exc, opts, key) from None
    except (botocore.exceptions.BotoCoreError, OSError) as exc:
        raise _describe(exc, opts, key) from None
    obj = RemoteObject(key, int(head["ContentLength"]), str(head["ETag"]).strip('"'))
    if obj.parts > 1:
        try:
            part = client.head_object(Bucket=opts.bucket, Key=key, PartNumber=1)
            part_len = int(part["ContentLength"])
            if int(part.get("PartsCount", obj.parts)) == obj.parts and part_len < obj.size:
                obj = RemoteObject(obj.key, obj.size, obj.etag, part_len)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            logger.debug("%s: HEAD partNumber=1 not answered (%s)", key, exc)
    return obj


def _bucket_exists(client: Any, opts: S3Options) -> bool:
    try:
        client.head_bucket(Bucket=opts.bucket)
    except botocore.exceptions.ClientError as exc:
        return _error_code(exc) not in ("404", "NoSuchBucket", "NotFound")
    except botocore.exceptions.BotoCoreError:
        return True
    return True


def candidate_part_sizes(obj: RemoteObject, chunk_size: int) -> list[int]:
    """Part sizes that could have produced ``obj``'s multipart ETag, most likely first."""
    n = obj.parts
    if n <= 1:
        return []
    out: list[int] = []
    if obj.part_size:
        out.append(obj.part_size)
    low = -(-obj.size // n)  # ceil: smallest part size giving n parts
    high = (obj.size - 1) // (n - 1)  # largest part size still giving n parts
    if low <= chunk_size <= high:
        out.append(chunk_size)
    mib = -(-low // MIB) * MIB
    while mib <= high and len(out) < 16:
        out.append(mib)
        mib += MIB
    if not out:
        out.append(low)
    return list(dict.fromkeys(out))


def file_etags(path: Path, part_sizes: Sequence[int]) -> tuple[str, dict[int, str]]:
    """MD5 of the file, and the multipart ETag for each part size, from one read."""
    whole = hashlib.md5(usedforsecurity=False)
    digests: dict[int, list[bytes]] = {p: [] for p in part_sizes}
    current = {p: hashlib.md5(usedforsecurity=False) for p in part_sizes}
    filled = dict.fromkeys(part_sizes, 0)
    with path.open("rb") as fh:
        while block := fh.read(_BLOCK):
            whole.update(block)
            for p in part_sizes:
                view = memoryview(block)
                while view:
                    take = min(p - filled[p], len(view))
                    current[p].update(view[:take])
                    filled[p] += take
                    view = view[take:]
                    if filled[p] == p:
                        digests[p].append(current[p].digest())
                        current[p] = hashlib.md5(usedforsecurity=False)
                        filled[p] = 0
    etags: dict[int, str] = {}
    for p in part_sizes:
        parts = digests[p] + ([current[p].digest()] if filled[p] else [])
        etags[p] = hashlib.md5(b"".join(parts), usedforsecurity=False).hexdigest() + (
            f"-{len(parts)}"
        )
    return whole.hexdigest(), etags


def verify_file(path: Path, obj: RemoteObject, chunk_size: int = 8 * MIB) -> str | None:
    """None if ``path`` holds exactly ``obj``; otherwise what is wrong."""
    size = path.stat().st_size
    if size != obj.size:
        return f"size {size} != {obj.size} bytes of the object"
    if obj.parts <= 1:
        md5, _ = file_etags(path, [])
        if len(obj.etag) == 32 and md5 != obj.etag:
            return f"MD5 {md5} != ETag {obj.etag}"
        if len(obj.etag) != 32:
            logger.warning("%s: ETag %r is not an MD5; checked the size only", obj.key, obj.etag)
        return None
    sizes = candidate_part_sizes(obj, chunk_size)
    _, etags = file_etags(path, sizes)
    if obj.etag in etags.values():
        return None
    return f"multipart ETag {obj.etag} matches no part size among {sizes}"


class _State:
    """Verified files: key -> size, ETag and mtime, so reruns need not hash them again."""

    def __init__(self, root: Path) -> None:
        self.path = root / STATE_NAME
        try:
            self.items: dict[str, dict[str, Any]] = json.loads(self.path.read_text("utf-8"))
        except (OSError, ValueError):
            self.items = {}

    def is_verified(self, obj: RemoteObject, path: Path) -> bool:
        item = self.items.get(obj.key)
        if item is None or not path.is_file():
            return False
        st = path.stat()
        return (
            item.get("etag") == obj.etag
            and item.get("size") == obj.size == st.st_size
            and item.get("mtime_ns") == st.st_mtime_ns
        )

    def mark(self, obj: RemoteObject, path: Path) -> None:
        st = path.stat()
        self.items[obj.key] = {"etag": obj.etag, "size": obj.size, "mtime_ns": st.st_mtime_ns}

    def mark_made(self, key: str, path: Path, sha256: str, source_etag: str) -> None:
        """Record a file made here (an events-only subset) by its content hash."""
        st = path.stat()
        self.items[key] = {
            "sha256": sha256,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "source_etag": source_etag,
        }

    def save(self) -> None:
        write_json_atomic(self.path, self.items)


class _Progress(BaseSubscriber):
    def __init__(self, bar: tqdm) -> None:
        self.bar = bar

    def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
        self.bar.update(bytes_transferred)


def _recover_temporaries(
    remote: Sequence[RemoteObject], paths: dict[str, Path], state: _State, chunk_size: int
) -> None:
    """Promote complete, verified temporaries left by a killed run; remove the others."""
    wanted = {paths[o.key]: o for o in remote}
    for directory in {p.parent for p in paths.values()}:
        if not directory.is_dir():
            continue
        for stale in sorted(directory.glob(f".*{_PART_MARK}*")):
            final = stale.with_name(stale.name[1:].rpartition(_PART_MARK)[0])
            obj = wanted.get(final)
            tail = stale.name.rpartition(_PART_MARK)[2]
            if (
                obj is not None
                and len(tail) == 8  # our own temporary, not s3transfer's partial one
                and not final.exists()
                and stale.is_file()
                and stale.stat().st_size == obj.size
                and verify_file(stale, obj, chunk_size) is None
            ):
                stale.replace(final)
                state.mark(obj, final)
                logger.info("%s: kept the complete, verified file a killed run left", final)
                continue
            logger.info("removing %s left by an interrupted download", stale)
            remove_path(stale)
    state.save()


def key_path(out_root: Path, key: str) -> Path:
    """Local path of a bucket key under the output root (the bucket's own tree).

    Raises:
        StormFusionError: the key is absolute or has ``..``, or a symbolic link on the way
            (a folder or the file itself) leads out of the output root.
    """
    rel = check_file_name(key, where=f"S3 key {key!r}")
    path = out_root / rel
    return check_inside(out_root, path, what=f"S3 key {key!r}")


def check_inside(root: Path, path: Path, what: str) -> Path:
    """``path`` itself if, with every symbolic link resolved, it stays inside ``root``."""
    base = root.resolve()
    resolved = path.resolve()
    if resolved != base and base not in resolved.parents:
        raise StormFusionError(
            f"{path} ({what}) resolves to {resolved}, outside the output root {base}: "
            "a symbolic link leads out of it; refusing to write there"
        )
    return path


def download_keys(
    opts: S3Options, keys: Sequence[str], out_root: str | os.PathLike[str]
) -> list[dict[str, Any]]:
    """Fetch ``keys`` into ``out_root``, verified; return one manifest entry per key.

    Raises:
        StormFusionError: endpoint unreachable, bucket or object missing or not readable,
            or files still failing verification after ``opts.retries`` retries (all named).
    """
    _check_transfer_options(opts)
    root = Path(out_root)
    root.mkdir(parents=True, exist_ok=True)
    opts = resolve_region(opts)
    client = make_client(opts)
    remote = [_head_with_retries(client, opts, k) for k in keys]
    paths = {obj.key: key_path(root, obj.key) for obj in remote}
    state = _State(root)
    _recover_temporaries(remote, paths, state, opts.chunk_size)
    entries: dict[str, dict[str, Any]] = {}
    todo = _keep_complete(remote, paths, state, root, opts.chunk_size, entries)
    todo, failures = _fetch_with_retries(client, opts, todo, paths, state, root, entries)
    state.save()
    if todo:
        raise StormFusionError(
            f"{len(todo)} file(s) could not be fetched from {opts.where()} after "
            f"{opts.retries} retries: " + "; ".join(f"{k}: {v}" for k, v in failures.items())
        )
    return [entries[k] for k in keys]


def _check_transfer_options(opts: S3Options) -> None:
    """Refuse a concurrency below 1 or a negative retry count."""
    if opts.concurrency < 1:
        raise StormFusionError(f"--concurrency must be >= 1, got {opts.concurrency}")
    if opts.retries < 0:
        raise StormFusionError(f"--retries must be >= 0, got {opts.retries}")


def _keep_complete(
    remote: Sequence[RemoteObject],
    paths: dict[str, Path],
    state: _State,
    root: Path,
    chunk_size: int,
    entries: dict[str, dict[str, Any]],
) -> list[RemoteObject]:
    """Objects still to fetch; local copies that verify get a ``skipped`` entry.

    A local file that does not match its object is deleted (and fetched again).
    ``entries`` (key -> manifest entry) is filled in place.
    """
    todo: list[RemoteObject] = []
    for obj in remote:
        path = paths[obj.key]
        if path.is_file():
            problem = None if state.is_verified(obj, path) else verify_file(path, obj, chunk_size)
            if problem is None:
                state.mark(obj, path)
                entries[obj.key] = _entry(obj, path, root, "skipped")
                continue
            logger.warning("%s: local copy does not match the object (%s); deleted", path, problem)
            remove_path(path)
        todo.append(obj)
    if len(todo) < len(remote):
        logger.info("%d of %d files already complete", len(remote) - len(todo), len(remote))
    return todo


def _fetch_with_retries(
    client: Any,
    opts: S3Options,
    todo: list[RemoteObject],
    paths: dict[str, Path],
    state: _State,
    root: Path,
    entries: dict[str, dict[str, Any]],
) -> tuple[list[RemoteObject], dict[str, str]]:
    """Fetch ``todo`` in rounds, backing off (seconds, jittered, doubling) between them.

    ``entries`` gets a ``downloaded`` entry per fetched object. Returns the objects
    still failing after ``opts.retries`` retries and their failures (key -> reason).
    """
    config = TransferConfig(
        multipart_threshold=opts.chunk_size,
        multipart_chunksize=opts.chunk_size,
        max_concurrency=opts.concurrency,
        use_threads=True,
    )
    total = sum(o.size for o in todo)
    failures: dict[str, str] = {}
    with tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc="download",
        disable=total == 0,
        mininterval=1.0,
    ) as bar:
        attempt = 0
        while todo:
            failures = _transfer_round(client, opts, config, todo, paths, bar, state)
            for obj in todo:
                if obj.key not in failures:
                    entries[obj.key] = _entry(obj, paths[obj.key], root, "downloaded")
            state.save()
            todo = [o for o in todo if o.key in failures]
            if not todo:
                break
            if attempt >= opts.retries:
                break
            delay = opts.backoff_s * (2**attempt) * (0.5 + random.random())
            attempt += 1
            logger.warning(
                "%d file(s) failed (%s); retry %d of %d in %.1f s",
                len(todo),
                "; ".join(f"{k}: {v}" for k, v in failures.items()),
                attempt,
                opts.retries,
                delay,
            )
            bar.total = bar.n + sum(o.size for o in todo)
            time.sleep(delay)
    return todo, failures


def _entry(obj: RemoteObject, path: Path, root: Path, status: str) -> dict[str, Any]:
    return {
        "key": obj.key,
        "path": path.relative_to(root).as_posix(),
        "size": obj.size,
        "etag": obj.etag,
        "status": status,
    }


def _transfer_round(
    client: Any,
    opts: S3Options,
    config: TransferConfig,
    objects: Sequence[RemoteObject],
    paths: dict[str, Path],
    bar: tqdm,
    state: _State,
) -> dict[str, str]:
    """Download every object once; verify and rename each as it completes (so a kill keeps
    every finished file); return failures by key."""
    failures: dict[str, str] = {}
    temps: dict[str, Path] = {}
    pending: dict[str, TransferFuture] = {}
    started = time.monotonic()
    by_key = {o.key: o for o in objects}
    with create_transfer_manager(client, config) as manager:
        for obj in objects:
            final = paths[obj.key]
            final.parent.mkdir(parents=True, exist_ok=True)
            check_inside(final.parent, final, what=f"S3 key {obj.key!r}")
            tmp = final.with_name(f".{final.name}{_PART_MARK}{uuid.uuid4().hex[:8]}")
            temps[obj.key] = tmp
            pending[obj.key] = manager.download(
                opts.bucket, obj.key, str(tmp), subscribers=[_Progress(bar)]
            )
        while pending:
            done = [k for k, f in pending.items() if f.done()]
            if not done:
                time.sleep(0.05)
                continue
            for key in done:
                future = pending.pop(key)
                try:
                    future.result()
                except Exception as exc:  # every failure is reported by name after retries
                    waited = time.monotonic() - started
                    failures[key] = str(_describe(exc, opts, key, waited_s=waited))
                    remove_path(temps[key])
                    continue
                problem = _finish(by_key[key], temps[key], paths[key], opts, state)
                if problem is not None:
                    failures[key] = problem
    return failures


def _finish(
    obj: RemoteObject, tmp: Path, final: Path, opts: S3Options, state: _State
) -> str | None:
    """Verify a completed temporary and rename it into place; None, or what is wrong."""
    if not tmp.is_file():
        return "no file written"
    problem = verify_file(tmp, obj, opts.chunk_size)
    if problem is not None:
        size = tmp.stat().st_size
        remove_path(tmp)
        if size < obj.size:
            problem = f"truncated transfer: {size} of {obj.size} bytes arrived"
        logger.warning("%s: %s; deleted", obj.key, problem)
        return f"verification failed: {problem}"
    tmp.replace(final)
    state.mark(obj, final)
    state.save()
    return None


def _head_with_retries(client: Any, opts: S3Options, key: str) -> RemoteObject:
    """HEAD with backoff while the endpoint is unreachable; other errors fail at once."""
    attempt = 0
    while True:
        try:
            return head_object(client, opts, key)
        except EndpointUnreachableError as exc:
            if attempt >= opts.retries:
                raise
            delay = opts.backoff_s * (2**attempt) * (0.5 + random.random())
            attempt += 1
            logger.warning("%s; retry %d of %d in %.1f s", exc, attempt, opts.retries, delay)
            time.sleep(delay)


def wanted_modalities(events_csv: str | os.PathLike[str]) -> list[str] | None:
    """The modalities the selection asked for (``selection.modalities`` in the
    ``events.json`` beside the index); None when there is no such record (all columns)."""
    meta_path = Path(events_csv).with_suffix(".json")
    try:
        meta = json.loads(meta_path.read_text("utf-8"))
        wanted = meta["selection"]["modalities"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return [str(m) for m in wanted] if isinstance(wanted, list) else None


def event_keys(events_csv: str | os.PathLike[str]) -> list[str]:
    """Bucket keys (``data/<file_name>``) of every HDF5 file the event index names for the
    selected modalities (:func:`wanted_modalities`), sorted."""
    from stormfusion.data.selection import read_event_index

    index = read_event_index(events_csv)
    wanted = wanted_modalities(events_csv)
    names: set[str] = set()
    for col in index.columns:
        if col.endswith("_file") and (wanted is None or col.removesuffix("_file") in wanted):
            for name in index[col]:
                if name:
                    check_file_name(str(name), where=f"{events_csv}: column {col}")
                    names.add(str(name))
    if not names:
        raise StormFusionError(f"{events_csv}: the event index names no files")
    return sorted(f"{DATA_PREFIX}/{n}" for n in names)


def download_catalog(opts: S3Options, out_root: str | os.PathLike[str]) -> dict[str, Any]:
    """Fetch ``CATALOG.csv`` into ``out_root``; return its manifest entry."""
    return download_keys(opts, [CATALOG_KEY], out_root)[0]


def download_events(
    opts: S3Options,
    events_csv: str | os.PathLike[str],
    out_root: str | os.PathLike[str],
    manifest: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Fetch every file the event index needs; write and return the manifest."""
    started = time.perf_counter()
    opts = resolve_region(opts)
    entries = download_keys(opts, event_keys(events_csv), out_root)
    seconds = time.perf_counter() - started
    fetched = sum(e["size"] for e in entries if e["status"] == "downloaded")
    record = {
        "bucket": opts.bucket,
        "endpoint_url": opts.endpoint_url,
        "region": opts.region,
        "signed": opts.signed,
        "events": str(events_csv),
        "files": entries,
        "total_bytes": sum(e["size"] for e in entries),
        "downloaded_bytes": fetched,
        "seconds": round(seconds, 3),
    }
    logger.info(
        "%d files (%d downloaded, %.1f MB) in %.1f s",
        len(entries),
        sum(e["status"] == "downloaded" for e in entries),
        fetched / 1e6,
        seconds,
    )
    if manifest is not None:
        write_json_atomic(manifest, record)
    return record
