"""Write a trained READ folder as a packaged one: weights in fp16, the same bytes for the same
weights, and the sha256 of every file printed for ``ovseg/model_zoo/embedded.py``.

    python tools/export_read_folder.py work_dirs/shapes_tiny_read/read_model \
        ovseg/model_zoo/weights/read-shapes-tiny
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

COPIED = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _offline_tokenizer_config(path: Path) -> None:
    """A packaged tokenizer never looks online: ``local_files_only`` is true whatever the
    training run's loader recorded (the only field that differs between runs)."""
    text = path.read_text()
    path.write_text(text.replace('"local_files_only": false', '"local_files_only": true'))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="READ folder written by the training run")
    parser.add_argument("destination", type=Path, help="packaged folder to write")
    args = parser.parse_args(argv)
    if not (args.source / "config.json").is_file():
        print(f"error: no config.json in {args.source}", file=sys.stderr)
        return 2
    from ovseg.model_zoo.embedded import export_weights
    from ovseg.weights import sha256_file

    args.destination.mkdir(parents=True, exist_ok=True)
    digests = {
        "model.safetensors": export_weights(
            args.source / "model.safetensors", args.destination / "model.safetensors"
        )
    }
    for name in COPIED:
        if (args.source / name).is_file():
            shutil.copyfile(args.source / name, args.destination / name)
            if name == "tokenizer_config.json":
                _offline_tokenizer_config(args.destination / name)
            digests[name] = sha256_file(args.destination / name)
    print(json.dumps(digests, indent=4, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
