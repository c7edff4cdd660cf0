"""Deterministic, resumable data loading for training and sharded loading for evaluation.

Two properties make a run reproducible across process counts and across kill / resume:

* ``SeededDataset`` draws each sample's random augmentation from a seed that depends only on
  ``(seed, epoch, index)``, not on which rank or worker loads it or on what ran before.
* ``ResumableDistributedSampler`` shuffles with ``DistributedSampler``'s own (seed, epoch)
  permutation and can start part-way into an epoch. Rank ``r`` takes ``perm[r::W]`` and per-rank
  batch ``b``, so micro-batch ``i`` of all ranks together is the contiguous slice
  ``perm[i*W*b:(i+1)*W*b]``: the same samples a single process with batch ``W*b`` would see.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample of one epoch, well mixed (numpy SeedSequence)."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


class SeededDataset(Dataset):
    """Wraps a map-style dataset; ``__getitem__`` runs under a per-(seed, epoch, index) RNG.

    Inside the call the torch CPU generator, ``random`` and ``numpy.random`` are seeded from
    ``sample_seed``; their previous states are restored afterwards, so loading never disturbs
    the training process's RNG streams.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        s = sample_seed(self.seed, self.epoch, int(index))
        torch_state = torch.random.default_generator.get_state()
        py_state = random.getstate()
        np_state = np.random.get_state()
        try:
            torch.random.default_generator.manual_seed(s)
            random.seed(s)
            np.random.seed(s & 0xFFFFFFFF)
            return self.dataset[index]
        finally:
            torch.random.default_generator.set_state(torch_state)
            random.setstate(py_state)
            np.random.set_state(np_state)


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` (shuffle, drop_last) that can skip the first samples of an epoch.

    ``set_position(epoch, skip)`` selects the epoch's permutation and drops the first ``skip``
    indices of this rank's share (``skip`` = micro-batches already consumed * per-rank batch).
    """

    def __init__(self, dataset: Dataset, *, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.skip = 0

    def set_position(self, epoch: int, skip: int) -> None:
        self.set_epoch(epoch)
        self.skip = int(skip)

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.skip :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.skip)


class ShardedEvalSampler(Sampler[int]):
    """Indices ``rank, rank + W, ...``: every sample exactly once over all ranks (no padding)."""

    def __init__(self, length: int, *, num_replicas: int, rank: int) -> None:
        self.indices = list(range(rank, length, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def build_train_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    num_workers: int,
    collate_fn: Callable[[list[Any]], Any],
    rank: int,
    world_size: int,
    seed: int,
    pin_memory: bool = False,
) -> tuple[DataLoader, ResumableDistributedSampler, SeededDataset]:
    """Loader over ``SeededDataset(dataset)`` with a resumable sampler; per-rank ``batch_size``.

    The loader has its own generator (reseed it per epoch) so creating iterators never draws
    from the global torch RNG.
    """
    seeded = SeededDataset(dataset, seed)
    sampler = ResumableDistributedSampler(seeded, num_replicas=world_size, rank=rank, seed=seed)
    loader = DataLoader(
        seeded,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        drop_last=True,
        pin_memory=pin_memory,
        generator=torch.Generator(),
    )
    return loader, sampler, seeded


def build_eval_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    num_workers: int,
    collate_fn: Callable[[list[Any]], Any],
    rank: int,
    world_size: int,
) -> DataLoader:
    """Loader over this rank's shard of ``dataset``, in order, keeping the last partial batch."""
    sampler = ShardedEvalSampler(len(dataset), num_replicas=world_size, rank=rank)  # type: ignore[arg-type]
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        drop_last=False,
        generator=torch.Generator().manual_seed(0),
    )


def move_to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor inside (dicts, lists, tuples) moved to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch
