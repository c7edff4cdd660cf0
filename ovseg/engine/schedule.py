"""Per-iteration learning-rate schedules with linear warmup: poly, cosine, constant.

``lr(it) = base_lr * lr_mult * factor(it)`` for the 0-based iteration ``it`` in [0, max_iters).
Warmup ramps linearly from ``warmup_ratio`` to 1 over ``warmup_iters`` (iteration ``it`` gets
``warmup_ratio + (1 - warmup_ratio) * (it + 1) / warmup_iters``); after it the decay runs over
the remaining ``max_iters - warmup_iters`` iterations down to ``min_lr_ratio``.
"""

from __future__ import annotations

import math
from typing import Any

from torch.optim import Optimizer

from ovseg.errors import ConfigError

SCHEDULES = ("cosine", "poly", "constant")


def lr_factor(
    it: int,
    max_iters: int,
    *,
    type: str = "cosine",
    warmup_iters: int = 0,
    warmup_ratio: float = 0.0,
    min_lr_ratio: float = 0.0,
    power: float = 1.0,
) -> float:
    """Multiplier of the base learning rate at 0-based iteration ``it``."""
    if it < warmup_iters:
        return warmup_ratio + (1.0 - warmup_ratio) * (it + 1) / warmup_iters
    span = max(1, max_iters - warmup_iters)
    progress = min(1.0, (it - warmup_iters) / span)
    if type == "constant":
        decay = 1.0
    elif type == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif type == "poly":
        decay = (1.0 - progress) ** power
    else:
        raise ConfigError(f"Unknown schedule type {type!r}; use one of {', '.join(SCHEDULES)}.")
    return min_lr_ratio + (1.0 - min_lr_ratio) * decay


class IterLRScheduler:
    """Sets every param group's ``lr`` to ``group['base_lr'] * factor(it)`` once per iteration.

    ``base_lr`` is stored in each param group by ``build_optimizer`` (base lr times the group's
    ``lr_mult``). The state is just the last iteration set, so resuming is exact.
    """

    def __init__(self, optimizer: Optimizer, max_iters: int, **schedule: Any) -> None:
        kind = schedule.get("type", "cosine")
        if kind not in SCHEDULES:
            raise ConfigError(f"Unknown schedule type {kind!r}; use one of {', '.join(SCHEDULES)}.")
        if int(schedule.get("warmup_iters", 0)) < 0:
            raise ConfigError("schedule.warmup_iters must be >= 0.")
        self.optimizer = optimizer
        self.max_iters = int(max_iters)
        self.schedule = dict(schedule)
        self.last_iter = -1

    def factor(self, it: int) -> float:
        return lr_factor(it, self.max_iters, **self.schedule)

    def step_to(self, it: int) -> float:
        """Set the learning rates for iteration ``it``; returns the factor applied."""
        f = self.factor(it)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * f
        self.last_iter = it
        return f

    def state_dict(self) -> dict[str, Any]:
        return {"last_iter": self.last_iter, "max_iters": self.max_iters}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_iter = int(state["last_iter"])
