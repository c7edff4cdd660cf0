"""Command-line entry of the trainer: ``CONFIG [--resume [PATH] | --new-run] [--work-dir DIR] [k=v ...]``.

``tools/train.py`` and ``ovseg train`` call ``main_train``; under ``torchrun`` every process runs
it and ``train`` picks up the distributed environment::

    torchrun --nproc-per-node 8 tools/train.py configs/clip/tiny.yaml train.max_iters=2000
    python -m ovseg.engine CONFIG --resume          # same, one process
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from ovseg.config import load_config
from ovseg.engine.trainer import train
from ovseg.errors import OVSegError


def build_parser(prog: str = "ovseg train") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Train a task from a YAML config.")
    parser.add_argument("config", help="training config YAML (or a preset name)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="PATH",
        help="continue from the newest usable checkpoint in the work dir, or from PATH",
    )
    parser.add_argument(
        "--new-run",
        action="store_true",
        help="start a new run in a fresh sub-folder WORK_DIR/run_<UTC time> (train.new_run=true); "
        "without it a work dir that holds another run is refused",
    )
    parser.add_argument("--work-dir", default=None, help="output folder (overrides work_dir)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return parser


def parse_train_args(argv: Sequence[str] | None, prog: str = "ovseg train") -> argparse.Namespace:
    """Parse the arguments; a ``key=value`` right after a bare ``--resume`` stays an override."""
    args = build_parser(prog).parse_intermixed_args(argv)
    if isinstance(args.resume, str) and "=" in args.resume and not os.path.exists(args.resume):
        args.overrides = [args.resume, *args.overrides]
        args.resume = True
    return args


def main_train(argv: Sequence[str] | None = None, prog: str = "ovseg train") -> int:
    """Run training as the command line asks; returns the process exit code.

    0 when training finished; 2 (with the message on stderr) for an ``OVSegError`` such as a
    work dir that holds another run or a resumed checkpoint trained with another config.
    """
    args = parse_train_args(argv, prog)
    try:
        cfg = load_config(args.config, args.overrides)
        _apply_args(cfg, args)
        rank = int(os.environ.get("RANK", "0"))
        logging.basicConfig(
            level=logging.INFO if rank == 0 else logging.WARNING,
            format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
        )
        train(cfg, resume=args.resume)
    except OVSegError as exc:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _apply_args(cfg: DictConfig, args: argparse.Namespace) -> None:
    """``--new-run`` and ``--work-dir`` into the config (default work dir: work_dirs/<config>)."""
    if args.new_run:
        cfg.train = cfg.get("train") or {}
        cfg.train.new_run = True
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif not cfg.get("work_dir"):
        cfg.work_dir = str(Path("work_dirs") / Path(str(args.config)).stem)
