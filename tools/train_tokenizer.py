"""Train the synthetic world's BPE tokenizer: ``python tools/train_tokenizer.py OUT_DIR``.

Writes a Hugging Face tokenizer folder (``tokenizer.json``, ``tokenizer_config.json``) loadable
with ``transformers.PreTrainedTokenizerFast.from_pretrained(OUT_DIR)``; see
``ovseg/data/world_tokenizer.py``. The packaged one was made with the defaults:
``python tools/train_tokenizer.py ovseg/model_zoo/tokenizers/shapes-bpe``.
"""

import argparse
import sys

from ovseg.data.world_tokenizer import (
    DEFAULT_NUM_SCENES,
    DEFAULT_VOCAB_SIZE,
    load_world_tokenizer,
    train_world_tokenizer,
)
from ovseg.errors import OVSegError

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="tools/train_tokenizer.py", description=__doc__)
    parser.add_argument("out_dir", help="folder to write (must not exist unless --overwrite)")
    parser.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE)
    parser.add_argument("--num-scenes", type=int, default=DEFAULT_NUM_SCENES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    try:
        out = train_world_tokenizer(
            args.out_dir,
            vocab_size=args.vocab_size,
            num_scenes=args.num_scenes,
            seed=args.seed,
            overwrite=args.overwrite,
        )
    except OVSegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"{out}: {len(load_world_tokenizer(out))} tokens")
    sys.exit(0)
