"""torch.distributed helpers: initialisation from torchrun's environment, rank queries, gathers.

Every helper works without an initialised process group (then it behaves as world size 1), so
tasks can call them unconditionally.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job and which device it trains on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    initialized_here: bool  # True when init_distributed created the process group

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistInfo:
    """Initialise torch.distributed from the torchrun environment (``WORLD_SIZE``, ``RANK``...).

    Uses NCCL when training on CUDA and Gloo on CPU. ``device`` is ``"auto"`` (CUDA when
    available), ``"cpu"`` or ``"cuda"``. A job of one process does not create a process group.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("train.device asks for CUDA but no CUDA device is visible; set cpu.")
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    initialized_here = False
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        kwargs: dict[str, Any] = {"device_id": dev} if use_cuda else {}
        dist.init_process_group(backend=backend, **kwargs)
        initialized_here = True
    return DistInfo(get_rank(), get_world_size(), local_rank, dev, initialized_here)


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_distributed() -> bool:
    return get_world_size() > 1


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def _collective_device() -> torch.device:
    """Device collectives must use: CUDA for NCCL, CPU for Gloo."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_variable(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (N_r, ...) from every rank along dim 0, in rank order.

    Ranks may hold different N_r (e.g. an uneven validation shard); the other dimensions and
    the dtype must agree. No gradient flows through. Returns (sum N_r, ...) on the input's device.
    """
    if not is_distributed():
        return tensor
    device = tensor.device
    work = tensor.detach().to(_collective_device()).contiguous()
    size = torch.tensor([work.shape[0]], device=work.device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(get_world_size())]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    longest = max(counts)
    padded = work.new_zeros((longest, *work.shape[1:]))
    padded[: work.shape[0]] = work
    gathered = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(gathered, padded)
    return torch.cat([g[:n] for g, n in zip(gathered, counts)], dim=0).to(device)


def reduce_mean(values: dict[str, float]) -> dict[str, float]:
    """Average a dict of floats over ranks (every rank must pass the same keys in any order)."""
    if not is_distributed() or not values:
        return dict(values)
    keys = sorted(values)
    packed = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    packed = packed.to(_collective_device())
    dist.all_reduce(packed)
    packed /= get_world_size()
    return dict(zip(keys, packed.cpu().tolist()))


def all_gather_object(obj: Any) -> list[Any]:
    """List of ``obj`` from every rank (a one-element list when not distributed)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
