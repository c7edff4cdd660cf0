"""Write the synthetic example scenes of the demo (deterministic; run from the repository root).

    python demo/examples/make_examples.py            # writes demo/examples/synthetic_*.jpg/.txt

Each scene comes from ovseg's synthetic world (``generate_scene`` with ``scene_rng(7, "val", i)``,
a seed no dataset in the README uses). Its class file lists the scene's objects and stuff, plus
one stuff class that is absent (it should get no pixels); a comment names the classes the
embedded ``shapes-tiny`` model never saw in training.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ovseg.data.synthetic import STUFF_CLASSES, UNSEEN_CLASSES, generate_scene, scene_rng
from ovseg.fileio import atomic_write_text, save_jpeg

SEED = 7
SCENES = (0, 23)  # validation scenes with 3-4 objects, at least one of an unseen class


def class_lines(objects: list[str], stuff: tuple[str, ...]) -> list[str]:
    names = list(dict.fromkeys(objects)) + list(stuff)
    absent = next(s for s in STUFF_CLASSES if s not in stuff)
    unseen = [n for n in names if n in UNSEEN_CLASSES]
    return [f"# unseen in training: {', '.join(unseen) or 'none'}", *names, absent]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent))
    out = Path(parser.parse_args().out)
    for index in SCENES:
        scene = generate_scene(scene_rng(SEED, "val", index), split="val")
        stem = f"synthetic_seed{SEED}_val{index:04d}"
        save_jpeg(out / f"{stem}.jpg", scene.image)
        lines = class_lines([o.name for o in scene.instances], scene.stuff)
        atomic_write_text(out / f"{stem}.txt", "\n".join(lines) + "\n")
        print(f"{stem}: {scene.caption}")


if __name__ == "__main__":
    main()
