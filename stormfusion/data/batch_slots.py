"""Reused memory for the loader's batches: private in-process, shared from workers.

Every batch of the training loader is a few megabytes (4.5 MB a seed window), written once
and read once. Fresh memory for each costs more than filling it: the kernel allocates and
zeroes it page by page (and glibc hands large blocks back to the kernel unpredictably),
and a DataLoader worker is worse off still, since torch moves each tensor it returns into
*fresh shared memory* (about 0.6 ms/MB on the 2-core VM of docs/benchmarks.md: more than
reading the window). On a GPU node feeding thousands of windows a second that is
gigabytes a second of page churn.

So batches are written into *slots*: buffers a process keeps and reuses once nobody reads
them any more. A slot is handed out as one tensor storage; every tensor made on it, and
every view of those, keeps the storage alive, and the slot is free again exactly when the
last of them dies (a finalizer on the one array under the storage says so). A batch the
caller keeps (``list(loader)``) is therefore never overwritten: the pool grows instead, as
fresh allocations would.

- In the main process (no DataLoader workers) slots are private memory.
- In a DataLoader worker on Linux slots are shared (one ``memfd`` each, mapped once). The
  batch pickles as the slot's file descriptor and its tensors' places, not as their bytes;
  the receiving process maps the slot, builds the batch's tensors on that mapping, and
  clears the slot's lease flag (byte 0 of its header) when its last tensor on the slot
  dies. The worker reuses a slot only when its own tensors on it and the receiver's are
  gone. The flag is written after the receiver's last read and read before the worker's
  next write; the reference-count atomics of freeing a tensor and the queue's system
  calls order the two processes' memory. A ``memfd`` does not live in ``/dev/shm``, so
  a container's small ``/dev/shm`` (Docker's default is 64 MB) does not bound the batches
  in flight, as it bounds torch's own shared tensors.
- Elsewhere (a worker without ``memfd_create``) batches use torch's shared memory, as
  ``default_collate`` would.

Call contract:

- :func:`allocate` ``(specs)`` -> ``(tensors, lease)``: one uninitialised tensor per
  ``name -> (shape, dtype)`` of ``specs``, all on one slot; ``lease`` is a :class:`Lease`
  for a shared slot (a batch that will cross to the main process), else None.
- :meth:`Lease.wrap` ``(batch)`` -> a :class:`SharedBatch`: ``batch`` (nested dicts of
  tensors and plain values) as a dict that pickles through its slot (tensors not on the
  slot, and non-contiguous ones, pickle as torch pickles them). The receiving process gets
  a plain ``dict`` of ordinary tensors.
"""

from __future__ import annotations

import abc
import copy
import functools
import logging
import math
import mmap
import os
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from multiprocessing.reduction import DupFd
from typing import Any, Final

import numpy as np
import torch

logger = logging.getLogger(__name__)

#: Bytes before a shared slot's payload; byte 0 is its lease flag.
HEADER_BYTES: Final = 64
#: Alignment of each tensor in a slot.
ALIGN_BYTES: Final = 64
#: Free slots a pool keeps beyond those in use (batches are mostly one size).
IDLE_SLOTS: Final = 4

_FREE: Final = 0
_LEASED: Final = 1

TensorSpecs = Mapping[str, tuple[tuple[int, ...], torch.dtype]]


def _watched_storage(array: np.ndarray, on_release: Callable[[], None]) -> torch.UntypedStorage:
    """``array``'s memory as a storage that calls ``on_release`` once no tensor uses it.

    ``array`` must be a fresh array object that nothing else keeps: every tensor made on
    the storage (and every view of those) keeps it alive, so its finalizer runs exactly
    when the last of them dies.
    """
    weakref.finalize(array, on_release)
    return torch.from_numpy(array).untyped_storage()


def _on(
    storage: torch.UntypedStorage, offset: int, dtype: torch.dtype, shape: tuple[int, ...]
) -> torch.Tensor:
    """The contiguous tensor of ``dtype`` and ``shape`` at byte ``offset`` of ``storage``."""
    flat = torch.empty(0, dtype=dtype).set_(
        storage, offset // dtype.itemsize, (math.prod(shape),), (1,)
    )
    return flat.view(shape)


class _Slot(abc.ABC):
    """One reusable buffer of ``capacity`` bytes."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use_here = False

    @abc.abstractmethod
    def _payload(self) -> np.ndarray:
        """A fresh uint8 array object on the slot's payload (one per use)."""

    def free(self) -> bool:
        """No tensor on the slot is alive."""
        return not self.in_use_here

    def _released_here(self) -> None:
        self.in_use_here = False

    def storage(self) -> torch.UntypedStorage:
        """The payload as one storage, watched until the last tensor on it dies."""
        storage = _watched_storage(self._payload(), self._released_here)
        self.in_use_here = True
        return storage

    @abc.abstractmethod
    def close(self) -> None:
        """Let go of the slot's memory (only of a free slot)."""


class _PrivateSlot(_Slot):
    """A slot in this process's own memory."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self._buffer = np.empty(capacity, dtype=np.uint8)

    def _payload(self) -> np.ndarray:
        return self._buffer[:]

    def close(self) -> None:
        """Nothing to do: the buffer goes with the slot."""


class _SharedSlot(_Slot):
    """A ``memfd`` slot of a DataLoader worker, mapped once, lent to the main process with
    each batch; byte 0 of its header is the lease flag."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.size = HEADER_BYTES + capacity
        self.fd = os.memfd_create("stormfusion-batch", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, self.size)
            self.mm = mmap.mmap(self.fd, self.size)
        except OSError:
            os.close(self.fd)
            raise
        #: the payload's first byte in this process (tensors on the slot start from it)
        self.address = int(
            np.frombuffer(self.mm, np.uint8, count=1, offset=HEADER_BYTES).ctypes.data
        )

    def _payload(self) -> np.ndarray:
        return np.frombuffer(self.mm, dtype=np.uint8, offset=HEADER_BYTES)

    def free(self) -> bool:
        """No tensor of this process and none of a receiving process is on the slot."""
        return not self.in_use_here and self.mm[0] == _FREE

    def close(self) -> None:
        self.mm.close()
        os.close(self.fd)


class SlotPool:
    """The slots of one process, private or shared."""

    def __init__(self, shared: bool) -> None:
        self.pid = os.getpid()
        self.shared = shared
        self.slots: list[_Slot] = []

    def slot(self, nbytes: int) -> _Slot:
        """A free slot of at least ``nbytes`` (the smallest that fits, else a new one);
        free slots beyond :data:`IDLE_SLOTS` are let go."""
        fits = [s for s in self.slots if s.capacity >= nbytes and s.free()]
        slot = min(fits, key=lambda s: s.capacity) if fits else None
        if slot is None:
            slot = _SharedSlot(nbytes) if self.shared else _PrivateSlot(nbytes)
            self.slots.append(slot)
            logger.debug("process %d: slot %d, %d bytes", self.pid, len(self.slots), nbytes)
        idle = [s for s in self.slots if s is not slot and s.free()]
        for extra in idle[IDLE_SLOTS:]:
            self.slots.remove(extra)
            extra.close()
        return slot


_POOLS: dict[bool, SlotPool] = {}


def _pool(shared: bool) -> SlotPool:
    """This process's pool (a forked worker starts its own, never its parent's)."""
    pool = _POOLS.get(shared)
    if pool is None or pool.pid != os.getpid():
        pool = _POOLS[shared] = SlotPool(shared)
    return pool


def slot_count(shared: bool = True) -> int:
    """Slots this process holds (shared: as a DataLoader worker; else private)."""
    pool = _POOLS.get(shared)
    return len(pool.slots) if pool is not None and pool.pid == os.getpid() else 0


def slots_available() -> bool:
    """Whether batches can cross processes in slots here (Linux's ``memfd_create``)."""
    return hasattr(os, "memfd_create")


def _torch_shared(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor in torch's shared memory (as ``default_collate`` puts
    batches inside workers)."""
    elem = torch.empty(0, dtype=dtype)
    storage = elem._typed_storage()._new_shared(math.prod(shape))
    return elem.new(storage).resize_(*shape)


def allocate(specs: TensorSpecs) -> tuple[dict[str, torch.Tensor], Lease | None]:
    """Uninitialised tensors for ``specs`` (``name -> (shape, dtype)``) on one slot (see
    the module's call contract)."""
    in_worker = torch.utils.data.get_worker_info() is not None
    if in_worker and not slots_available():
        return {k: _torch_shared(shape, dt) for k, (shape, dt) in specs.items()}, None
    offsets: dict[str, int] = {}
    end = 0
    for name, (shape, dtype) in specs.items():
        offsets[name] = end
        nbytes = math.prod(shape) * dtype.itemsize
        end += -(-nbytes // ALIGN_BYTES) * ALIGN_BYTES
    slot = _pool(in_worker).slot(max(end, ALIGN_BYTES))
    storage = slot.storage()
    tensors = {k: _on(storage, offsets[k], dt, shape) for k, (shape, dt) in specs.items()}
    return tensors, Lease(slot) if isinstance(slot, _SharedSlot) else None


class Lease:
    """One use of a shared slot, from :func:`allocate` to the batch built on it."""

    def __init__(self, slot: _SharedSlot) -> None:
        self.slot = slot

    def wrap(self, batch: Mapping[str, Any]) -> SharedBatch:
        """``batch`` as a dict that pickles through this lease's slot."""
        return SharedBatch(batch, self.slot)


@dataclass(frozen=True)
class _InSlot:
    """Where a tensor lies in its slot (the pickled stand-in for its bytes)."""

    offset: int
    dtype: torch.dtype
    shape: tuple[int, ...]


def _encode(value: Any, address: int) -> Any:
    """``value`` with the tensors on the slot whose payload is at ``address`` replaced by
    their places in it (a non-contiguous one by a contiguous copy, pickled by torch)."""
    if isinstance(value, Mapping):
        return {k: _encode(v, address) for k, v in value.items()}
    if isinstance(value, torch.Tensor) and value.untyped_storage().data_ptr() == address:
        if not value.is_contiguous():
            return value.contiguous()
        return _InSlot(value.data_ptr() - address, value.dtype, tuple(value.shape))
    return value


class SharedBatch(dict[str, Any]):
    """A batch whose tensors live in a worker's shared slot; pickles as the slot, not its
    bytes. Copies (``copy.copy``, ``copy.deepcopy``) are plain dicts of the same values."""

    def __init__(self, batch: Mapping[str, Any], slot: _SharedSlot) -> None:
        super().__init__(batch)
        self._slot = slot

    def __reduce__(self) -> tuple[Any, ...]:
        encoded = _encode(self, self._slot.address)
        self._slot.mm[0] = _LEASED  # until the receiver's last tensor on it dies
        return _rebuild, (DupFd(self._slot.fd), self._slot.size, encoded)

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return copy.deepcopy(dict(self), memo)


def _rebuild(handle: Any, size: int, encoded: dict[str, Any]) -> dict[str, Any]:
    """The receiving side of :meth:`SharedBatch.__reduce__`: the batch on the mapped slot,
    which is handed back (its flag cleared) when the last tensor on it dies."""
    fd = handle.detach()
    try:
        mm = mmap.mmap(fd, size)
    finally:
        os.close(fd)
    payload = np.frombuffer(mm, dtype=np.uint8, offset=HEADER_BYTES)
    storage = _watched_storage(payload, functools.partial(mm.__setitem__, 0, _FREE))
    return _decode(encoded, storage)


def _decode(value: Any, storage: torch.UntypedStorage) -> Any:
    if isinstance(value, dict):
        return {k: _decode(v, storage) for k, v in value.items()}
    if isinstance(value, _InSlot):
        return _on(storage, value.offset, value.dtype, value.shape)
    return value
