"""Layout checks shared by the real-dataset readers, and the sample reader behind them.

A reader states where its files live (an expected tree, shown in every error); these helpers
check that and raise :class:`~ovseg.errors.DatasetError` naming the exact folder or file that is
missing, what was expected there, and ``datasets/README.md``. Images and labels must pair up one
to one; unpaired files on either side are an error, never dropped silently.

:class:`LabelMapDataset` turns (image, label) path pairs into samples::

    {"image": (H, W, 3) uint8 RGB, "label": (H, W) int64 class indices (``ignore_index`` where
     not evaluated), "filename": image path (str), "image_path": same, "label_path": str}

Subclasses override :meth:`LabelMapDataset.decode_label` to turn the stored encoding into class
indices; every decoded label is checked to hold only class indices or the ignore value.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ovseg.errors import DatasetError, VocabularyError
from ovseg.io import read_image, read_label_png

README_HINT = "See datasets/README.md for how to obtain and lay out this dataset."
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
IGNORE_INDEX = 255


def layout_error(message: str, tree: str) -> DatasetError:
    """A DatasetError: ``message``, then the expected tree, then the README pointer."""
    return DatasetError(f"{message}\n{tree}\n{README_HINT}")


def shown(names: Sequence[str], limit: int = 5) -> str:
    """``a, b, c and 7 more``: the first ``limit`` names of a list for an error message."""
    head = ", ".join(str(n) for n in names[:limit])
    return head + (f" and {len(names) - limit} more" if len(names) > limit else "")


def resolve_root(
    root: str | os.PathLike,
    candidates: Sequence[str],
    markers: Sequence[str],
    name: str,
    tree: str,
) -> Path:
    """The dataset folder for a user-given ``root``.

    Returns ``root / c`` for the first relative path ``c`` of ``candidates`` that is a folder
    (e.g. ``VOCdevkit/VOC2012`` when ``root`` is the data root), else ``root`` itself when it
    holds one of ``markers`` (e.g. ``JPEGImages``: ``root`` is the dataset folder).
    """
    path = Path(root).expanduser()
    if not path.is_dir():
        raise layout_error(f"{name} root {path} does not exist or is not a folder.", tree)
    for candidate in candidates:
        if (path / candidate).is_dir():
            return path / candidate
    if any((path / marker).exists() for marker in markers):
        return path
    looked_for = [str(path / c) for c in candidates] + [str(path / m) for m in markers]
    raise layout_error(
        f"{path} is not a {name} folder: none of {', '.join(looked_for)} exists.", tree
    )


def require_dir(path: Path, what: str, tree: str) -> Path:
    """``path`` if it is a folder; else a DatasetError saying which folder (``what``) is missing."""
    if not path.is_dir():
        raise layout_error(f"Missing folder {path} ({what}).", tree)
    return path


def require_file(path: Path, what: str, tree: str) -> Path:
    """``path`` if it is a file; else a DatasetError saying which file (``what``) is missing."""
    if not path.is_file():
        raise layout_error(f"Missing file {path} ({what}).", tree)
    return path


def read_split_file(path: Path, tree: str) -> list[str]:
    """Sample ids listed in a split file (one per line, blank lines skipped)."""
    require_file(path, "the list of sample ids of this split, one per line", tree)
    ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    ids = [i for i in ids if i]
    if not ids:
        raise layout_error(f"Split file {path} lists no sample ids.", tree)
    return ids


def files_by_key(
    folder: Path,
    suffixes: str | Sequence[str],
    *,
    recursive: bool = False,
    exclude: Sequence[str] = (),
) -> dict[str, Path]:
    """Files of ``folder`` whose name ends with one of ``suffixes``, keyed by path minus suffix.

    Keys are relative to ``folder`` (``aachen/aachen_000000_000019`` when ``recursive``) and
    matching is case-insensitive on the suffix (``.JPG`` counts as ``.jpg``). Names ending with
    one of ``exclude`` are skipped (e.g. ``_labelTrainIds.png`` beside raw ``.png`` labels).
    """
    suffixes = (suffixes,) if isinstance(suffixes, str) else tuple(suffixes)
    found: dict[str, Path] = {}
    paths: Iterable[Path] = folder.rglob("*") if recursive else folder.iterdir()
    for path in paths:
        lower = path.name.lower()
        if any(lower.endswith(e.lower()) for e in exclude):
            continue
        for suffix in suffixes:
            if lower.endswith(suffix.lower()) and path.is_file():
                key = path.relative_to(folder).as_posix()[: -len(suffix)]
                found.setdefault(key, path)
                break
    return found


def pair_files(
    images: Mapping[str, Path],
    labels: Mapping[str, Path],
    image_dir: Path,
    label_dir: Path,
    label_pattern: str,
    tree: str,
) -> list[tuple[Path, Path]]:
    """Pair images and labels by key, sorted by key; anything unpaired is a DatasetError.

    ``label_pattern`` says how a label is named for an error message, e.g. ``<id>.png``.
    """
    if not images:
        raise layout_error(f"{image_dir} holds no images.", tree)
    no_label = sorted(k for k in images if k not in labels)
    if no_label:
        raise layout_error(
            f"{len(no_label)} of {len(images)} images in {image_dir} have no label "
            f"{label_pattern} in {label_dir}: {shown(no_label)}. Add the labels or remove those "
            "images.",
            tree,
        )
    no_image = sorted(k for k in labels if k not in images)
    if no_image:
        raise layout_error(
            f"{len(no_image)} labels in {label_dir} have no image in {image_dir}: "
            f"{shown(no_image)}. Add the images or remove those labels.",
            tree,
        )
    return [(images[k], labels[k]) for k in sorted(images)]


def pair_listed(
    ids: Sequence[str],
    image_dir: Path,
    image_suffix: str,
    label_dir: Path,
    label_suffix: str,
    split_file: Path,
    tree: str,
) -> list[tuple[Path, Path]]:
    """``(image_dir/<id><image_suffix>, label_dir/<id><label_suffix>)`` for every listed id.

    Every listed id must have both files; the error names the ids and folders that lack them.
    """
    pairs = [(image_dir / f"{i}{image_suffix}", label_dir / f"{i}{label_suffix}") for i in ids]
    for column, folder, suffix, what in (
        (0, image_dir, image_suffix, "images"),
        (1, label_dir, label_suffix, "labels"),
    ):
        missing = [i for i, pair in zip(ids, pairs) if not pair[column].is_file()]
        if missing:
            raise layout_error(
                f"{len(missing)} of the {len(ids)} ids listed in {split_file} have no {what} "
                f"<id>{suffix} in {folder}: {shown(missing)}.",
                tree,
            )
    return pairs


def pair_from_labels(
    labels: Mapping[str, Path],
    image_dir: Path,
    image_suffix: str,
    label_dir: Path,
    tree: str,
) -> list[tuple[Path, Path]]:
    """``(image_dir/<id><image_suffix>, label)`` for every label, sorted by id.

    For layouts whose label folder defines the samples while the image folder holds more
    images (e.g. all of VOC2010 for the Pascal Context 459 validation labels).
    """
    if not labels:
        raise layout_error(f"{label_dir} holds no label files.", tree)
    ids = sorted(labels)
    missing = [i for i in ids if not (image_dir / f"{i}{image_suffix}").is_file()]
    if missing:
        raise layout_error(
            f"{len(missing)} of the {len(ids)} labels in {label_dir} have no image "
            f"<id>{image_suffix} in {image_dir}: {shown(missing)}.",
            tree,
        )
    return [(image_dir / f"{i}{image_suffix}", labels[i]) for i in ids]


def load_classes(
    class_file: str | os.PathLike, expected: int | None, dataset: str
) -> list[tuple[str, ...]]:
    """Classes of a class file (display name first), checked to number ``expected``.

    A bare name such as ``"voc21.txt"`` means a file packaged in ``ovseg/model_zoo/classes``.
    """
    from ovseg.vocab import load_class_file

    try:
        classes = load_class_file(class_file)
    except VocabularyError as exc:
        raise DatasetError(str(exc)) from exc
    if expected is not None and len(classes) != expected:
        raise DatasetError(
            f"{dataset} has {expected} classes but the class file {class_file} lists "
            f"{len(classes)}; give a class file with one line per class, in label order."
        )
    return classes


def reduce_zero_label(raw: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """The mmsegmentation ``reduce_zero_label`` rule as int64: 0 -> ignore, k -> k - 1.

    A stored ``ignore_index`` stays ignored (mmseg: 255 - 1 = 254 is set back to 255).
    """
    label = raw.astype(np.int64)
    return np.where((label == 0) | (label == ignore_index), ignore_index, label - 1)


def lookup_table(mapping: Mapping[int, int], size: int, default: int) -> np.ndarray:
    """(size,) int64 array ``t``: ``t[k] = mapping[k]``, ``default`` for keys not in mapping."""
    table = np.full(size, default, dtype=np.int64)
    for key, value in mapping.items():
        table[key] = value
    return table


class LabelMapDataset:
    """Samples from (image path, label path) pairs; see the module docstring for the format.

    Attributes: ``samples`` (``(image path, label source)`` pairs in order; the source is the
    label path unless a subclass reads labels otherwise), ``class_synonyms`` (a tuple of names per
    class, display name first), ``class_names``, ``num_classes``, ``ignore_index``, ``unseen``
    (empty: these benchmarks have no seen/unseen split).
    """

    def __init__(
        self,
        samples: Sequence[tuple[Path, Any]],
        class_synonyms: Sequence[tuple[str, ...]],
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        self.samples = list(samples)
        self.class_synonyms = [tuple(names) for names in class_synonyms]
        self.class_names = [names[0] for names in self.class_synonyms]
        self.ignore_index = int(ignore_index)
        self.unseen: list[str] = []

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.samples)

    def read_label(self, source: Any) -> np.ndarray:
        """The stored label map of ``source`` (a label path by default) as an (H, W) integer
        array, before decoding."""
        return read_label_png(source)

    def describe_label(self, source: Any) -> str:
        """How ``source`` is named in samples and messages (the path by default)."""
        return str(source)

    def decode_label(self, raw: np.ndarray) -> np.ndarray:
        """Stored values -> (H, W) int64 class indices / ``ignore_index``. Default: as stored."""
        return raw.astype(np.int64)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_path, source = self.samples[index]
        image = read_image(image_path)
        raw = self.read_label(source)
        label_path = self.describe_label(source)
        if raw.shape != image.shape[:2]:
            raise DatasetError(
                f"Label {label_path} is {raw.shape[1]}x{raw.shape[0]} but image {image_path} is "
                f"{image.shape[1]}x{image.shape[0]}; they must have the same size."
            )
        label = self.decode_label(raw)
        self._check_values(label, label_path)
        return {
            "image": image,
            "label": label,
            "filename": str(image_path),
            "image_path": str(image_path),
            "label_path": label_path,
        }

    def _check_values(self, label: np.ndarray, label_path: str) -> None:
        bad = (label != self.ignore_index) & ((label < 0) | (label >= self.num_classes))
        if bad.any():
            values = np.unique(label[bad])[:5].tolist()
            raise DatasetError(
                f"Label {label_path} holds values {values} that are neither class indices "
                f"0..{self.num_classes - 1} nor the ignore value {self.ignore_index}. Check "
                f"that the labels use this reader's encoding and the class file its order. "
                f"{README_HINT}"
            )


def require_choice(name: str, value: str, choices: Sequence[str]) -> str:
    """``value`` when it is one of ``choices``; else a DatasetError naming the allowed values."""
    if value not in choices:
        raise DatasetError(f"{name} must be one of {', '.join(choices)}, got {value!r}.")
    return value
