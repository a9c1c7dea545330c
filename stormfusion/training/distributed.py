"""Process groups for DistributedDataParallel, and the sampler that shards batches.

``torchrun --standalone --nproc_per_node=G -m stormfusion.cli train ...`` starts G
processes and sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` (on several nodes, one
torchrun per node meets the others at a c10d rendezvous: see docs/cluster.md);
:func:`init_distributed` reads them and joins the group (NCCL on GPUs, gloo on CPU). A
plain ``stormfusion train`` is a world of one and never touches ``torch.distributed``.

Batches are sharded by :class:`ShardedBatchSampler`: the *global* batch of a step is the
same slice of one seeded permutation whatever the world size, and each rank takes every
``world_size``-th sample of it. So G processes with batch B / G each see, step for step,
exactly the samples one process with batch B sees, and the averaged gradients agree.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from stormfusion.errors import StormFusionError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the (possibly trivial) process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when more than one process trains together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, metrics and logs."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise StormFusionError(f"environment variable {name}={value!r} is not an integer") from None


def init_distributed() -> DistContext:
    """Join the process group torchrun describes in the environment (if any).

    Uses NCCL when CUDA is available, gloo otherwise. Returns the trivial context for a
    single process.
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext()
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    if not dist.is_available():
        raise StormFusionError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
        logger.info(
            "joined process group: rank %d of %d (%s) on %s",
            rank,
            world,
            backend,
            socket.gethostname(),
        )
    return DistContext(
        rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank
    )


def shutdown_distributed(ctx: DistContext) -> None:
    """Leave the process group (no-op for a single process)."""
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Element-wise sum of ``values`` over ranks (returns ``values`` itself for one process)."""
    if ctx.enabled:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op for one process)."""
    if ctx.enabled:
        dist.barrier()


def all_gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` for one process)."""
    if not ctx.enabled:
        return [obj]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class ShardedBatchSampler(Sampler[list[int]]):
    """Yields this rank's share of each global batch, resumable in the middle of an epoch.

    Epoch ``e`` uses the permutation of ``range(n)`` drawn from a generator seeded with
    ``seed + e`` (or the identity when ``shuffle`` is False). Global batch ``s`` is
    ``perm[s * global_batch : (s + 1) * global_batch]``; rank ``r`` of ``world_size`` takes
    its elements ``r, r + world_size, ...``. With ``drop_last`` only full global batches
    are used (every rank then has the same number of equal-sized steps); otherwise the
    last batch is partial and a rank may get fewer samples (or none) from it.

    ``set_epoch(epoch, start_step)`` selects the epoch and skips its first steps without
    touching the data, which is how a run resumed from a mid-epoch checkpoint continues.
    """

    def __init__(
        self,
        n: int,
        global_batch: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        max_steps: int | None = None,
    ) -> None:
        if global_batch < 1:
            raise StormFusionError(f"batch size must be >= 1, got {global_batch}")
        if global_batch % world_size != 0:
            raise StormFusionError(
                f"batch size {global_batch} is not divisible by the {world_size} processes; "
                "--batch-size is the global batch over all GPUs"
            )
        self.n = n
        self.global_batch = global_batch
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.max_steps = max_steps
        self.epoch = 0
        self.start_step = 0

    @property
    def steps_per_epoch(self) -> int:
        """Global steps in one epoch (after ``drop_last`` and ``max_steps``)."""
        full, rest = divmod(self.n, self.global_batch)
        steps = full if self.drop_last or rest == 0 else full + 1
        return steps if self.max_steps is None else min(steps, self.max_steps)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Select the epoch's permutation and the first step to yield."""
        self.epoch = epoch
        self.start_step = start_step

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.n, generator=generator).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        order = self._order()
        for step in range(self.start_step, self.steps_per_epoch):
            batch = order[step * self.global_batch : (step + 1) * self.global_batch]
            share = batch[self.rank :: self.world_size]
            if share:  # a partial last batch may leave a rank nothing
                yield share

    def __len__(self) -> int:
        return sum(1 for _ in self._shares())

    def _shares(self) -> Iterator[int]:
        for step in range(self.start_step, self.steps_per_epoch):
            if self.rank < min(self.global_batch, self.n - step * self.global_batch):
                yield step
