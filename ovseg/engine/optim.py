"""Optimiser construction from the ``optimizer:`` config mapping (AdamW, Adam, SGD)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ovseg.engine.task import has_method
from ovseg.errors import ConfigError

OPTIMIZERS = {"AdamW": torch.optim.AdamW, "Adam": torch.optim.Adam, "SGD": torch.optim.SGD}


def build_optimizer(task: nn.Module, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Build the optimiser of ``cfg['type']`` over the task's parameter groups.

    ``cfg`` holds ``lr`` and ``weight_decay`` and the optimiser's other keyword arguments
    (``betas``, ``eps``, ``momentum``...). Groups come from ``task.param_groups(lr, wd)`` when the
    task has it; each group gets ``base_lr = lr * group.lr_mult`` for the schedule. Parameters
    without ``requires_grad`` are left out.
    """
    cfg = dict(cfg)
    kind = cfg.pop("type", "AdamW")
    if kind not in OPTIMIZERS:
        raise ConfigError(f"Unknown optimizer {kind!r}; use one of {', '.join(OPTIMIZERS)}.")
    if "lr" not in cfg:
        raise ConfigError("optimizer.lr is required (e.g. optimizer.lr=5e-4).")
    lr = float(cfg.pop("lr"))
    weight_decay = float(cfg.pop("weight_decay", 0.0))
    if "betas" in cfg:
        cfg["betas"] = tuple(float(b) for b in cfg["betas"])

    if has_method(task, "param_groups"):
        raw_groups = task.param_groups(lr, weight_decay)
    else:
        raw_groups = [{"params": list(task.parameters())}]

    groups = []
    for raw in raw_groups:
        group = dict(raw)
        params = [p for p in group["params"] if p.requires_grad]
        if not params:
            continue
        group["params"] = params
        group.setdefault("weight_decay", weight_decay)
        mult = float(group.get("lr_mult", 1.0))
        group["base_lr"] = lr * mult
        group["lr"] = lr * mult
        groups.append(group)
    if not groups:
        raise ConfigError("The task has no trainable parameters (all have requires_grad=False).")
    try:
        return OPTIMIZERS[kind](groups, lr=lr, weight_decay=weight_decay, **cfg)
    except TypeError as exc:
        raise ConfigError(f"Bad optimizer arguments for {kind}: {exc}") from exc
