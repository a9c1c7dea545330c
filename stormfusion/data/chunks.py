"""Fast reads of frame windows from the archive's stores, one chunk file at a time.

zarr-python 3 routes every read through its asyncio codec pipeline, which costs about 2 ms
per chunk on the project's 2-core machines, while reading and decompressing a 1 MB chunk
file takes about 0.3 ms (``benchmarks/bench_archive.py``). For the training access pattern
(a few consecutive time chunks of one event per modality) :class:`WindowReader` reads the
chunk files of a local store directly and decodes them with numcodecs, for the layouts
:mod:`stormfusion.data.convert` writes: a regular chunk grid of whole frames, the default
``/`` chunk keys, little-endian ``bytes`` serialisation and at most one of the Zstandard,
Blosc or gzip compressors. Chunks never written (zarr skips chunks that are all fill
value) read as the fill value. Any other layout (sharding, other codecs, remote stores)
falls back to zarr's own indexing, so the reader is always correct, only faster where it
can be.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec, GzipCodec, ZstdCodec
from zarr.storage import LocalStore

logger = logging.getLogger(__name__)

#: Decode a chunk file's bytes into a C-contiguous array of the chunk's size.
Decoder = Callable[[bytes, np.ndarray], object]

#: zarr v3 compressor -> a numcodecs codec that understands its frames.
_CODECS: dict[type, Callable[[], numcodecs.abc.Codec]] = {
    ZstdCodec: numcodecs.Zstd,
    BloscCodec: numcodecs.Blosc,
    GzipCodec: numcodecs.GZip,
}


def _copy_into(data: bytes, out: np.ndarray) -> None:
    out.reshape(-1).view(np.uint8)[:] = np.frombuffer(data, dtype=np.uint8)


class WindowReader:
    """Read ``array[row, start:stop]`` of a 4-D ``(event, time, y, x)`` zarr array.

    Args:
        array: the opened array (its metadata decides whether the fast path applies).
    """

    def __init__(self, array: zarr.Array) -> None:
        self.array = array
        self.shape = tuple(int(n) for n in array.shape)
        self.dtype = np.dtype(array.dtype)
        self._decode: Decoder | None = None
        self._root: Path | None = None
        self._chunk_t = 0
        self._fill = array.metadata.fill_value
        reason = self._fast_path_blocker(array)
        if reason:
            logger.debug("%s: zarr indexing (%s)", array.store_path, reason)

    def _fast_path_blocker(self, array: zarr.Array) -> str:
        """Set up direct chunk reads; return why they cannot be used ('' when they can)."""
        meta = array.metadata
        if meta.zarr_format != 3 or len(self.shape) != 4:
            return "not a 4-D zarr v3 array"
        store = array.store_path.store
        if not isinstance(store, LocalStore):
            return "not a local store"
        chunks = tuple(int(n) for n in array.chunks)
        if chunks[0] != 1 or chunks[2:] != self.shape[2:]:
            return f"chunks {chunks} do not hold whole frames of one event"
        if (
            getattr(meta.chunk_key_encoding, "separator", None) != "/"
            or meta.encode_chunk_key((0, 1, 0, 0)) != "c/0/1/0/0"
        ):
            return "chunk keys are not zarr v3's default"
        codecs = list(meta.codecs)
        if not codecs or not isinstance(codecs[0], BytesCodec):
            return "first codec is not 'bytes'"
        if (
            self.dtype.itemsize > 1
            and codecs[0].endian is not None
            and codecs[0].endian.value != "little"
        ):
            return "big-endian bytes"
        rest = codecs[1:]
        if len(rest) > 1:
            return f"{len(rest)} compressors"
        if self.dtype.byteorder == ">":
            return "big-endian dtype"
        if rest:
            factory = _CODECS.get(type(rest[0]))
            if factory is None:
                return f"compressor {type(rest[0]).__name__}"
            self._decode = factory().decode
        else:
            self._decode = _copy_into
        self._root = Path(store.root) / array.store_path.path
        self._chunk_t = chunks[1]
        return ""

    @property
    def fast(self) -> bool:
        """Whether reads bypass zarr's pipeline."""
        return self._root is not None

    def read(self, row: int, start: int, stop: int) -> np.ndarray:
        """Frames ``[start, stop)`` of event row ``row``: ``(stop - start, H, W)``."""
        n, t, h, w = self.shape
        if not (0 <= row < n and 0 <= start <= stop <= t):
            raise IndexError(f"row {row}, frames [{start}, {stop}) outside shape {self.shape}")
        if self._root is None or self._decode is None:
            return np.asarray(self.array[row, start:stop])
        out = np.empty((stop - start, h, w), dtype=self.dtype)
        ct = self._chunk_t
        prefix = self._root / "c" / str(row)
        scratch: np.ndarray | None = None
        for c in range(start // ct, -(-stop // ct)):
            c0 = c * ct
            lo, hi = max(start, c0), min(stop, c0 + ct)
            try:
                raw = (prefix / str(c) / "0" / "0").read_bytes()
            except FileNotFoundError:  # never written: all fill value
                out[lo - start : hi - start] = self._fill
                continue
            if hi - lo == ct:  # the whole chunk is wanted: decode in place
                self._decode(raw, out[lo - start : hi - start])
                continue
            # zarr writes edge chunks whole: (ct, h, w) even past the last frame
            if scratch is None:
                scratch = np.empty((ct, h, w), dtype=self.dtype)
            self._decode(raw, scratch)
            out[lo - start : hi - start] = scratch[lo - c0 : hi - c0]
        return out
