"""Run the reference MDETR code (ashkamath/mdetr) on the tiny test weights; store its outputs.

The test ``tests/models/detectors/test_mdetr_model.py`` compares ovseg's MDETR with the stored
outputs. This script is run once, by hand, on a checkout of the reference repository (its
``models/`` and ``util/`` folders are imported from ``--reference``; nothing of it is copied):

    git clone https://github.com/ashkamath/mdetr /tmp/mdetr_ref
    PYTHONPATH=. python tools/mdetr_reference_outputs.py --reference /tmp/mdetr_ref \
        --out tests/models/detectors/mdetr_reference.npz

What it does: builds the reference ``MDETR`` as ``hubconf.py``'s ``_make_detr`` does
(``Backbone("resnet18")`` + ``PositionEmbeddingSine(normalize=True)``, ``Transformer(...,
return_intermediate_dec=True)``, ``contrastive_align_loss=True``) with the tiny sizes of
``tests/models/detectors/tiny_mdetr.py``, loads the tiny filled weights strictly
(``load_state_dict``), and runs ``encode_and_save=True`` then ``False`` on two padded random
images and two captions of different lengths. Two adaptations to today's libraries, not to the
model: torchvision's ResNet is built with ``weights=None`` (the reference asks for ImageNet
weights, which the filled weights replace anyway), and ``batch_encode_plus`` (gone from
transformers 5) is the tokenizer's ``__call__`` with the same arguments.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

CAPTIONS = ["a cat. red car", "the blue star"]
IMAGE_SIZES = [(64, 96), (80, 72)]  # (H, W) after the resize; padded to (80, 96)
SEED = 0


def reference_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """Two normalised-looking random images zero-padded into one batch, and the padding mask."""
    generator = torch.Generator().manual_seed(SEED)
    height = max(h for h, _ in IMAGE_SIZES)
    width = max(w for _, w in IMAGE_SIZES)
    images = torch.zeros(len(IMAGE_SIZES), 3, height, width)
    mask = torch.ones(len(IMAGE_SIZES), height, width, dtype=torch.bool)
    for index, (h, w) in enumerate(IMAGE_SIZES):
        images[index, :, :h, :w] = torch.randn(3, h, w, generator=generator)
        mask[index, :h, :w] = False
    return images, mask


def _patch_libraries() -> None:
    import torchvision
    import transformers

    original = torchvision.models.resnet18

    def resnet18(pretrained: bool = False, **kwargs):  # noqa: ANN202, ARG001
        kwargs.pop("weights", None)
        return original(weights=None, **kwargs)

    torchvision.models.resnet18 = resnet18
    fast = transformers.RobertaTokenizerFast
    if not hasattr(fast, "batch_encode_plus"):
        fast.batch_encode_plus = lambda self, text, **kw: self(text, **kw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(args.reference.resolve()))
    _patch_libraries()
    import transformers
    from models.backbone import Backbone, Joiner
    from models.mdetr import MDETR
    from models.position_encoding import PositionEmbeddingSine
    from models.transformer import Transformer

    from tests.models.detectors.tiny_mdetr import (
        TINY_ARCHITECTURE,
        tiny_state_dict,
        tiny_text_config,
        write_tiny_tokenizer,
    )

    arch = TINY_ARCHITECTURE
    with tempfile.TemporaryDirectory() as tmp:
        text_folder = write_tiny_tokenizer(Path(tmp) / "roberta")
        transformers.RobertaModel(transformers.RobertaConfig(**tiny_text_config())).save_pretrained(
            text_folder
        )
        transformers.RobertaTokenizerFast.from_pretrained(text_folder).save_pretrained(text_folder)
        backbone = Backbone(arch["backbone"], True, False, False)
        joiner = Joiner(backbone, PositionEmbeddingSine(arch["hidden_dim"] // 2, normalize=True))
        joiner.num_channels = backbone.num_channels
        transformer = Transformer(
            d_model=arch["hidden_dim"], nhead=arch["nheads"],
            num_encoder_layers=arch["enc_layers"], num_decoder_layers=arch["dec_layers"],
            dim_feedforward=arch["dim_feedforward"], return_intermediate_dec=True,
            text_encoder_type=str(text_folder),
        )  # fmt: skip
        model = MDETR(
            joiner, transformer, num_classes=arch["num_classes"],
            num_queries=arch["num_queries"], contrastive_align_loss=True,
            contrastive_hdim=arch["contrastive_hdim"],
        ).eval()  # fmt: skip
        model.load_state_dict(tiny_state_dict(SEED), strict=True)
        images, mask = reference_inputs()
        from util.misc import NestedTensor

        samples = NestedTensor(images, mask)
        with torch.no_grad():
            cache = model(samples, CAPTIONS, encode_and_save=True)
            out = model(samples, CAPTIONS, encode_and_save=False, memory_cache=cache)
    np.savez_compressed(
        args.out,
        images=images.numpy(),
        mask=mask.numpy(),
        input_ids=cache["tokenized"]["input_ids"].numpy(),
        pred_logits=out["pred_logits"].numpy(),
        pred_boxes=out["pred_boxes"].numpy(),
        proj_queries=out["proj_queries"].numpy(),
        proj_tokens=out["proj_tokens"].numpy(),
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
