"""Make a shippable weight file: ``python tools/export_weights.py SRC DST [--fp32]``.

Prints the sha256 to enter in ``ovseg/model_zoo/embedded.py``.
"""

import argparse
import sys

from ovseg.model_zoo.embedded import export_weights

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="tools/export_weights.py", description=__doc__)
    parser.add_argument("source", help="trained weights (safetensors or torch file)")
    parser.add_argument("destination", help="output .safetensors")
    parser.add_argument("--fp32", action="store_true", help="keep float32 (default: fp16)")
    args = parser.parse_args()
    print(export_weights(args.source, args.destination, fp16=not args.fp32))
    sys.exit(0)
