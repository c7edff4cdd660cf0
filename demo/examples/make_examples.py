"""Write the example scenes of the demo (deterministic; run from the repository root).

    python demo/examples/make_examples.py            # writes demo/examples/*.jpg/.txt/_gt.png

``shapes_scene``, the quick-start scene, is validation scene 29 of the seed-0 dataset
(``ovseg data synth --out data/synth --seed 0``): a blue square (a class the embedded models
never saw in training), a red diamond, a blue ring and a red star in front of a wall and water.
Its class file fixes the quick start's vocabulary order; ``shapes_scene_gt.png`` is its ground
truth in the encoding ``ovseg predict`` writes to ``*_labels.png`` (per pixel, the index of the
class in that file), so a prediction can be compared with it pixel for pixel.

The other scenes come from ``scene_rng(7, "val", i)``, a seed no dataset in the README uses.
Each class file lists the scene's objects and stuff, plus one stuff class that is absent (it
should get no pixels); a comment names the classes the embedded ``shapes-tiny`` models never saw
in training.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ovseg.data.synthetic import (
    CLASS_NAMES,
    STUFF_CLASSES,
    UNSEEN_CLASSES,
    Scene,
    generate_scene,
    scene_rng,
)
from ovseg.fileio import atomic_write_text, save_jpeg
from ovseg.io import write_png_atomic

SEED = 7
SCENES = (0, 23)  # validation scenes with 3-4 objects, at least one of an unseen class
QUICK_START = (0, "val", 29)  # (dataset seed, split, scene index) of shapes_scene
QUICK_START_CLASSES = ("red star", "red diamond", "blue square", "blue ring", "water", "wall")


def quick_start_scene() -> Scene:
    """The quick-start scene, regenerated from the synthetic world."""
    seed, split, index = QUICK_START
    return generate_scene(scene_rng(seed, split, index), split=split)


def vocabulary_labels(scene: Scene, classes: tuple[str, ...]) -> np.ndarray:
    """(H, W) uint8: per pixel, the index in ``classes`` of the scene's ground-truth class."""
    lookup = np.full(len(CLASS_NAMES), 255, dtype=np.uint8)
    for position, name in enumerate(classes):
        lookup[CLASS_NAMES.index(name)] = position
    labels = lookup[scene.label]
    if (labels == 255).any():
        missing = sorted({CLASS_NAMES[c] for c in np.unique(scene.label[labels == 255])})
        raise ValueError(f"the scene holds classes outside the vocabulary: {missing}")
    return labels


def class_lines(objects: list[str], stuff: tuple[str, ...]) -> list[str]:
    names = list(dict.fromkeys(objects)) + list(stuff)
    absent = next(s for s in STUFF_CLASSES if s not in stuff)
    unseen = [n for n in names if n in UNSEEN_CLASSES]
    return [f"# unseen in training: {', '.join(unseen) or 'none'}", *names, absent]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent))
    out = Path(parser.parse_args().out)
    scene = quick_start_scene()
    save_jpeg(out / "shapes_scene.jpg", scene.image)
    atomic_write_text(out / "shapes_scene.txt", "\n".join(QUICK_START_CLASSES) + "\n")
    write_png_atomic(vocabulary_labels(scene, QUICK_START_CLASSES), out / "shapes_scene_gt.png")
    print(f"shapes_scene: {scene.caption}")
    for index in SCENES:
        scene = generate_scene(scene_rng(SEED, "val", index), split="val")
        stem = f"synthetic_seed{SEED}_val{index:04d}"
        save_jpeg(out / f"{stem}.jpg", scene.image)
        lines = class_lines([o.name for o in scene.instances], scene.stuff)
        atomic_write_text(out / f"{stem}.txt", "\n".join(lines) + "\n")
        print(f"{stem}: {scene.caption}")


if __name__ == "__main__":
    main()
