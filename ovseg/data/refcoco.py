"""RefCOCO / RefCOCO+ / RefCOCOg / gRefCOCO referring expressions, for referring evaluation.

Layout (as the REFER toolkit, LAVT and ReLA prepare it; refs as JSON)::

    ROOT/
      refcoco/ (or refcoco+, refcocog, grefcoco)
        instances.json           COCO instances of the referred images (train2014 ids)
        refs(unc).json           one entry per referred object (refs(umd) / refs(google) ...)
        or grefs(unc).json       gRefCOCO: several or no objects per expression
      images/train2014/COCO_train2014_000000xxxxxx.jpg

The original REFER distribution ships ``refs(unc).p``, a Python pickle; ovseg never unpickles
data files, so export the refs list to ``refs(unc).json`` once with the REFER toolkit you already
trust (datasets/README.md); gRefCOCO's ``grefs(unc).json`` is JSON already.

Each item is one ref of the chosen split: ``{"image": HWC uint8 RGB, "image_id", "image_path",
"ref_id", "expressions": [{"text": str, "mask": (H, W) bool, "box": (4,) float32 XYXY or
None}]}``; every sentence of the ref is one expression with the same target (the union of the
ref's objects; empty for gRefCOCO's no-target expressions). ``box`` is the referred object's
COCO ``bbox`` ``[x, y, w, h]`` as ``[x, y, x + w, y + h]`` in image pixels (referring expression
comprehension), None unless the ref names exactly one object.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from ovseg.data.coco_instances import segmentation_to_rle
from ovseg.data.layout import require_choice
from ovseg.errors import DatasetError
from ovseg.io import read_image
from ovseg.registry import DATASETS

DATASET_NAMES = ("refcoco", "refcoco+", "refcocog", "grefcoco")
LAYOUT = """Expected layout (see datasets/README.md):
  ROOT/<refcoco|refcoco+|refcocog|grefcoco>/instances.json
  ROOT/<...>/refs(<split_by>).json   (or grefs(<split_by>).json for gRefCOCO)
  ROOT/images/train2014/COCO_train2014_*.jpg"""


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise DatasetError(f"{what} {path} does not exist.\n{LAYOUT}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} is not valid JSON ({exc}); re-export it.") from exc


def _refs_file(folder: Path, split_by: str) -> Path:
    for name in (f"refs({split_by}).json", f"grefs({split_by}).json"):
        if (folder / name).is_file():
            return folder / name
    pickled = folder / f"refs({split_by}).p"
    hint = (
        f" {pickled.name} is a pickle, which ovseg does not read; export its refs to JSON once with "
        "the REFER toolkit (datasets/README.md)."
        if pickled.is_file()
        else ""
    )
    raise DatasetError(
        f"No refs({split_by}).json or grefs({split_by}).json in {folder}.{hint}\n{LAYOUT}"
    )


def _ann_ids(ref: dict[str, Any]) -> list[int]:
    """The referred annotation ids of a ref (gRefCOCO: a list, ``[-1]`` for no target)."""
    value = ref.get("ann_id")
    ids = value if isinstance(value, list) else [value]
    return [int(i) for i in ids if i is not None and int(i) >= 0]


@DATASETS.register(aliases=("refcoco", "grefcoco"))
class RefCOCODataset:
    """Referring expressions of one split (see the module docstring for the layout).

    Args:
        root: the folder holding ``<dataset>/`` and ``images/train2014/``.
        dataset: ``refcoco``, ``refcoco+``, ``refcocog`` or ``grefcoco``.
        split_by: ``unc`` (RefCOCO, RefCOCO+, gRefCOCO), ``umd`` or ``google`` (RefCOCOg).
        split: ``val``, ``testA``, ``testB``, ``test`` ...
        image_dir: the images folder (default ``root/images/train2014``).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        dataset: str = "refcoco",
        split_by: str = "unc",
        split: str = "val",
        image_dir: str | os.PathLike | None = None,
    ) -> None:
        require_choice("dataset", dataset, DATASET_NAMES)
        root = Path(root).expanduser()
        folder = root / dataset
        if not folder.is_dir():
            raise DatasetError(f"{folder} does not exist.\n{LAYOUT}")
        self.image_dir = Path(image_dir) if image_dir else root / "images" / "train2014"
        if not self.image_dir.is_dir():
            raise DatasetError(f"Image folder {self.image_dir} does not exist.\n{LAYOUT}")
        instances = _read_json(folder / "instances.json", "Annotation file")
        self.images = {int(im["id"]): im for im in instances.get("images", [])}
        self.annotations = {int(a["id"]): a for a in instances.get("annotations", [])}
        refs = _read_json(_refs_file(folder, split_by), "Refs file")
        if not isinstance(refs, list):
            raise DatasetError(f"The refs file of {folder} must hold a list of refs.")
        self.refs = [ref for ref in refs if ref.get("split") == split]
        if not self.refs:
            splits = sorted({str(ref.get("split")) for ref in refs})
            raise DatasetError(f"No ref of split {split!r} in {folder}; it has: {splits}.")
        problems = []
        for ref in self.refs:
            if int(ref["image_id"]) not in self.images:
                problems.append(f"ref {ref.get('ref_id')} names unknown image {ref['image_id']}")
            missing = [i for i in _ann_ids(ref) if i not in self.annotations]
            if missing:
                problems.append(f"ref {ref.get('ref_id')} names unknown annotations {missing}")
            if not ref.get("sentences"):
                problems.append(f"ref {ref.get('ref_id')} has no sentence")
        if problems:
            raise DatasetError(
                f"{len(problems)} broken refs in {folder}: " + "; ".join(problems[:5])
            )
        self.name, self.split = dataset, split

    def __len__(self) -> int:
        return len(self.refs)

    @property
    def num_expressions(self) -> int:
        return sum(len(ref["sentences"]) for ref in self.refs)

    def target(self, ref: dict[str, Any], height: int, width: int) -> np.ndarray:
        """``(H, W)`` bool union of the ref's objects (all False for a no-target expression)."""
        mask = np.zeros((height, width), dtype=bool)
        for ann_id in _ann_ids(ref):
            rle = segmentation_to_rle(self.annotations[ann_id]["segmentation"], height, width)
            mask |= mask_utils.decode(rle).astype(bool)
        return mask

    def box(self, ref: dict[str, Any], height: int, width: int) -> np.ndarray | None:
        """``(4,)`` float32 XYXY box of the ref's one object (None: zero or several objects):
        its ``bbox``, or the extent of its segmentation when it has none."""
        ids = _ann_ids(ref)
        if len(ids) != 1:
            return None
        annotation = self.annotations[ids[0]]
        bbox = annotation.get("bbox")
        if bbox is None:
            rle = segmentation_to_rle(annotation["segmentation"], height, width)
            bbox = mask_utils.toBbox(rle).tolist()
        x, y, w, h = (float(v) for v in bbox)
        return np.array([x, y, x + w, y + h], dtype=np.float32)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ref = self.refs[index]
        info = self.images[int(ref["image_id"])]
        path = self.image_dir / info["file_name"]
        image = read_image(path)
        if image.shape[:2] != (int(info["height"]), int(info["width"])):
            raise DatasetError(
                f"{path} is {image.shape[1]}x{image.shape[0]} but instances.json says "
                f"{info['width']}x{info['height']}."
            )
        target = self.target(ref, *image.shape[:2])
        box = self.box(ref, *image.shape[:2])
        return {
            "image": image,
            "image_id": int(ref["image_id"]),
            "image_path": str(path),
            "ref_id": ref.get("ref_id"),
            "expressions": [
                {"text": str(s.get("sent", s.get("raw", ""))), "mask": target, "box": box}
                for s in ref["sentences"]
            ],
        }
