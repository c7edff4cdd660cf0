"""ReasonSeg (LISA, Lai et al. 2024) as released: images with same-stem JSON annotations.

Layout (as LISA's ``dataset/reason_seg/ReasonSeg``)::

    ROOT/reason_seg/ReasonSeg/      (or ROOT/ReasonSeg/, or ROOT itself)
      train/  <stem>.jpg + <stem>.json
      val/    ...
      test/   ...

Each JSON holds ``text`` (a list of queries about the image, or one string), ``is_sentence``
(true: long reasoning sentences; false: short phrases) and ``shapes``: polygons
``{"label": "target" | "ignore" | "flag", "points": [[x, y], ...]}`` in pixels.

The ground truth follows LISA's ``get_mask_from_json``: ``flag`` shapes are dropped; the rest
are drawn from the largest to the smallest area (so a small shape lying on a larger one wins),
each as its filled polygon plus its 1-pixel outline, with vertices truncated to integers;
a label containing ``ignore`` paints 255 (left out of scoring), any other label paints 1
(target). Files that are not UTF-8 are read as cp1252, as LISA does.

An item is one image with its queries, in the layout of
:class:`~ovseg.data.synthetic_reasoning.SyntheticReasoningDataset`::

    {"image": (H, W, 3) uint8 RGB, "filename": image path, "json_path": str,
     "is_sentence": bool, "label": (H, W) uint8 0 / 1 / 255,
     "queries": [{"question", "answer": "[SEG].", "text", "masks": (1, H, W) bool target,
                  "ignore": (H, W) bool, "kind": "long" | "short", "group": None}]}

Questions are LISA's evaluation wording (``ValDataset``) after its ``"<image>\\n"`` line, which
the conversation template adds: ``" {text} Please output segmentation mask."`` for sentences,
``" What is {text} in this image? Please output segmentation mask."`` for phrases (LISA's
leading space kept). LISA scores only the first query of each image
(``queries: first``, the default); ``queries: all`` scores every one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ovseg.data.layout import files_by_key, layout_error, require_choice, require_dir, resolve_root
from ovseg.errors import DatasetError
from ovseg.io import read_image
from ovseg.registry import DATASETS

SPLITS = ("train", "val", "test")
QUERY_MODES = ("first", "all")
IGNORE_VALUE = 255
LAYOUT = """Expected layout (see datasets/README.md):
  ROOT/reason_seg/ReasonSeg/<train|val|test>/<stem>.jpg
  ROOT/reason_seg/ReasonSeg/<train|val|test>/<stem>.json   (text, is_sentence, shapes)"""
LONG_QUESTION = " {} Please output segmentation mask."
SHORT_QUESTION = " What is {} in this image? Please output segmentation mask."
EVAL_ANSWER = "[SEG]."


def read_annotation(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON of one image, checked: ``{"text": [str, ...], "is_sentence": bool, "shapes":
    [{"label": str, "points": (P, 2) float array}, ...]}``.

    Raises:
        DatasetError: the file is not JSON, or a key is missing or malformed (the message names
            the file and the key).
    """
    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path} is not valid JSON ({exc}).\n{LAYOUT}") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{path} must hold a JSON object with text, is_sentence and shapes.")
    missing = [k for k in ("text", "is_sentence", "shapes") if k not in data]
    if missing:
        raise DatasetError(f"{path} lacks {', '.join(missing)}; it is not a ReasonSeg annotation.")
    queries = [data["text"]] if isinstance(data["text"], str) else data["text"]
    if not isinstance(queries, list) or not queries or not all(isinstance(q, str) for q in queries):
        raise DatasetError(f"{path}: text must be a non-empty list of strings.")
    if not isinstance(data["shapes"], list):
        raise DatasetError(f"{path}: shapes must be a list of polygons.")
    shapes = []
    for i, shape in enumerate(data["shapes"]):
        label = shape.get("label") if isinstance(shape, dict) else None
        if not isinstance(label, str):
            raise DatasetError(f"{path}: shapes[{i}] has no string label.")
        try:
            points = np.asarray(shape.get("points"), dtype=np.float64)
        except (TypeError, ValueError):
            points = np.zeros((0,))
        if points.ndim != 2 or points.shape[1] != 2 or len(points) < 1:
            raise DatasetError(f"{path}: shapes[{i}] ({label}) needs points as [[x, y], ...].")
        shapes.append({"label": label, "points": points})
    return {"text": list(queries), "is_sentence": bool(data["is_sentence"]), "shapes": shapes}


def _draw(mask: np.ndarray, points: np.ndarray, value: int) -> None:
    import cv2

    polygon = [points.astype(np.int32)]  # truncation toward zero, as np.array(..., np.int32)
    cv2.polylines(mask, polygon, True, value, 1)
    cv2.fillPoly(mask, polygon, value)


def polygons_to_label(shapes: list[dict[str, Any]], height: int, width: int) -> np.ndarray:
    """``(H, W)`` uint8 label: 1 target, 255 ignore, 0 elsewhere (LISA's drawing order)."""
    kept = [s for s in shapes if s["label"].lower() != "flag"]
    areas = []
    for shape in kept:
        scratch = np.zeros((height, width), dtype=np.uint8)
        _draw(scratch, shape["points"], 1)
        areas.append(int(scratch.sum()))
    # np.argsort(areas)[::-1]: descending, ties in reverse order of listing
    order = np.argsort(np.asarray(areas, dtype=np.int64), kind="stable")[::-1]
    label = np.zeros((height, width), dtype=np.uint8)
    for i in order:
        value = IGNORE_VALUE if "ignore" in kept[i]["label"].lower() else 1
        _draw(label, kept[i]["points"], value)
    return label


def reasonseg_question(text: str, is_sentence: bool) -> str:
    """LISA's evaluation question for one query."""
    return (LONG_QUESTION if is_sentence else SHORT_QUESTION).format(text.strip())


@DATASETS.register(aliases=("reasonseg", "ReasonSeg"))
class ReasonSegDataset:
    """ReasonSeg images and their queries (see the module docstring).

    Args:
        root: the data root (holding ``reason_seg/ReasonSeg``), or the ``ReasonSeg`` folder.
        split: ``train``, ``val`` or ``test``.
        queries: ``first`` (LISA's evaluation) or ``all``.
        subset: ``all``, ``long`` (is_sentence) or ``short`` queries only (READ reports the
            test split's long and short queries apart; this is checked per item).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "val",
        queries: str = "first",
        subset: str = "all",
    ) -> None:
        require_choice("split", split, SPLITS)
        require_choice("queries", queries, QUERY_MODES)
        require_choice("subset", subset, ("all", "long", "short"))
        base = resolve_root(
            root, ["reason_seg/ReasonSeg", "ReasonSeg"], SPLITS, "ReasonSeg", LAYOUT
        )
        folder = require_dir(base / split, f"the {split} images and their JSON files", LAYOUT)
        images = files_by_key(folder, (".jpg", ".jpeg", ".png"))
        jsons = files_by_key(folder, ".json")
        if not images:
            raise layout_error(f"{folder} holds no images.", LAYOUT)
        missing = sorted(k for k in images if k not in jsons)
        if missing:
            raise layout_error(
                f"{len(missing)} images in {folder} have no <stem>.json: {missing[:5]}.", LAYOUT
            )
        self.samples = [(images[k], jsons[k]) for k in sorted(images)]
        if subset != "all":
            want = subset == "long"
            self.samples = [s for s in self.samples if read_annotation(s[1])["is_sentence"] == want]
            if not self.samples:
                raise DatasetError(f"No {subset} query in {folder}.")
        self.split, self.query_mode, self.subset = split, queries, subset
        self.unseen: list[str] = []

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_path, json_path = self.samples[index]
        image = read_image(image_path)
        annotation = read_annotation(json_path)
        label = polygons_to_label(annotation["shapes"], *image.shape[:2])
        texts = annotation["text"][:1] if self.query_mode == "first" else annotation["text"]
        is_sentence = annotation["is_sentence"]
        target, ignore = label == 1, label == IGNORE_VALUE
        return {
            "image": image,
            "filename": str(image_path),
            "json_path": str(json_path),
            "is_sentence": is_sentence,
            "label": label,
            "queries": [
                {
                    "question": reasonseg_question(t, is_sentence),
                    "answer": EVAL_ANSWER,
                    "text": t.strip(),
                    "masks": target[None],
                    "ignore": ignore,
                    "kind": "long" if is_sentence else "short",
                    "group": None,
                }
                for t in texts
            ],
        }
