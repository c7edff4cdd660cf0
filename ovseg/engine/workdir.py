"""Which run a work dir belongs to: refuse to start over another run, check a resumed config.

A work dir holds one run. Its files (``config.yaml``, ``log.jsonl``, ``iter_*.pth``,
``last_checkpoint``, ``model_final.*``) are only ever written by that run: a new run into a
folder that has them stops with a ``ConfigError`` (nothing of the old run is touched), unless
``train.new_run`` asks for a fresh time-stamped sub-folder. ``--resume`` continues a run only
with the config it was started with, up to the keys in ``RESUME_MAY_CHANGE``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ovseg.engine.checkpoint import POINTER, list_checkpoints
from ovseg.errors import ConfigError

# Keys a resumed run may set differently from the checkpoint's config. They say where and how
# the run is carried out or recorded, not what it computes (world size and gradient accumulation
# may change because the checkpoint stores the data position in global samples); ``max_iters``
# may grow to extend a run (the schedule then spans the new length from the resumed iteration).
RESUME_MAY_CHANGE = (
    "work_dir",
    "train.resume",
    "train.new_run",
    "train.max_iters",
    "train.grad_accum",
    "train.device",
    "train.log_interval",
    "train.eval_interval",
    "train.ckpt_interval",
    "train.keep_last",
    "train.find_unused_parameters",
    "data.num_workers",
    "data.val_batch_size",
)
CONFIG_NAME = "config.yaml"
LOG_NAME = "log.jsonl"


def run_files(work_dir: str | os.PathLike) -> list[str]:
    """Names of the files in ``work_dir`` that a training run writes (sorted; [] if none)."""
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        return []
    names = {p.name for p in list_checkpoints(work_dir)}
    names |= {p.name for p in work_dir.glob("model_final.*")}
    names |= {n for n in (CONFIG_NAME, LOG_NAME, POINTER) if (work_dir / n).exists()}
    return sorted(names)


def _describe(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def refuse_other_run(work_dir: Path, found: list[str], why: str = "") -> ConfigError:
    """The error for starting a run in ``work_dir`` that already holds ``found``."""
    return ConfigError(
        f"The work dir {work_dir} holds another training run ({_describe(found)}){why}. Nothing "
        "was changed. Pass --resume to continue that run, another --work-dir for a new one, or "
        "--new-run (train.new_run=true) to put the new run in a fresh time-stamped sub-folder."
    )


def new_run_dir(work_dir: Path) -> Path:
    """A sub-folder ``run_YYYYmmdd_HHMMSS[_k]`` (UTC) of ``work_dir`` that does not exist yet."""
    stamp = time.strftime("run_%Y%m%d_%H%M%S", time.gmtime())
    candidate, k = work_dir / stamp, 1
    while candidate.exists():
        candidate, k = work_dir / f"{stamp}_{k}", k + 1
    return candidate


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


def _normalise(cfg: Mapping[str, Any] | str) -> dict[str, Any]:
    node = OmegaConf.create(cfg)
    plain = OmegaConf.to_container(node, resolve=True)
    return plain if isinstance(plain, dict) else {}


def config_differences(
    stored: Mapping[str, Any] | str, given: Mapping[str, Any]
) -> list[tuple[str, Any, Any]]:
    """``(dotted key, stored value, given value)`` for every key that differs, sorted by key.

    ``stored`` is a config mapping or its YAML text (as kept in a checkpoint). Keys under
    ``RESUME_MAY_CHANGE`` are ignored; a key missing on one side reads as ``<unset>``.
    """
    old, new = _flatten(_normalise(stored)), _flatten(_normalise(given))
    old.pop("_source_", None)
    new.pop("_source_", None)
    ignored = tuple(RESUME_MAY_CHANGE)
    diffs = []
    for key in sorted(set(old) | set(new)):
        if key in ignored or key.startswith(tuple(k + "." for k in ignored)):
            continue
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        if a != b or isinstance(a, bool) != isinstance(b, bool):
            diffs.append((key, a, b))
    return diffs


def check_resume_config(stored: Any, given: Mapping[str, Any], checkpoint: str) -> None:
    """``ConfigError`` naming the differing keys if ``stored`` (YAML text) is not ``given``."""
    if not stored:
        return  # a checkpoint without its config (older format): nothing to compare
    diffs = config_differences(stored, given)
    if not diffs:
        return
    shown = "; ".join(f"{k}: {a!r} in the checkpoint, {b!r} now" for k, a, b in diffs[:8])
    more = f" (and {len(diffs) - 8} more)" if len(diffs) > 8 else ""
    raise ConfigError(
        f"--resume: {checkpoint} was trained with another config: {shown}{more}. Resume with "
        "the config it was trained with, or start a new run (another --work-dir, or --new-run). "
        f"Only these may change on resume: {', '.join(RESUME_MAY_CHANGE)}."
    )
