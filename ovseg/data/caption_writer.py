"""Write image-caption pairs for CLIP training in open_clip's CSV layout.

Tree written under ``OUT``::

    OUT/captions/images/train_00000001_scene.jpg   whole scene resized to crop_size
    OUT/captions/images/train_00000001_obj0.jpg    one square crop per visible object
    OUT/captions/images/train_00000001_stuff.jpg   one pure-stuff crop (when one fits)
    OUT/captions/train.csv, val.csv                tab separated, header ``filepath<TAB>title``;
                                                   filepath relative to the CSV's folder
                                                   (written last, at ``finalize``)

Train captions never name an unseen class; ``add`` checks this and raises if it would.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ovseg.data.phrasing import object_caption, relation, stuff_caption
from ovseg.data.synthetic import SPLIT_CODES, Scene
from ovseg.data.synthetic_vocab import CLASS_NAMES, NUM_THINGS, UNSEEN_IDS
from ovseg.fileio import atomic_write_text, save_jpeg

_CAPTION_STREAM = 7  # separates the crop generator from the scene generator of the same index


def mentions_any(caption: str, names: Sequence[str]) -> list[str]:
    """The class names in ``names`` that occur in ``caption`` as whole words."""
    return [n for n in names if re.search(rf"\b{re.escape(n)}\b", caption)]


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    pil = Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(pil)


def _square_around(
    box: Sequence[int], side: int, limit: int, rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """A ``side`` px square near ``box``'s centre, shifted to lie inside a ``limit`` px image."""
    cx = (box[0] + box[2]) / 2 + rng.uniform(-0.1, 0.1) * side
    cy = (box[1] + box[3]) / 2 + rng.uniform(-0.1, 0.1) * side
    x0 = int(np.clip(round(cx - side / 2), 0, limit - side))
    y0 = int(np.clip(round(cy - side / 2), 0, limit - side))
    return x0, y0, x0 + side, y0 + side


def _dominant_stuff(label: np.ndarray) -> str | None:
    ids = label[label >= NUM_THINGS]
    if ids.size == 0:
        return None
    return CLASS_NAMES[int(np.bincount(ids).argmax())]


class CaptionWriter:
    """Streams scenes into caption crops; ``finalize`` writes ``{split}.csv`` files."""

    def __init__(
        self,
        out_dir: str | Path,
        *,
        crop_size: int = 64,
        seed: int = 0,
        quality: int = 95,
        min_other_fraction: float = 0.5,
    ) -> None:
        self.root = Path(out_dir) / "captions"
        self.crop_size = int(crop_size)
        self.seed = int(seed)
        self.quality = quality
        self.min_other_fraction = min_other_fraction
        self.rows: dict[str, list[tuple[str, str]]] = {"train": [], "val": []}
        self._unseen_names = [CLASS_NAMES[i] for i in UNSEEN_IDS]

    def entries(self, scene: Scene, split: str, index: int) -> list[tuple[str, np.ndarray, str]]:
        """(file name, crop_size x crop_size x 3 uint8 image, caption) for one scene."""
        rng = np.random.default_rng([self.seed, _CAPTION_STREAM, SPLIT_CODES[split], index])
        size = scene.label.shape[0]
        stem = f"{split}_{index:08d}"
        out = [(f"{stem}_scene.jpg", _resize(scene.image, self.crop_size), scene.caption)]
        for k, obj in enumerate(scene.instances):
            x0, y0, x1, y1 = obj.box
            side = int(round(max(x1 - x0, y1 - y0) * (1 + rng.uniform(0.15, 0.6))))
            side = min(max(side, 8), size)
            cx0, cy0, cx1, cy1 = _square_around(obj.box, side, size, rng)
            other, rel, best = None, "next to", 0
            for j, o in enumerate(scene.instances):
                inside = int(o.mask[cy0:cy1, cx0:cx1].sum())
                if j != k and inside >= self.min_other_fraction * o.area and inside > best:
                    other, rel, best = o.name, relation(obj.box, o.box), inside
            stuff = _dominant_stuff(scene.label[cy0:cy1, cx0:cx1])
            caption = object_caption(obj.name, stuff, rng, other=other, rel=rel)
            crop = _resize(scene.image[cy0:cy1, cx0:cx1], self.crop_size)
            out.append((f"{stem}_obj{k}.jpg", crop, caption))
        stuff_crop = self._stuff_crop(scene, rng)
        if stuff_crop is not None:
            out.append((f"{stem}_stuff.jpg", *stuff_crop))
        return out

    def _stuff_crop(self, scene: Scene, rng: np.random.Generator) -> tuple[np.ndarray, str] | None:
        """A random square window that is >= 95 % one stuff class, or None after 20 tries."""
        size = scene.label.shape[0]
        for _ in range(20):
            side = int(rng.integers(max(8, size // 5), max(9, size * 7 // 16)))
            x0, y0 = (int(v) for v in rng.integers(0, size - side + 1, 2))
            window = scene.label[y0 : y0 + side, x0 : x0 + side]
            counts = np.bincount(window.ravel(), minlength=len(CLASS_NAMES))
            best = int(counts.argmax())
            if best >= NUM_THINGS and counts[best] >= 0.95 * window.size:
                crop = _resize(scene.image[y0 : y0 + side, x0 : x0 + side], self.crop_size)
                return crop, stuff_caption(CLASS_NAMES[best], rng)
        return None

    def add(self, scene: Scene, split: str, index: int) -> None:
        """Write the crops of scene ``index`` of ``split`` and remember their CSV rows."""
        for file_name, image, caption in self.entries(scene, split, index):
            if split == "train" and mentions_any(caption, self._unseen_names):
                raise ValueError(f"Train caption {caption!r} names an unseen class.")
            save_jpeg(self.root / "images" / file_name, image, self.quality)
            self.rows[split].append((f"images/{file_name}", caption))

    def finalize(self) -> dict:
        """Write ``train.csv`` / ``val.csv`` (tab separated) for splits that got rows."""
        summary: dict = {"root": str(self.root)}
        for split, rows in self.rows.items():
            if not rows:
                continue
            buf = io.StringIO()
            writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
            writer.writerow(["filepath", "title"])
            writer.writerows(rows)
            path = self.root / f"{split}.csv"
            atomic_write_text(path, buf.getvalue())
            summary[f"{split}_csv"] = str(path)
            summary[f"num_{split}"] = len(rows)
        return summary
