"""``ovseg predict`` as a torchrun worker (tests launch it with tests/torchrun.py).

Exits 0 when the command returns 0 or 1 (1: some images failed, as the test expects), so the
test can compare the outputs either way.
"""

import sys

from ovseg.cli import main

if __name__ == "__main__":
    code = main(["predict", *sys.argv[1:]])
    sys.exit(0 if code in (0, 1) else code)
