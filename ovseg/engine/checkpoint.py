"""Training checkpoints in a work dir: ``iter_%07d.pth`` files, a ``last_checkpoint`` pointer.

A training checkpoint is a dict of plain data (tensors, lists, ints, floats, strings)::

    {"format": 1, "iteration": int, "epoch": int, "epoch_step": int, "world_size": int,
     "model": state_dict, "optimizer": ..., "scheduler": ..., "scaler": ...,
     "rng": [per-rank capture_rng_state() dicts], "config": str (resolved YAML),
     "run_id": str, "checkpoints": [names of this run's checkpoints kept in the work dir]}

Pruning (``keep_last``) only removes checkpoints the same run wrote: the trainer passes the
names it wrote (and, on resume in the same work dir, the names the resumed checkpoint lists);
any other ``iter_*.pth`` file in the folder is left alone.

Files are written with ``ovseg.weights.save_checkpoint`` (temp file + fsync + rename), so a file
that exists under its final name was complete when written; a file cut short later (disk full,
copy interrupted) is caught by the safe loader's ``CheckpointError`` and the previous checkpoint
is used instead.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ovseg.errors import CheckpointError
from ovseg.fileio import atomic_path
from ovseg.weights import load_checkpoint, save_checkpoint

LOGGER = logging.getLogger("ovseg.engine")
POINTER = "last_checkpoint"
FORMAT_VERSION = 1
_NAME = re.compile(r"^iter_(\d+)\.pth$")
REQUIRED_KEYS = ("iteration", "epoch", "epoch_step", "model", "optimizer", "scheduler")


def checkpoint_name(iteration: int) -> str:
    return f"iter_{iteration:07d}.pth"


def list_checkpoints(work_dir: str | os.PathLike) -> list[Path]:
    """The ``iter_*.pth`` files in ``work_dir``, newest (highest iteration) first."""
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in work_dir.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def read_pointer(work_dir: str | os.PathLike) -> Path | None:
    """The checkpoint named by ``work_dir/last_checkpoint``, or None if there is no pointer."""
    pointer = Path(work_dir) / POINTER
    if not pointer.is_file():
        return None
    name = pointer.read_text(encoding="utf-8").strip()
    if not name:
        return None
    path = Path(name)
    return path if path.is_absolute() else Path(work_dir) / path


def _iteration(name: str) -> int:
    m = _NAME.match(name)
    return int(m.group(1)) if m else -1


def write_checkpoint(
    state: Mapping[str, Any],
    work_dir: str | os.PathLike,
    *,
    keep_last: int | None = None,
    written: list[str] | None = None,
) -> Path:
    """Save ``state`` as ``work_dir/iter_%07d.pth``, point ``last_checkpoint`` at it, prune.

    ``written``: names of the checkpoints this run wrote in ``work_dir`` before (the trainer
    keeps one list per run); it is updated in place to the run's kept checkpoints and stored
    in the file as ``checkpoints``. Only those are pruned: ``keep_last`` (None or <= 0: keep
    all) counts them, newest iteration first. None means no earlier checkpoint of this run, so
    nothing else is removed. Call on one rank only.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / checkpoint_name(int(state["iteration"]))
    owned = sorted({*(written or ()), path.name}, key=_iteration, reverse=True)
    kept = owned[:keep_last] if keep_last and keep_last > 0 else owned
    if path.name not in kept:  # a checkpoint older than the kept ones: keep it too
        kept.append(path.name)
    save_checkpoint(dict(state, format=FORMAT_VERSION, checkpoints=list(kept)), path)
    with atomic_path(work_dir / POINTER) as tmp:
        Path(tmp).write_text(path.name + "\n", encoding="utf-8")
    for name in owned:
        if name not in kept:
            (work_dir / name).unlink(missing_ok=True)
    if written is not None:
        written[:] = kept
    return path


def load_training_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load one training checkpoint; ``CheckpointError`` if unreadable or not a training state."""
    state = load_checkpoint(path, map_location="cpu")
    if not isinstance(state, Mapping) or any(k not in state for k in REQUIRED_KEYS):
        raise CheckpointError(
            f"{path} is not an ovseg training checkpoint (needs keys {', '.join(REQUIRED_KEYS)}); "
            "pass a checkpoint written by `ovseg train`, or start without --resume."
        )
    return dict(state)


def find_resume_checkpoint(work_dir: str | os.PathLike) -> tuple[Path, dict[str, Any]] | None:
    """The newest loadable training checkpoint in ``work_dir`` and its state, or None.

    Tries the file ``last_checkpoint`` names first, then every ``iter_*.pth`` newest first. A
    file the loader rejects (cut short, corrupt) is skipped with a warning.
    """
    candidates: list[Path] = []
    pointed = read_pointer(work_dir)
    if pointed is not None:
        if pointed.is_file():
            candidates.append(pointed)
        else:
            LOGGER.warning(
                "%s names %s, which does not exist; scanning %s.", POINTER, pointed, work_dir
            )
    for path in list_checkpoints(work_dir):
        if all(path.resolve() != c.resolve() for c in candidates):
            candidates.append(path)
    for path in candidates:
        try:
            return path, load_training_checkpoint(path)
        except CheckpointError as exc:
            LOGGER.warning("Checkpoint %s cannot be used (%s); trying the previous one.", path, exc)
    return None
