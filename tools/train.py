"""Train from a config: ``python tools/train.py CONFIG [--resume] [key=value ...]``.

Runs one process, or several under ``torchrun --nproc-per-node N tools/train.py CONFIG``.
"""

import sys

from ovseg.engine.launch import main_train

if __name__ == "__main__":
    sys.exit(main_train(sys.argv[1:], prog="tools/train.py"))
