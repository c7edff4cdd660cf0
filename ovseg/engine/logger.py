"""Training logs: a tqdm bar, ``work_dir/log.jsonl`` and (if installed) TensorBoard; rank 0 only.

Each line of ``log.jsonl`` is one JSON object: ``{"mode": "train", "iter": int, "lr": float,
"loss": float, ..., "time": float (s/iter), "data_time": float, "it_s": float (since
the previous line, wall clock: evaluation and checkpoints included)}`` or ``{"mode": "val", "iter":
int, <metric>: float, ...}``. On resume, lines past the resumed iteration are dropped first.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ovseg.fileio import atomic_path

LOGGER = logging.getLogger("ovseg.engine")


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN / inf
    return value


def _truncate_log(path: Path, last_iter: int) -> None:
    """Keep only the records of ``path`` with ``iter <= last_iter`` (rewritten atomically)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the kill
        if int(record.get("iter", 0)) <= last_iter:
            kept.append(line)
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")


class TrainLogger:
    """Writes progress for one run. Every method is a no-op on ranks other than 0."""

    def __init__(
        self, work_dir: str | os.PathLike, *, enabled: bool, max_iters: int, start_iter: int = 0
    ) -> None:
        self.enabled = enabled
        self.path = Path(work_dir) / "log.jsonl"
        self._file = None
        self._bar = None
        self._tb = None
        if not enabled:
            return
        _truncate_log(self.path, start_iter)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._bar = tqdm(
            total=max_iters, initial=start_iter, desc="train", dynamic_ncols=True, file=sys.stderr
        )
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            SummaryWriter = None  # noqa: N806
        if SummaryWriter is not None:
            self._tb = SummaryWriter(
                log_dir=str(Path(work_dir) / "tensorboard"), purge_step=start_iter + 1
            )

    def log(self, mode: str, iteration: int, values: Mapping[str, float]) -> None:
        """Append one record; ``mode`` is ``"train"`` or ``"val"``."""
        if not self.enabled:
            return
        record = {"mode": mode, "iter": int(iteration)}
        record.update({k: _json_value(float(v)) for k, v in values.items()})
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(f"{mode}/{key}", float(value), iteration)
        if mode == "train":
            shown = {k: f"{float(v):.4g}" for k, v in values.items() if k in ("loss", "lr")}
            self._bar.set_postfix(shown, refresh=False)
        else:
            text = ", ".join(f"{k}={float(v):.4f}" for k, v in values.items())
            self._bar.write(f"[val iter {iteration}] {text}")

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
        self._bar = self._file = self._tb = None
