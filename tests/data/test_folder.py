"""Folder dataset: images/ + labels/ with the same names and a class file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ovseg.data.folder import FolderDataset
from ovseg.errors import DatasetError
from ovseg.registry import DATASETS

LABEL = np.array([[0, 0, 1, 1], [2, 2, 255, 1]], np.uint8)


def write_folder(root, names=("a", "b"), classes="sky\ncat, kitty, kitten\nsofa\n"):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        suffix = ".jpg" if i % 2 == 0 else ".png"
        Image.fromarray(np.full((*LABEL.shape, 3), 30 * i, np.uint8)).save(
            root / "images" / f"{name}{suffix}"
        )
        Image.fromarray(LABEL).save(root / "labels" / f"{name}.png")
    if classes is not None:
        (root / "classes.txt").write_text(classes)
    return root


def test_reads_labels_and_synonyms(tmp_path):
    write_folder(tmp_path)
    ds = FolderDataset(tmp_path)
    assert len(ds) == 2 and ds.class_names == ["sky", "cat", "sofa"]
    assert ds.class_synonyms[1] == ("cat", "kitty", "kitten") and ds.num_classes == 3
    sample = ds[1]
    assert np.array_equal(sample["label"], LABEL) and sample["label"].dtype == np.int64
    assert sample["image_path"].endswith("images/b.png")


def test_reduce_zero_label_and_packaged_class_file(tmp_path):
    write_folder(tmp_path, classes=None)
    ds = DATASETS.build(
        {
            "type": "folder",
            "root": str(tmp_path),
            "class_file": "city.txt",
            "reduce_zero_label": True,
        }
    )
    assert ds.num_classes == 19
    assert np.array_equal(
        ds[0]["label"], np.where(LABEL == 0, 255, np.where(LABEL == 255, 255, LABEL - 1))
    )


def test_missing_class_file_and_unpaired_files(tmp_path):
    write_folder(tmp_path, classes=None)
    with pytest.raises(DatasetError, match="classes.txt") as info:
        FolderDataset(tmp_path)
    assert "datasets/README.md" in str(info.value)
    write_folder(tmp_path)
    Image.fromarray(np.zeros((2, 4, 3), np.uint8)).save(tmp_path / "images" / "c.jpg")
    with pytest.raises(DatasetError, match=r"images .* have no label <name>\.png .*: c"):
        FolderDataset(tmp_path)
    (tmp_path / "images" / "c.jpg").unlink()
    Image.fromarray(LABEL).save(tmp_path / "labels" / "d.png")
    with pytest.raises(DatasetError, match="have no image .*: d"):
        FolderDataset(tmp_path)


def test_values_beyond_the_class_file_and_size_mismatch(tmp_path):
    write_folder(tmp_path, classes="sky\ncat\n")
    with pytest.raises(DatasetError, match=r"values \[2\]"):
        FolderDataset(tmp_path)[0]
    write_folder(tmp_path)
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(tmp_path / "labels" / "a.png")
    with pytest.raises(DatasetError, match="same size"):
        FolderDataset(tmp_path)[0]


def test_missing_folders(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        FolderDataset(tmp_path / "nothing")
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match="labels"):
        FolderDataset(tmp_path)
