"""Meta's released SAM checkpoints and where torch hub keeps them (no torch import).

``ovseg list`` reads this table to say whether a preset's SAM is downloaded without importing
torch or segment-anything.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: the tag of the official release (``SamDecoder(pretrained="sa1b")``)
OFFICIAL_TAG = "sa1b"

#: The checkpoints of the official release: file name and where it is published.
OFFICIAL_CHECKPOINTS: dict[str, dict[str, str]] = {
    "vit_b": {
        "file": "sam_vit_b_01ec64.pth",
        "url": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
    },
    "vit_l": {
        "file": "sam_vit_l_0b3195.pth",
        "url": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    },
    "vit_h": {
        "file": "sam_vit_h_4b8939.pth",
        "url": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
    },
}


def torch_hub_dir() -> Path:
    """``torch.hub.get_dir()``; computed from ``TORCH_HOME`` / ``XDG_CACHE_HOME`` as torch does
    when torch is not imported yet (so that asking costs no torch import)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return Path(torch.hub.get_dir())
    cache = os.getenv("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    return Path(os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(cache, "torch")))) / "hub"


def official_checkpoint_file(model_type: str) -> Path:
    """Where torch hub keeps the official checkpoint of ``model_type`` (it may not exist)."""
    return torch_hub_dir() / "checkpoints" / OFFICIAL_CHECKPOINTS[model_type]["file"]
