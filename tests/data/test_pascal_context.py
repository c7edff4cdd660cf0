"""Pascal Context reader: PC60 / PC59 (mmseg layout) and PC459 (detectron2 uint16 TIFFs)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ovseg.data.pascal_context import PascalContextDataset
from ovseg.errors import DatasetError
from ovseg.registry import DATASETS

# SegmentationClassContext values: 0 background, 1 aeroplane ... 59 wood
CONTEXT_LABEL = np.array([[0, 1, 2, 59], [0, 0, 15, 15], [33, 33, 0, 1]], np.uint8)
# PC459 TIFF values: 0 accordion ... 458 wool, 65535 unlabelled; 255 and 256 are classes too
FULL_LABEL = np.array([[0, 1, 458, 65535], [255, 256, 65535, 65535], [1, 1, 0, 0]], np.uint16)


def write_context(root, ids=("2008_000002", "2008_000007"), with_459=False):
    """``root/VOCdevkit/VOC2010`` as mmseg's converter (and the pc459 script) leave it."""
    voc = root / "VOCdevkit" / "VOC2010"
    for folder in ("JPEGImages", "SegmentationClassContext", "ImageSets/SegmentationContext"):
        (voc / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for stem in (*ids, "2008_000999"):  # VOC2010 holds more images than the context split
        image = rng.integers(0, 256, (*CONTEXT_LABEL.shape, 3), dtype=np.uint8)
        Image.fromarray(image).save(voc / "JPEGImages" / f"{stem}.jpg")
    for stem in ids:
        Image.fromarray(CONTEXT_LABEL).save(voc / "SegmentationClassContext" / f"{stem}.png")
    (voc / "ImageSets/SegmentationContext/val.txt").write_text("\n".join(ids) + "\n")
    if with_459:
        full = voc / "annotations_detectron2" / "pc459_val"
        full.mkdir(parents=True, exist_ok=True)
        for stem in ids:
            Image.fromarray(FULL_LABEL).save(full / f"{stem}.tif")
    return voc


def test_pc60_keeps_background(tmp_path):
    write_context(tmp_path)
    ds = PascalContextDataset(tmp_path, num_classes=60)
    assert len(ds) == 2 and ds.num_classes == 60 and ds.ignore_index == 255
    assert ds.class_names[:2] == ["background", "aeroplane"] and ds.class_names[59] == "wood"
    label = ds[0]["label"]
    assert label.dtype == np.int64 and np.array_equal(label, CONTEXT_LABEL)
    assert ds[1]["image_path"].endswith("JPEGImages/2008_000007.jpg")


def test_pc59_ignores_background(tmp_path):
    voc = write_context(tmp_path)
    ds = DATASETS.build({"type": "pascal_context", "root": str(voc), "num_classes": 59})
    assert (
        ds.num_classes == 59 and ds.class_names[0] == "aeroplane" and ds.class_names[58] == "wood"
    )
    label = ds[0]["label"]
    assert np.array_equal(label, np.where(CONTEXT_LABEL == 0, 255, CONTEXT_LABEL - 1))
    assert label[0, 3] == 58 and label[0, 0] == 255


def test_pc459_reads_uint16_tiffs_with_65535_ignored(tmp_path):
    voc = write_context(tmp_path, with_459=True)
    assert Image.open(voc / "annotations_detectron2/pc459_val/2008_000002.tif").mode == "I;16"
    ds = PascalContextDataset(tmp_path / "VOCdevkit", num_classes=459)
    assert len(ds) == 2 and ds.num_classes == 459 and ds.ignore_index == 65535
    assert ds.class_names[0] == "accordion" and ds.class_names[458] == "wool"
    assert ds.class_names[1] == "aeroplane"
    label = ds[0]["label"]
    assert label.dtype == np.int64 and np.array_equal(label, FULL_LABEL.astype(np.int64))
    assert ds[0]["label_path"].endswith("pc459_val/2008_000002.tif")


def test_pc459_label_without_image(tmp_path):
    voc = write_context(tmp_path, with_459=True)
    Image.fromarray(FULL_LABEL).save(voc / "annotations_detectron2/pc459_val/2008_000500.tif")
    with pytest.raises(DatasetError, match="2008_000500") as info:
        PascalContextDataset(tmp_path, num_classes=459)
    assert "JPEGImages" in str(info.value)


def test_pc459_folder_missing(tmp_path):
    write_context(tmp_path)
    with pytest.raises(DatasetError, match="annotations_detectron2/pc459_val") as info:
        PascalContextDataset(tmp_path, num_classes=459)
    assert "datasets/README.md" in str(info.value)


def test_context_split_file_and_labels_missing(tmp_path):
    voc = write_context(tmp_path)
    (voc / "SegmentationClassContext/2008_000007.png").unlink()
    with pytest.raises(DatasetError, match="2008_000007"):
        PascalContextDataset(tmp_path)
    (voc / "ImageSets/SegmentationContext/val.txt").unlink()
    with pytest.raises(DatasetError, match=r"ImageSets/SegmentationContext/val\.txt"):
        PascalContextDataset(tmp_path, num_classes=59)


def test_unknown_class_count(tmp_path):
    write_context(tmp_path)
    with pytest.raises(DatasetError, match="60 .* 59 .* 459"):
        PascalContextDataset(tmp_path, num_classes=21)
