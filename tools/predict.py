"""Segment images: ``python tools/predict.py IMAGE_OR_FOLDER [--preset P] [--vocab ...]``."""

import sys

from ovseg.cli import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]]))
