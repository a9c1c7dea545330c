"""DataLoaders of the trainer: sharded batches, the epoch carried with each index, and
settings that keep a GPU fed.

The epoch travels with every index (``(epoch, index)`` pairs), and the dataset's
``set_epoch`` is called in whichever process reads the item: so worker processes can be
kept alive between epochs (``persistent_workers``) and still draw each epoch's
augmentation, which a ``set_epoch`` call in the main process alone would not reach.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from stormfusion.data.dataset import collate_windows
from stormfusion.training.distributed import ShardedBatchSampler

#: Batches each worker prepares ahead on CUDA runs (torch's default is 2).
CUDA_PREFETCH_FACTOR = 4


class EpochItems(Dataset[Any]):
    """``dataset`` indexed by ``(epoch, index)``: selects the epoch, then reads the item."""

    def __init__(self, dataset: Dataset[Any]) -> None:
        self.dataset = dataset
        self.epoch: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def _select(self, epoch: int) -> None:
        if epoch != self.epoch:
            set_epoch = getattr(self.dataset, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(epoch)
            self.epoch = epoch

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        self._select(epoch)
        return self.dataset[index]

    def __getitems__(self, keys: list[tuple[int, int]]) -> Any:
        """A batch through the dataset's batched fetch where it has one (one epoch per
        batch, as :class:`EpochBatches` makes them)."""
        getitems = getattr(self.dataset, "__getitems__", None)
        if not callable(getitems) or len({epoch for epoch, _ in keys}) != 1:
            return [self[key] for key in keys]
        self._select(keys[0][0])
        return getitems([index for _, index in keys])


class EpochBatches(Sampler[list[tuple[int, int]]]):
    """The batches of a :class:`ShardedBatchSampler`, each index paired with its epoch."""

    def __init__(self, batches: ShardedBatchSampler) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.batches.epoch
        for batch in self.batches:
            yield [(epoch, i) for i in batch]

    def __len__(self) -> int:
        return len(self.batches)


def make_loader(
    dataset: Dataset[Any],
    batches: ShardedBatchSampler,
    *,
    workers: int,
    device: torch.device,
    generator: torch.Generator,
) -> DataLoader[Any]:
    """A DataLoader over ``batches``; on CUDA pinned memory and deeper prefetching.

    Workers (when there are any) persist across epochs, so an epoch does not start by
    forking and opening the stores again.
    """
    cuda = device.type == "cuda"
    return DataLoader(
        EpochItems(dataset),
        batch_sampler=EpochBatches(batches),
        num_workers=workers,
        collate_fn=collate_windows,  # the dataset's batched fetch: no copy
        pin_memory=cuda,
        persistent_workers=workers > 0,
        prefetch_factor=(CUDA_PREFETCH_FACTOR if cuda else 2) if workers > 0 else None,
        generator=generator,
    )
