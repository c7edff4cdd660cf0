"""The authors' released DenseCLIP checkpoints: file names and addresses, without torch.

``ovseg list`` and the missing-weights errors read this table; the architectures and the key
mapping live in :mod:`ovseg.models.denseclip_release`.
"""

from __future__ import annotations

import os
from pathlib import Path

from ovseg.model_zoo.sam_release import torch_hub_dir

#: ``name -> {file, url, config}``: the checkpoints of the DenseCLIP model zoo
#: (github.com/raoyongming/DenseCLIP, README "Segmentation / Model Zoo"), the file name ovseg
#: looks for in torch hub's checkpoint folder, and the reference config that trained each.
DENSECLIP_RELEASES: dict[str, dict[str, str]] = {
    "res50": {
        "file": "denseclip_fpn_res50_512x512_80k.pth",
        "url": "https://cloud.tsinghua.edu.cn/f/8636d4a95c60418ba63c/?dl=1",
        "config": "segmentation/configs/denseclip_fpn_res50_512x512_80k.py",
    },
    "res101": {
        "file": "denseclip_fpn_res101_512x512_80k.pth",
        "url": "https://cloud.tsinghua.edu.cn/f/87387f3625ac42a68da5/?dl=1",
        "config": "segmentation/configs/denseclip_fpn_res101_512x512_80k.py",
    },
    "vit-b": {
        "file": "denseclip_fpn_vit-b_640x640_80k.pth",
        "url": "https://cloud.tsinghua.edu.cn/f/d056a1a943214d479cd1/?dl=1",
        "config": "segmentation/configs/denseclip_fpn_vit-b_640x640_80k.py",
    },
}


def release_path(name: str) -> Path:
    """Where ovseg looks for release ``name`` (it may not exist)."""
    return torch_hub_dir() / "checkpoints" / DENSECLIP_RELEASES[name]["file"]


def release_missing_message(name: str, looked_at: str | os.PathLike) -> str:
    """What to download for release ``name`` and where to put it."""
    entry = DENSECLIP_RELEASES[name]
    return (
        f"DenseCLIP's released checkpoint {entry['file']} is not at {looked_at}. Download it from "
        f"the DenseCLIP model zoo (github.com/raoyongming/DenseCLIP, {entry['config']}): "
        f"{entry['url']}, save it as {entry['file']} in torch hub's checkpoint folder "
        f"({release_path(name).parent}), or give its path as pipeline.weights=PATH."
    )
