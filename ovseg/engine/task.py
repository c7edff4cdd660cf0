"""The contract between the training engine and a trainable task.

A *task* is an ``nn.Module`` registered in ``TASKS`` and built from the ``task:`` mapping of a
training config. The engine owns everything generic (devices, DDP, optimiser, schedule, AMP,
accumulation, logging, checkpoints, resume); the task owns the model, the loss and the metrics.

Required::

    forward(batch) -> dict[str, Tensor]
        ``batch`` is what ``collate`` returned, moved to the training device by the engine.
        The dict must hold ``"loss"`` (a 0-dim float tensor, the mean over the *local* batch);
        other 0-dim entries are averaged over ranks and logged.
    collate(samples: list[dict]) -> batch
        Turns dataset samples into one batch (nested dict / list of tensors). Runs in data
        loader workers, so it must not touch CUDA.

Optional (the engine checks with ``hasattr``)::

    data_transform(split: str) -> Callable | None
        The per-sample transform for ``"train"`` / ``"val"``; passed to the dataset as its
        ``transform`` keyword when the dataset config does not set one.
    param_groups(base_lr: float, weight_decay: float) -> list[dict]
        Optimiser parameter groups. Each dict holds ``params`` and may hold ``weight_decay`` and
        ``lr_mult`` (the schedule scales ``base_lr * lr_mult``). Default: one group of every
        parameter with ``requires_grad``.
    after_train_step() -> None
        Called after every optimiser step (e.g. to clamp a learnable temperature).
    evaluate(loader, distributed: bool) -> dict[str, float]
        ``loader`` yields collated batches of this rank's shard of the validation set (not
        moved to a device). With ``distributed`` true, every rank calls it and the task must
        gather / reduce across ranks so that every rank returns the same numbers. The engine
        calls it in eval mode under ``torch.no_grad()`` and the run's autocast.
    export(path) -> None
        Writes the deployable weights (safetensors) to ``path``; called on rank 0 at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class Task(Protocol):
    """Structural type of a task module (see the module docstring for the optional methods)."""

    def forward(self, batch: Any) -> dict[str, Tensor]: ...

    def collate(self, samples: list[dict[str, Any]]) -> Any: ...

    def parameters(self, recurse: bool = True) -> Iterable[Tensor]: ...


def has_method(task: object, name: str) -> bool:
    """True when ``task`` provides the optional method ``name``."""
    return callable(getattr(task, name, None))


def data_transform(task: object, split: str) -> Callable[[Any], Any] | None:
    """The task's transform for ``split`` or None when it has none."""
    if has_method(task, "data_transform"):
        return task.data_transform(split)
    return None
