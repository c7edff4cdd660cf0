"""MDETR's released checkpoints (zenodo record 4721981, as ashkamath/mdetr's ``hubconf.py`` and
README name them) and where ovseg looks for them, without importing torch.

Every listed release is the detection / grounding model of ``hubconf.py``'s ``_make_detr``:
100 queries, 255 token classes, RoBERTa-base, contrastive-alignment heads; they differ in the
image backbone and in what they were trained on. A file is looked for in torch hub's checkpoint
folder (where ``torch.hub.load_state_dict_from_url`` puts it), under its name or the
URL-quoted name torch hub gives it (``refcoco%2B_...``).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from ovseg.model_zoo.sam_release import torch_hub_dir

__all__ = ["MDETR_RELEASES", "MDETR_TOKENIZER", "release_candidates", "release_url"]

ZENODO = "https://zenodo.org/record/4721981/files"
#: the Hugging Face repository of the text encoder's tokenizer (``text_encoder_type``)
MDETR_TOKENIZER = "roberta-base"

R101, EB3, EB5 = "resnet101", "timm_tf_efficientnet_b3_ns", "timm_tf_efficientnet_b5_ns"

#: release name (``hubconf.py``'s function name) -> file, backbone, what it was trained for
MDETR_RELEASES: dict[str, dict[str, str]] = {
    "mdetr_resnet101": {
        "file": "pretrained_resnet101_checkpoint.pth", "backbone": R101,
        "trained": "pre-trained on COCO + Visual Genome + Flickr30k (1.3M image-text pairs)",
    },
    "mdetr_efficientnetB3": {
        "file": "pretrained_EB3_checkpoint.pth", "backbone": EB3,
        "trained": "pre-trained on COCO + Visual Genome + Flickr30k (1.3M image-text pairs)",
    },
    "mdetr_efficientnetB5": {
        "file": "pretrained_EB5_checkpoint.pth", "backbone": EB5,
        "trained": "pre-trained on COCO + Visual Genome + Flickr30k (1.3M image-text pairs)",
    },
    "mdetr_resnet101_refcoco": {
        "file": "refcoco_resnet101_checkpoint.pth", "backbone": R101,
        "trained": "fine-tuned on RefCOCO",
    },
    "mdetr_efficientnetB3_refcoco": {
        "file": "refcoco_EB3_checkpoint.pth", "backbone": EB3,
        "trained": "fine-tuned on RefCOCO",
    },
    "mdetr_resnet101_refcocoplus": {
        "file": "refcoco+_resnet101_checkpoint.pth", "backbone": R101,
        "trained": "fine-tuned on RefCOCO+",
    },
    "mdetr_efficientnetB3_refcocoplus": {
        "file": "refcoco+_EB3_checkpoint.pth", "backbone": EB3,
        "trained": "fine-tuned on RefCOCO+",
    },
    "mdetr_resnet101_refcocog": {
        "file": "refcocog_resnet101_checkpoint.pth", "backbone": R101,
        "trained": "fine-tuned on RefCOCOg",
    },
    "mdetr_efficientnetB3_refcocog": {
        "file": "refcocog_EB3_checkpoint.pth", "backbone": EB3,
        "trained": "fine-tuned on RefCOCOg",
    },
}  # fmt: skip


def release_url(name: str) -> str:
    """The download address of release ``name``."""
    return f"{ZENODO}/{quote(MDETR_RELEASES[name]['file'])}"


def release_candidates(name: str) -> list[Path]:
    """Where release ``name``'s file may be cached (the first existing one is used)."""
    folder = torch_hub_dir() / "checkpoints"
    file = MDETR_RELEASES[name]["file"]
    names = dict.fromkeys([file, quote(file)])
    return [folder / n for n in names]
