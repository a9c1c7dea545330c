"""Fast reads of frame windows from the archive's stores, one chunk file at a time.

zarr-python 3 routes every read through its asyncio codec pipeline, which costs about 2 ms
per chunk on the project's 2-core machines, while reading and decompressing a 1 MB chunk
file takes about 0.3 ms (``benchmarks/bench_archive.py``). For the training access pattern
(a few consecutive time chunks of one event per modality) :class:`WindowReader` reads the
chunk files of a local store directly and decodes them with numcodecs, for the layouts
:mod:`stormfusion.data.convert` writes: a regular chunk grid of whole frames, the default
``/`` chunk keys, little-endian ``bytes`` serialisation and at most one of the Zstandard,
Blosc or gzip compressors. Any other layout (sharding, other codecs, remote stores) falls
back to zarr's own indexing, so the reader is always correct, only faster where it can be.

Damage is refused, never read as data: a chunk file that does not decode to exactly one
chunk (corrupt or truncated) is a :class:`~stormfusion.errors.StormFusionError` naming the
store, the event and the chunk, and so is a missing chunk file when the store says every
chunk was written (``all_chunks=True``: stores of ``store_format`` 2 and later, see
:mod:`stormfusion.data.convert`; older stores skipped chunks that were all fill value, so
there a missing file reads as the fill value). On the zarr fallback, errors zarr raises
are refused alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numcodecs
import numpy as np
import zarr
from numcodecs.compat import ensure_ndarray
from zarr.codecs import BloscCodec, BytesCodec, GzipCodec, ZstdCodec
from zarr.storage import LocalStore

from stormfusion.errors import StormFusionError

logger = logging.getLogger(__name__)

#: Decode a chunk file's bytes into a C-contiguous array of the chunk's size.
Decoder = Callable[[bytes, np.ndarray], object]


def _copy_into(data: bytes, out: np.ndarray) -> None:
    """Uncompressed chunk: the file must hold exactly the chunk's bytes."""
    if len(data) != out.nbytes:
        raise ValueError(f"{len(data)} bytes for a chunk of {out.nbytes}")
    out.reshape(-1).view(np.uint8)[:] = np.frombuffer(data, dtype=np.uint8)


def _blosc_decoder() -> Decoder:
    """Blosc frames decoded in place, after checking their header against the file and the
    chunk: c-blosc's 16-byte header gives the decoded size (bytes 4-7) and the frame's own
    size (bytes 12-15), little-endian; blosc itself does not notice a cut-off frame."""
    codec = numcodecs.Blosc()

    def decode(data: bytes, out: np.ndarray) -> None:
        if len(data) < 16:
            raise ValueError(f"{len(data)} bytes: shorter than a blosc header")
        nbytes = int.from_bytes(data[4:8], "little")
        cbytes = int.from_bytes(data[12:16], "little")
        if cbytes != len(data):
            raise ValueError(f"the blosc frame has {cbytes} bytes, the file {len(data)}")
        if nbytes != out.nbytes:
            raise ValueError(f"the blosc frame decodes to {nbytes} bytes, a chunk has {out.nbytes}")
        codec.decode(data, out)

    return decode


def _sized_decoder(factory: Callable[[], numcodecs.abc.Codec]) -> Decoder:
    """Codecs that may decode a short frame without complaint: decode, check the size, copy."""
    codec = factory()

    def decode(data: bytes, out: np.ndarray) -> None:
        flat = ensure_ndarray(codec.decode(data)).reshape(-1).view(np.uint8)
        if flat.nbytes != out.nbytes:
            raise ValueError(f"decodes to {flat.nbytes} bytes, a chunk has {out.nbytes}")
        out.reshape(-1).view(np.uint8)[:] = flat

    return decode


#: zarr v3 compressor -> a checked decoder of its frames.
_CODECS: dict[type, Callable[[], Decoder]] = {
    ZstdCodec: lambda: _sized_decoder(numcodecs.Zstd),
    BloscCodec: _blosc_decoder,
    GzipCodec: lambda: _sized_decoder(numcodecs.GZip),
}


class WindowReader:
    """Read ``array[row, start:stop]`` of a 4-D ``(event, time, y, x)`` zarr array.

    Args:
        array: the opened array (its metadata decides whether the fast path applies).
        events: event id of each row, to name events in errors (default: row numbers).
        all_chunks: every chunk was written, so a missing chunk file is damage.
    """

    def __init__(
        self, array: zarr.Array, events: Sequence[str] | None = None, all_chunks: bool = False
    ) -> None:
        self.array = array
        self.events = list(events) if events is not None else None
        self.all_chunks = bool(all_chunks)
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
            self._decode = factory()
        else:
            self._decode = _copy_into
        self._root = Path(store.root) / array.store_path.path
        self._chunk_t = chunks[1]
        return ""

    @property
    def fast(self) -> bool:
        """Whether reads bypass zarr's pipeline."""
        return self._root is not None

    def read(self, row: int, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Frames ``[start, stop)`` of event row ``row``: ``(stop - start, H, W)``.

        ``out``: a C-contiguous array of that shape and the store's dtype to decode into
        (reused buffers spare the page faults of fresh memory); returned filled.
        """
        n, t, h, w = self.shape
        if not (0 <= row < n and 0 <= start <= stop <= t):
            raise IndexError(f"row {row}, frames [{start}, {stop}) outside shape {self.shape}")
        shape = (stop - start, h, w)
        if out is None:
            out = np.empty(shape, dtype=self.dtype)
        elif out.shape != shape or out.dtype != self.dtype or not out.flags.c_contiguous:
            raise ValueError(f"out must be C-contiguous {shape} {self.dtype}")
        if self._root is None or self._decode is None:
            try:
                out[...] = np.asarray(self.array[row, start:stop])
            except Exception as exc:  # any codec or store failure is damage
                raise self._damage(row, f"frames {start}..{stop - 1}", exc) from None
            return out
        ct = self._chunk_t
        scratch: np.ndarray | None = None
        for c in range(start // ct, -(-stop // ct)):
            c0 = c * ct
            lo, hi = max(start, c0), min(stop, c0 + ct)
            raw = self._chunk_bytes(row, c)
            if raw is None:  # never written (older stores): all fill value
                out[lo - start : hi - start] = self._fill
                continue
            if hi - lo == ct:  # the whole chunk is wanted: decode in place
                self._decode_chunk(raw, out[lo - start : hi - start], row, c)
                continue
            # zarr writes edge chunks whole: (ct, h, w) even past the last frame
            if scratch is None:
                scratch = np.empty((ct, h, w), dtype=self.dtype)
            self._decode_chunk(raw, scratch, row, c)
            out[lo - start : hi - start] = scratch[lo - c0 : hi - c0]
        return out

    def _key(self, row: int, c: int) -> str:
        return f"c/{row}/{c}/0/0"

    def _chunk_bytes(self, row: int, c: int) -> bytes | None:
        """The chunk file's bytes; None for a chunk an older store never wrote."""
        if self._root is None:
            raise AssertionError("direct reads need the fast path")
        try:
            return (self._root / self._key(row, c)).read_bytes()
        except FileNotFoundError:
            if self.all_chunks:
                raise self._damage(
                    row, f"chunk {self._key(row, c)}", "the chunk file is missing"
                ) from None
            return None

    def _decode_chunk(self, raw: bytes, out: np.ndarray, row: int, c: int) -> None:
        """Decode one whole chunk into ``out`` (its exact size), or refuse it."""
        if self._decode is None:
            raise AssertionError("direct reads need the fast path")
        try:
            self._decode(raw, out)
        except Exception as exc:  # any codec failure: a damaged chunk
            raise self._damage(
                row, f"chunk {self._key(row, c)}", f"corrupt or truncated ({exc})"
            ) from None

    def _damage(self, row: int, where: str, cause: object) -> StormFusionError:
        event = self.events[row] if self.events is not None else f"row {row}"
        return StormFusionError(
            f"{self.array.store_path}: event {event}, {where}: {cause}; the store is "
            "damaged: convert it again"
        )
