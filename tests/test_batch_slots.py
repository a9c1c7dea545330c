"""Batches handed from DataLoader workers through reused shared-memory slots.

The expected values are arithmetic on the indices, computed here, never read back from
the code under test; reuse is observed through the workers' own slot counts.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Sequence
from multiprocessing.reduction import ForkingPickler
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from stormfusion.data import batch_slots
from stormfusion.data.batch_slots import allocate, slot_count

pytestmark = pytest.mark.skipif(
    not batch_slots.slots_available(), reason="memfd_create is Linux only"
)


def _expected(index: int) -> dict[str, torch.Tensor]:
    """Item ``index``: three tensors of different dtypes and sizes, known values."""
    return {
        "image": torch.arange(64, dtype=torch.int16).reshape(8, 8) + index,
        "counts": torch.full((3, 5), index * 7, dtype=torch.int32),
        "bytes": torch.full((4, 33), index % 251, dtype=torch.uint8),
    }


class _Numbered(Dataset[dict[str, Any]]):
    """Batches of :func:`_expected` items, built in slots as the window dataset does."""

    def __len__(self) -> int:
        return 90

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**_expected(index), "index": index}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        n = len(indices)
        first = _expected(0)
        specs = {k: ((n, *v.shape), v.dtype) for k, v in first.items()}
        specs["index"] = ((n,), torch.int64)
        tensors, lease = allocate(specs)
        for i, index in enumerate(indices):
            for k, v in _expected(index).items():
                tensors[k][i] = v
        tensors["index"].copy_(torch.tensor(list(indices)))
        batch = {"data": {k: tensors[k] for k in first}, "index": tensors["index"]}
        batch["slots"] = slot_count()  # a plain value travels as itself
        return lease.wrap(batch) if lease is not None else batch


def _check(batch: dict[str, Any]) -> None:
    for i, index in enumerate(batch["index"].tolist()):
        for k, v in _expected(index).items():
            assert torch.equal(batch["data"][k][i], v), (k, index)


def _as_is(batch: Any) -> Any:
    """The batch the dataset's batched fetch built (a module function: spawn pickles it)."""
    return batch


def _loader(workers: int, batch_size: int = 3) -> DataLoader[Any]:
    return DataLoader(_Numbered(), batch_size=batch_size, num_workers=workers, collate_fn=_as_is)


def test_outside_workers_slots_are_private_and_reused_once_free() -> None:
    specs = {"x": ((2, 3), torch.int32), "y": ((5,), torch.uint8)}
    first, lease = allocate(specs)
    assert lease is None and not first["x"].is_shared()
    assert first["x"].shape == (2, 3) and first["y"].dtype == torch.uint8
    kept = [allocate(specs)[0] for _ in range(6)]
    # kept batches each have a slot of their own
    assert len({t["x"].untyped_storage().data_ptr() for t in [*kept, first]}) == 7
    for value, tensors in enumerate(kept):
        tensors["x"].fill_(value)
        tensors["y"].fill_(value + 100)
    for value, tensors in enumerate(kept):
        assert tensors["x"].eq(value).all() and tensors["y"].eq(value + 100).all()
    # dropped at once: one slot serves them all
    places = set()
    for _ in range(20):
        tensors = allocate(specs)[0]
        places.add(tensors["x"].untyped_storage().data_ptr())
        del tensors
    assert len(places) == 1
    assert slot_count(shared=False) >= 7


def test_batches_arrive_intact_and_slots_are_reused() -> None:
    slots: list[int] = []
    seen: list[int] = []
    for batch in _loader(workers=2):
        assert type(batch) is dict  # the receiver gets plain dicts of plain tensors
        _check(batch)
        seen += batch["index"].tolist()
        slots.append(batch["slots"])
    assert sorted(seen) == list(range(90))
    # 15 batches per worker, at most prefetch (2) + the one being read + one held here
    assert max(slots) <= 4


def test_batches_kept_by_the_receiver_are_never_overwritten() -> None:
    batches = list(_loader(workers=1))
    assert len(batches) == 30
    for batch in batches:
        _check(batch)
    assert batches[-1]["slots"] >= 29  # every kept batch needed a slot of its own


def test_a_view_keeps_its_slot_after_its_batch_is_gone() -> None:
    kept: torch.Tensor | None = None
    for number, batch in enumerate(_loader(workers=1)):
        if number == 0:
            kept = batch["data"]["image"][1, 2:4]  # a view; the batch itself is dropped
        _check(batch)
    assert kept is not None
    torch.testing.assert_close(kept, _expected(1)["image"][2:4])


def test_any_collate_function_gets_correct_items() -> None:
    """Items stacked by a collate of the caller's: the slot is released unused."""

    class Items(Dataset[dict[str, Any]]):
        def __len__(self) -> int:
            return len(_Numbered())

        def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
            batch = _Numbered().__getitems__(indices)
            return [
                {k: v[i] for k, v in batch["data"].items()} | {"index": int(batch["index"][i])}
                for i in range(len(indices))
            ]

    loader = DataLoader(Items(), batch_size=4, num_workers=2)
    for batch in loader:
        for i, index in enumerate(batch["index"].tolist()):
            for k, v in _expected(index).items():
                assert torch.equal(batch[k][i], v)


def test_flag_lifecycle_in_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pickled and rebuilt here (as a worker's queue and the main process would): the
    slot is busy while the rebuilt batch or a view lives, free after."""
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: object())
    tensors, lease = allocate({"x": ((4, 4), torch.int32)})
    assert lease is not None
    tensors["x"].copy_(torch.arange(16, dtype=torch.int32).reshape(4, 4))
    shared = lease.wrap({"x": tensors["x"], "name": "a"})
    assert copy.copy(shared) == {"x": tensors["x"], "name": "a"}
    assert type(copy.deepcopy(shared)) is dict
    slot = lease.slot
    received = pickle.loads(ForkingPickler.dumps(shared))
    del shared, tensors, lease
    assert received["name"] == "a"
    torch.testing.assert_close(received["x"], torch.arange(16, dtype=torch.int32).reshape(4, 4))
    assert not slot.free()  # leased to the receiver
    row = received["x"][2]
    del received
    assert not slot.free()  # a view still reads it
    assert row.tolist() == [8, 9, 10, 11]
    del row
    assert slot.free()


def test_spawned_workers_hand_over_slots_too() -> None:
    """Workers started with ``spawn`` (not forked) pass slots the same way."""
    loader = DataLoader(
        _Numbered(),
        batch_size=5,
        num_workers=1,
        collate_fn=_as_is,
        multiprocessing_context="spawn",
    )
    batches = list(loader)
    assert len(batches) == 18
    for batch in batches:
        _check(batch)
