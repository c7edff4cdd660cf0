"""The README's quick-start scene through ``ovseg predict``, against its ground truth (shared
test helper): ``demo/examples/shapes_scene.jpg`` with its class file, and
``shapes_scene_gt.png``, which uses the encoding of ``*_labels.png``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ovseg.cli import main

DEMO = Path(__file__).resolve().parents[1] / "demo" / "examples"
SCENE = DEMO / "shapes_scene.jpg"
CLASS_FILE = DEMO / "shapes_scene.txt"
#: the scene's objects come first in its class file; water and wall follow
NUM_OBJECTS = 4


@dataclass
class QuickStart:
    classes: list[str]
    labels: np.ndarray  # (H, W) uint8 as written to shapes_scene_labels.png
    truth: np.ndarray  # (H, W) uint8, the same encoding
    named: dict[str, str]  # each object's class -> the class most of its pixels were given


def run_quick_start(out: Path, *options: str) -> QuickStart:
    """``ovseg predict SCENE --vocab-file CLASS_FILE --out out --quiet *options``, read back."""
    args = ["predict", str(SCENE), *options, "--vocab-file", str(CLASS_FILE)]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    classes = CLASS_FILE.read_text().splitlines()
    labels = np.asarray(Image.open(out / "shapes_scene_labels.png"))
    truth = np.asarray(Image.open(DEMO / "shapes_scene_gt.png"))
    named = {}
    for index, name in enumerate(classes[:NUM_OBJECTS]):
        winner = int(np.bincount(labels[truth == index]).argmax())
        named[name] = classes[winner] if winner < len(classes) else "unlabelled"
    return QuickStart(classes, labels, truth, named)
