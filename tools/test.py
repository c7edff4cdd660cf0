"""Evaluate a config: ``python tools/test.py CONFIG [key=value ...]`` (same as ``ovseg eval``).

Shard the images over processes with ``torchrun --nproc-per-node N tools/test.py CONFIG``.
"""

import sys

from ovseg.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
