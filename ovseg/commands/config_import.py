"""``ovseg config import CFG.py --out PRESET.yaml``: an mmseg evaluation config as an ovseg preset."""

from __future__ import annotations

import argparse
from pathlib import Path

HEADER = (
    "# Imported by `ovseg config import` from {source}.\n"
    "# Run it with: ovseg eval {out}   (needs a data section)   or   "
    "ovseg predict IMAGE --preset {out}\n"
)


def cmd_config_import(args: argparse.Namespace) -> int:
    import yaml

    from ovseg.errors import ConfigError
    from ovseg.fileio import atomic_write_text
    from ovseg.interop.mmengine_config import import_mmseg_config

    out = Path(args.out)
    if out.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"--out {out} must end in .yaml (an ovseg preset).")
    if out.exists() and not args.force:
        raise ConfigError(f"{out} exists; pass --force to replace it, or choose another --out.")
    if out.exists() and out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a .yaml file name.")
    preset = import_mmseg_config(args.config)
    text = HEADER.format(source=args.config, out=out) + yaml.safe_dump(preset, sort_keys=False)
    atomic_write_text(out, text)
    if not args.quiet:
        print(
            f"wrote {out} ({preset['pipeline']['backbone']['type']}, benchmark "
            f"{preset['benchmark']}{', with data.test' if 'data' in preset else ''})"
        )
    return 0


def import_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ovseg config import",
        description="Convert a training-free method's mmseg evaluation config (SCLIP, NACLIP, "
        "ClearCLIP, ProxyCLIP configs/cfg_*.py) into an ovseg preset YAML. The file is read "
        "with mmengine's Config.fromfile, which runs its Python code (and its _base_ files) "
        "as mmengine does: import only configs you would run yourself.",
    )
    p.add_argument("config", help="the mmseg config (.py)")
    p.add_argument("--out", required=True, help="the preset YAML to write")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_config_import)
    return p
