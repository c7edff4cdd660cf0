"""Meta's released SAM checkpoints and where ovseg looks for them, without importing torch.

``ovseg list`` reports whether a preset's SAM weights are present; it reads this table and
computes torch hub's checkpoint folder the way ``torch.hub.get_dir()`` does, so that listing the
presets never imports torch.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: the tag of the released weights (``SamDecoder(pretrained="sa1b")``, the default)
OFFICIAL_TAG = "sa1b"

#: ``model_type -> {"file": name, "url": address}`` of segment-anything's release.
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
    """``torch.hub.get_dir()``: torch's own answer when torch is already imported (it may have
    been changed with ``torch.hub.set_dir``), else ``$TORCH_HOME/hub`` with torch's default
    ``TORCH_HOME`` (``$XDG_CACHE_HOME/torch``, ``~/.cache/torch``)."""
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "hub"):
        return Path(torch.hub.get_dir())
    cache = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    home = os.environ.get("TORCH_HOME", os.path.join(cache, "torch"))
    return Path(os.path.expanduser(home)) / "hub"


def official_checkpoint_path(model_type: str) -> Path:
    """Where the released checkpoint of ``model_type`` is cached (it may not exist yet)."""
    return torch_hub_dir() / "checkpoints" / OFFICIAL_CHECKPOINTS[model_type]["file"]
