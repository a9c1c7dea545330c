"""Atomic output: write to a temporary name beside the target, rename when complete.

A step that fails (bad input, a crash, a kill) leaves no partial output under the final
name, and the temporary is removed where Python still gets the chance. Where it did not
(SIGKILL, a power cut), the next write of the same output sweeps the leftovers first:
temporaries are named ``.<name>.tmp-<pid>-<random>`` and one whose process is gone is
removed before a new one is made (:func:`sweep_stale_temporaries`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stormfusion.errors import StormFusionError

logger = logging.getLogger(__name__)

_TEMPORARY = re.compile(r"\.(?P<name>.+)\.tmp-(?P<pid>\d+)-[0-9a-f]{8}")
#: Temporaries this process is writing now (a process id alone can be reused, e.g. by the
#: next run in a fresh container).
_ACTIVE: set[Path] = set()


def _temporary_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _in_use(temporary: Path, pid: int) -> bool:
    """Whether a temporary may still be written: ours and open, or another live process's."""
    if pid == os.getpid():
        return temporary.absolute() in _ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def sweep_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Remove temporaries of ``path`` left by writers that no longer run (killed runs).

    A temporary this process is writing, or one of another process still alive on this
    machine, is kept.

    Returns:
        The temporaries removed.
    """
    final = Path(path)
    if not final.parent.is_dir():
        return []
    removed = []
    for sibling in final.parent.glob(f".{glob.escape(final.name)}.tmp-*"):
        match = _TEMPORARY.fullmatch(sibling.name)
        if match is None or match["name"] != final.name:
            continue
        if _in_use(sibling, int(match["pid"])):
            continue
        remove_path(sibling)
        removed.append(sibling)
    if removed:
        logger.info(
            "removed %d stale temporar%s of %s left by an earlier run",
            len(removed),
            "y" if len(removed) == 1 else "ies",
            final,
        )
    return removed


def remove_path(path: Path) -> None:
    """Remove a file or a directory tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def scratch_path(
    path: str | os.PathLike[str], report_as: str | os.PathLike[str] | None = None
) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``, removed on exit whatever happens.

    Stale temporaries of ``path`` from killed runs are removed first. An :class:`OSError`
    inside the temporary (or naming no file) is raised again naming ``report_as``
    (default ``path``), the output the user asked for; a writer that hides a full disk
    behind another exception (``torch.save``) gets an ``ENOSPC`` :class:`OSError`.
    """
    final = Path(path)
    named = Path(report_as) if report_as is not None else final
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temporaries(final)
    tmp = _temporary_sibling(final)
    _ACTIVE.add(tmp.absolute())
    try:
        yield tmp
    except OSError as exc:
        if exc.filename is None or str(exc.filename).startswith(str(tmp)):
            cause = exc.strerror or str(exc) or type(exc).__name__
            raise OSError(exc.errno, cause, str(named)) from exc
        raise
    except Exception as exc:
        full = _disk_full(exc, named)
        if full is not None:
            raise full from exc
        raise
    finally:
        if tmp.exists():
            _settle_background_writes()
        remove_path(tmp)
        _ACTIVE.discard(tmp.absolute())


def _settle_background_writes(timeout: float = 60.0) -> None:
    """Let writes already started in zarr's I/O thread finish, so that none lands in a
    temporary after it is removed (an interrupted ``to_zarr`` leaves them running)."""
    zarr_sync = sys.modules.get("zarr.core.sync")
    loop = getattr(zarr_sync, "loop", [None])[0]
    if loop is None or loop.is_closed() or not loop.is_running():
        return

    async def drain() -> None:
        running = asyncio.current_task()
        others = [t for t in asyncio.all_tasks() if t is not running]
        if others:
            await asyncio.wait(others, timeout=timeout)

    with contextlib.suppress(Exception):
        asyncio.run_coroutine_threadsafe(drain(), loop).result(timeout + 5)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write ``path`` (a file or a directory) into.

    Stale temporaries of ``path`` from killed runs are removed first. On success the
    temporary replaces ``path`` (an existing directory is replaced whole); on any
    exception it is deleted and ``path`` is left untouched (errors as in
    :func:`scratch_path`).
    """
    final = Path(path)
    with scratch_path(final) as tmp:
        yield tmp
        _replace(tmp, final)


def _replace(tmp: Path, final: Path) -> None:
    """Move a complete temporary to its final name (a directory replaces the old whole)."""
    if final.is_dir() and not final.is_symlink():
        old = _temporary_sibling(final)
        final.rename(old)
        try:
            tmp.rename(final)
        except BaseException:
            old.rename(final)
            raise
        remove_path(old)
    else:
        tmp.replace(final)


#: Free space under which a failed write is put down to a full disk.
_NEARLY_FULL_BYTES = 1 << 20


def _disk_full(exc: Exception, final: Path) -> OSError | None:
    """A writer that hides ENOSPC (torch.save raises RuntimeError, for one) as the OSError
    it is, when the output's file system has (nearly) no space left; else None."""
    if isinstance(exc, OSError | StormFusionError):
        return None
    try:
        free = shutil.disk_usage(final.parent).free
    except OSError:
        return None
    if free >= _NEARLY_FULL_BYTES:
        return None
    said = " ".join(str(exc).split())[:200]
    cause = f"{os.strerror(errno.ENOSPC)} ({free} bytes free; {type(exc).__name__}: {said})"
    return OSError(errno.ENOSPC, cause, str(final))


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def sha256_file(path: str | os.PathLike[str], block: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()
