"""``python -m ovseg.engine CONFIG ...`` (also usable as a torchrun module target)."""

import sys

from ovseg.engine.launch import main_train

if __name__ == "__main__":
    sys.exit(main_train(sys.argv[1:], prog="python -m ovseg.engine"))
