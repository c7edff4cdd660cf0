"""Generate the synthetic world and write it in several dataset layouts at once.

Each scene is generated once and handed to every requested writer (ADE20K, COCO, captions).
Every file is written atomically; index files (class list, split JSON, COCO JSONs, caption
CSVs and ``OUT/synthetic_world.json``) are written only after all scenes, so an interrupted run
never leaves a complete-looking index over partial data.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from ovseg.data.ade_layout import ADE_DIRNAME
from ovseg.data.ade_writer import ADE20KWriter
from ovseg.data.caption_writer import CaptionWriter
from ovseg.data.coco_writer import CocoWriter
from ovseg.data.synthetic import generate_scene, scene_rng
from ovseg.data.synthetic_vocab import CLASS_NAMES, THING_CLASSES, UNSEEN_CLASSES
from ovseg.errors import DatasetError
from ovseg.fileio import atomic_write_json

FORMATS: dict[str, str] = {"ade20k": ADE_DIRNAME, "coco": "coco", "captions": "captions"}
"""Format name -> the folder it owns under the output directory."""
SUMMARY_FILENAME = "synthetic_world.json"


def default_num_val(num_train: int) -> int:
    """Validation scenes when not given: max(50, num_train // 10)."""
    return max(50, num_train // 10)


def _prepare(out_dir: Path, formats: Sequence[str], overwrite: bool) -> None:
    for fmt in formats:
        target = out_dir / FORMATS[fmt]
        if target.exists() and any(target.iterdir()):
            if not overwrite:
                raise DatasetError(
                    f"{target} already exists and is not empty. Choose another output folder "
                    "or pass overwrite=True (CLI: --overwrite) to replace it."
                )
            shutil.rmtree(target)
    (out_dir / SUMMARY_FILENAME).unlink(missing_ok=True)


def write_synthetic_world(
    out_dir: str | os.PathLike,
    *,
    num_train: int,
    num_val: int | None = None,
    seed: int = 0,
    image_size: int = 128,
    crop_size: int = 64,
    formats: Sequence[str] = ("ade20k", "coco", "captions"),
    progress: bool = True,
    coco_segmentation: str = "rle",
    overwrite: bool = False,
    neighbour_fraction: float = 0.0,
) -> dict:
    """Generate ``num_train`` + ``num_val`` scenes and write them in ``formats``.

    Args:
        out_dir: output folder; each format owns one subfolder (see ``FORMATS``).
        num_train: training scenes (seen classes only).
        num_val: validation scenes (all classes); default ``max(50, num_train // 10)``.
        seed: dataset seed; train and val scenes come from different streams of it.
        image_size: scene side in pixels. crop_size: side of the caption images.
        formats: any of "ade20k", "coco", "captions".
        progress: show a tqdm bar.
        coco_segmentation: "rle" (compressed, counts as str) or "polygon".
        overwrite: replace existing, non-empty format folders instead of refusing.
        neighbour_fraction: probability that an object after a scene's first is a different
            shape of an earlier object's colour placed against it (``generate_scene``).

    Returns:
        A summary dict (also written to ``OUT/synthetic_world.json``): output paths and counts
        per format, the class names and the unseen classes.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise DatasetError(f"Unknown dataset formats {unknown}; choose from {list(FORMATS)}.")
    if num_train < 0 or (num_val is not None and num_val < 0):
        raise DatasetError("num_train and num_val must be >= 0.")
    if not 0.0 <= neighbour_fraction <= 1.0:
        raise DatasetError(
            f"neighbour_fraction is a probability in [0, 1], got {neighbour_fraction}."
        )
    num_val = default_num_val(num_train) if num_val is None else int(num_val)
    out = Path(out_dir)
    _prepare(out, formats, overwrite)

    writers: dict[str, ADE20KWriter | CocoWriter | CaptionWriter] = {}
    if "ade20k" in formats:
        writers["ade20k"] = ADE20KWriter(out, CLASS_NAMES, UNSEEN_CLASSES)
    if "coco" in formats:
        writers["coco"] = CocoWriter(out, THING_CLASSES, segmentation=coco_segmentation)
    if "captions" in formats:
        writers["captions"] = CaptionWriter(out, crop_size=crop_size, seed=seed)

    with tqdm(total=num_train + num_val, desc="synthetic world", disable=not progress) as bar:
        for split, count in (("train", num_train), ("val", num_val)):
            for i in range(count):
                scene = generate_scene(
                    scene_rng(seed, split, i),
                    image_size=image_size,
                    split=split,
                    neighbour_fraction=neighbour_fraction,
                )
                for writer in writers.values():
                    writer.add(scene, split, i + 1)
                bar.update(1)

    summary: dict = {
        "out_dir": str(out),
        "seed": seed,
        "image_size": image_size,
        "crop_size": crop_size,
        "neighbour_fraction": neighbour_fraction,
        "num_train": num_train,
        "num_val": num_val,
        "classes": list(CLASS_NAMES),
        "unseen": list(UNSEEN_CLASSES),
    }
    for name, writer in writers.items():
        summary[name] = writer.finalize()
    atomic_write_json(out / SUMMARY_FILENAME, summary, indent=1)
    return summary
