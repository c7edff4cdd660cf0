"""Reader for semantic segmentation data in the ADE20K (ADEChallengeData2016) layout.

Expected tree (``root`` may be the folder holding ``ADEChallengeData2016`` or that folder)::

    ADEChallengeData2016/
        images/training/*.jpg        images/validation/*.jpg
        annotations/training/*.png   annotations/validation/*.png   (same stems as the images)
        objectInfo150.csv or ovseg_classes.txt                     (class names, see below)
        ovseg_split.json                                           (optional: unseen classes)

Annotations are uint8 PNGs with value = class index + 1 and 0 = unlabelled; with
``reduce_zero_label`` (the ADE convention) labels become class index, and 0 becomes 255 = ignore.

Class names come from, in order: the ``class_file`` argument (one class per line, synonyms after
commas; a bare name such as ``"shapes.txt"`` means a packaged file), ``ovseg_classes.txt``,
the ``classes`` of ``ovseg_split.json``, or the ``Name`` column of ADE's ``objectInfo150.csv``
or of the tab-separated ``objectInfo150.txt`` the challenge zip ships (synonyms separated by
``;``).

``ADE20K847Dataset`` reads the full ADE20K (847 classes, ``ADE20K_2021_17_01``) as the
open-vocabulary papers prepare it with detectron2's ``prepare_ade20k_full_sem_seg.py`` (from
MaskFormer; SAN, FC-CLIP and ODISE ship the same script): images resized to a short side of at
most 512 and uint16 label TIFFs::

    ADE20K_2021_17_01/
        images_detectron2/{training,validation}/ADE_val_00000001.jpg ...
        annotations_detectron2/{training,validation}/ADE_val_00000001.tif ...
                                   uint16: 0-846 the classes of ade847.txt, 65535 unlabelled

Its ``ignore_index`` is 65535 (255 is a class there). 16-bit PNG labels with the same values are
read too.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ovseg.data.ade_layout import ADE_DIRNAME, CLASS_FILENAME, SPLIT_FILENAME
from ovseg.data.layout import LabelMapDataset, files_by_key, load_classes, pair_files
from ovseg.data.layout import require_dir as require_layout_dir
from ovseg.data.layout import resolve_root as resolve_layout_root
from ovseg.errors import DatasetError, VocabularyError
from ovseg.io import read_image, read_label_png
from ovseg.registry import DATASETS

IGNORE_INDEX = 255
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SPLIT_FOLDERS = {
    "training": "training",
    "train": "training",
    "validation": "validation",
    "val": "validation",
}

EXPECTED_TREE = f"""Expected tree:
  <root>/{ADE_DIRNAME}/
      images/training/ADE_train_00000001.jpg ...
      images/validation/ADE_val_00000001.jpg ...
      annotations/training/ADE_train_00000001.png ...
      annotations/validation/ADE_val_00000001.png ...
      objectInfo150.csv or {CLASS_FILENAME} (or pass class_file=...)"""


def resolve_ade_root(root: str | os.PathLike) -> Path:
    """Return the ``ADEChallengeData2016`` folder for ``root`` (it or its parent).

    Raises DatasetError when ``root`` is missing or holds neither the dataset folder nor its
    ``images``/``annotations`` folders; a root pointing inside the dataset names the right one.
    """
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DatasetError(
            f"ADE20K root {path} does not exist or is not a folder.\n{EXPECTED_TREE}"
        )
    if (path / ADE_DIRNAME).is_dir():
        return path / ADE_DIRNAME
    if path.name == ADE_DIRNAME or (path / "images").is_dir() or (path / "annotations").is_dir():
        return path
    hint = ""
    for parent in list(path.parents)[:3]:
        if (parent / "images").is_dir() and (parent / "annotations").is_dir():
            hint = f" It looks like a folder inside the dataset; pass root={parent} instead."
            break
    raise DatasetError(
        f"{path} holds neither an {ADE_DIRNAME} folder nor images/ and annotations/ folders."
        f"{hint}\n{EXPECTED_TREE}"
    )


def _read_object_info(path: Path) -> list[tuple[str, ...]]:
    """Class names from ADE's objectInfo150.csv / .txt (``Name`` column, synonyms split on ';').

    The .csv is comma-separated, the .txt of the challenge zip tab-separated.
    """
    delimiter = "\t" if path.suffix == ".txt" else ","
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter=delimiter))
    if not rows or "Name" not in rows[0]:
        raise DatasetError(f"{path} has no 'Name' column; it is not ADE's {path.name}.")
    return [tuple(n.strip() for n in row["Name"].split(";") if n.strip()) for row in rows]


def load_ade_classes(
    dataset_dir: Path, class_file: str | os.PathLike | None
) -> list[tuple[str, ...]]:
    """Class names (each a tuple of synonyms, display name first) for an ADE-layout dataset."""
    from ovseg.vocab import load_class_file

    if class_file is not None:
        try:
            return load_class_file(class_file)
        except VocabularyError as exc:
            raise DatasetError(str(exc)) from exc
    if (dataset_dir / CLASS_FILENAME).is_file():
        return load_class_file(dataset_dir / CLASS_FILENAME)
    split_file = dataset_dir / SPLIT_FILENAME
    if split_file.is_file():
        classes = _load_split_json(split_file).get("classes")
        if classes:
            return [(str(c),) for c in classes]
    for info in ("objectInfo150.csv", "objectInfo150.txt"):
        if (dataset_dir / info).is_file():
            return _read_object_info(dataset_dir / info)
    raise DatasetError(
        f"No class names found for {dataset_dir}: it has no {CLASS_FILENAME}, {SPLIT_FILENAME} "
        "or objectInfo150.csv/.txt. Pass class_file=<file with one class per line, in label "
        "order>. "
        "(A synthetic dataset without its class file was probably interrupted while writing; "
        "generate it again.)"
    )


def _load_split_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"Cannot read {path} ({exc}); delete or regenerate it.") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{path} must hold a JSON object with 'classes' and 'unseen'.")
    return data


@DATASETS.register(aliases=("ade20k",))
class ADE20KDataset:
    """Semantic segmentation samples from an ADE20K-layout folder.

    ``__getitem__`` returns {"image": (H, W, 3) uint8 RGB, "label": (H, W) int64 class indices
    with 255 = ignore (when ``reduce_zero_label``; raw PNG values otherwise), "filename": image
    path as str}. Attributes: ``class_names`` (display names, label order), ``class_synonyms``,
    ``unseen`` (names from ovseg_split.json, else []), ``ignore_index`` (255).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "validation",
        class_file: str | os.PathLike | None = None,
        reduce_zero_label: bool = True,
    ) -> None:
        if split not in SPLIT_FOLDERS:
            raise DatasetError(f"ADE20K split must be 'training' or 'validation', got {split!r}.")
        self.dataset_dir = resolve_ade_root(root)
        self.split = SPLIT_FOLDERS[split]
        self.reduce_zero_label = reduce_zero_label
        self.ignore_index = IGNORE_INDEX
        self.samples = self._pair_files()
        self.class_synonyms = load_ade_classes(self.dataset_dir, class_file)
        self.class_names = [names[0] for names in self.class_synonyms]
        self.unseen = self._load_unseen()

    def _pair_files(self) -> list[tuple[Path, Path]]:
        image_dir = self.dataset_dir / "images" / self.split
        ann_dir = self.dataset_dir / "annotations" / self.split
        for folder in (image_dir, ann_dir):
            if not folder.is_dir():
                raise DatasetError(f"Missing folder {folder}.\n{EXPECTED_TREE}")
        images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DatasetError(f"{image_dir} holds no .jpg/.png images.\n{EXPECTED_TREE}")
        annotations = {p.stem: p for p in ann_dir.glob("*.png")}
        missing = [p.stem for p in images if p.stem not in annotations]
        if missing:
            shown = ", ".join(missing[:5]) + (
                f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            )
            raise DatasetError(
                f"{len(missing)} of {len(images)} images in {image_dir} have no annotation "
                f"<stem>.png in {ann_dir}: {shown}. Add the annotations or remove those images."
            )
        return [(p, annotations[p.stem]) for p in images]

    def _load_unseen(self) -> list[str]:
        split_file = self.dataset_dir / SPLIT_FILENAME
        if not split_file.is_file():
            return []
        unseen = [str(n) for n in _load_split_json(split_file).get("unseen", [])]
        unknown = [n for n in unseen if n not in self.class_names]
        if unknown:
            raise DatasetError(
                f"{split_file} lists unseen classes {unknown} that are not classes "
                "of this dataset; fix the file or the class file."
            )
        return unseen

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_path, ann_path = self.samples[index]
        image = read_image(image_path)
        raw = read_label_png(ann_path)
        if raw.shape != image.shape[:2]:
            raise DatasetError(
                f"Annotation {ann_path} is {raw.shape[1]}x{raw.shape[0]} but image {image_path} is "
                f"{image.shape[1]}x{image.shape[0]}; they must have the same size."
            )
        label = raw.astype(np.int64)
        if self.reduce_zero_label:
            # ADE: 0 = unlabelled -> ignore; k -> k - 1; a stored 255 stays ignore.
            label = np.where((raw == 0) | (raw == IGNORE_INDEX), IGNORE_INDEX, label - 1)
        return {
            "image": image,
            "label": label,
            "filename": str(image_path),
            "image_path": str(image_path),
            "label_path": str(ann_path),
        }


ADE847_DIRNAME = "ADE20K_2021_17_01"
ADE847_IGNORE = 65535
ADE847_TREE = f"""Expected tree (ADE20K-847: ADE20K_2021_17_01 prepared with detectron2's
prepare_ade20k_full_sem_seg.py):
  <root>/{ADE847_DIRNAME}/
      images_detectron2/validation/ADE_val_00000001.jpg ...
      annotations_detectron2/validation/ADE_val_00000001.tif ...  (uint16: 0-846, 65535 ignored)"""


@DATASETS.register(aliases=("ade847",))
class ADE20K847Dataset(LabelMapDataset):
    """ADE20K-847 samples: {"image", "label" ((H, W) int64, 65535 = ignore), "filename",
    "image_path", "label_path"}; see the module docstring for the layout.

    Args:
        root: the data root or the ``ADE20K_2021_17_01`` folder.
        split: ``validation`` (or ``val``) / ``training`` (or ``train``).
        class_file: class names in label order; default the packaged ``ade847.txt``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "validation",
        class_file: str | os.PathLike | None = None,
    ) -> None:
        if split not in SPLIT_FOLDERS:
            raise DatasetError(f"ADE20K split must be 'training' or 'validation', got {split!r}.")
        self.dataset_dir = resolve_layout_root(
            root,
            (ADE847_DIRNAME,),
            ("images_detectron2", "annotations_detectron2"),
            "ADE20K-847",
            ADE847_TREE,
        )
        self.split = SPLIT_FOLDERS[split]
        image_dir = require_layout_dir(
            self.dataset_dir / "images_detectron2" / self.split, "the resized images", ADE847_TREE
        )
        label_dir = require_layout_dir(
            self.dataset_dir / "annotations_detectron2" / self.split,
            "the uint16 label TIFFs",
            ADE847_TREE,
        )
        samples = pair_files(
            files_by_key(image_dir, IMAGE_SUFFIXES),
            files_by_key(label_dir, (".tif", ".tiff", ".png")),
            image_dir,
            label_dir,
            "<name>.tif",
            ADE847_TREE,
        )
        classes = load_classes(class_file or "ade847.txt", 847, "ADE20K-847")
        super().__init__(samples, classes, ignore_index=ADE847_IGNORE)
