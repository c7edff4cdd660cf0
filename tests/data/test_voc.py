"""Pascal VOC 2012 reader on a tiny tree laid out like VOCtrainval_11-May-2012."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ovseg.data.voc import PascalVOCDataset
from ovseg.errors import DatasetError
from ovseg.registry import DATASETS


def voc_palette() -> list[int]:
    """The VOC colour map (index bits spread over R, G, B), flattened for ``putpalette``."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


# 4x6 label: background, aeroplane (1), person (15), with a 255 "void" border between them
VOC_LABEL = np.array(
    [
        [0, 0, 255, 15, 15, 15],
        [0, 0, 255, 15, 15, 15],
        [1, 1, 255, 255, 255, 255],
        [1, 1, 1, 1, 0, 0],
    ],
    np.uint8,
)


def write_voc(root, ids=("2007_000033", "2007_000042"), extra_images=("2007_000099",)):
    """``root/VOCdevkit/VOC2012`` with palette labels for ``ids`` listed in val.txt."""
    voc = root / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for stem in (*ids, *extra_images):
        image = rng.integers(0, 256, (*VOC_LABEL.shape, 3), dtype=np.uint8)
        Image.fromarray(image).save(voc / "JPEGImages" / f"{stem}.jpg")
    for stem in ids:
        label = Image.fromarray(VOC_LABEL, mode="P")
        label.putpalette(voc_palette())
        label.save(voc / "SegmentationClass" / f"{stem}.png")
    (voc / "ImageSets/Segmentation/val.txt").write_text("".join(f"{i}\n" for i in ids))
    return voc


def test_voc21_keeps_background_and_void(tmp_path):
    voc = write_voc(tmp_path)
    assert Image.open(voc / "SegmentationClass/2007_000033.png").mode == "P"
    ds = PascalVOCDataset(tmp_path)
    assert len(ds) == 2 and ds.num_classes == 21 and ds.ignore_index == 255
    assert ds.class_names[0] == "background" and ds.class_names[15] == "person"
    sample = ds[0]
    assert sample["label"].dtype == np.int64
    assert np.array_equal(sample["label"], VOC_LABEL.astype(np.int64))  # palette indices
    assert sample["image"].shape == (4, 6, 3) and sample["image"].dtype == np.uint8
    assert sample["image_path"].endswith("JPEGImages/2007_000033.jpg")
    assert sample["label_path"].endswith("SegmentationClass/2007_000033.png")
    assert sample["filename"] == sample["image_path"]
    # the data root, VOCdevkit and VOC2012 itself all find the same samples
    for root in (tmp_path / "VOCdevkit", voc):
        assert DATASETS.build({"type": "pascal_voc", "root": str(root)}).samples == ds.samples


def test_voc20_ignores_background_and_shifts_classes(tmp_path):
    write_voc(tmp_path)
    ds = PascalVOCDataset(tmp_path, num_classes=20)
    assert ds.num_classes == 20 and ds.class_names[14] == "person"
    label = ds[1]["label"]
    expected = np.where(VOC_LABEL == 0, 255, np.where(VOC_LABEL == 255, 255, VOC_LABEL - 1))
    assert np.array_equal(label, expected)
    assert label[0, 3] == 14 and label[2, 0] == 0 and label[0, 0] == 255


def test_missing_label_folder_is_named(tmp_path):
    voc = write_voc(tmp_path)
    for path in (voc / "SegmentationClass").iterdir():
        path.unlink()
    (voc / "SegmentationClass").rmdir()
    with pytest.raises(DatasetError, match="SegmentationClass") as info:
        PascalVOCDataset(tmp_path)
    assert "datasets/README.md" in str(info.value)


def test_missing_split_file_is_named(tmp_path):
    voc = write_voc(tmp_path)
    (voc / "ImageSets/Segmentation/val.txt").unlink()
    with pytest.raises(DatasetError, match=r"ImageSets/Segmentation/val\.txt"):
        PascalVOCDataset(tmp_path)


def test_listed_id_without_label_or_image(tmp_path):
    voc = write_voc(tmp_path)
    (voc / "SegmentationClass/2007_000042.png").unlink()
    with pytest.raises(DatasetError, match="2007_000042") as info:
        PascalVOCDataset(tmp_path)
    assert "labels" in str(info.value) and "SegmentationClass" in str(info.value)
    write_voc(tmp_path)
    (voc / "JPEGImages/2007_000033.jpg").unlink()
    with pytest.raises(DatasetError, match="have no images <id>.jpg"):
        PascalVOCDataset(tmp_path)


def test_wrong_root_and_arguments(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(DatasetError, match="VOCdevkit/VOC2012"):
        PascalVOCDataset(tmp_path / "elsewhere")
    with pytest.raises(DatasetError, match="does not exist"):
        PascalVOCDataset(tmp_path / "nope")
    write_voc(tmp_path)
    with pytest.raises(DatasetError, match="21 classes"):
        PascalVOCDataset(tmp_path, num_classes=19)
    with pytest.raises(DatasetError, match="lists 20"):
        PascalVOCDataset(tmp_path, class_file="voc20.txt")


def test_label_values_outside_the_classes_are_refused(tmp_path):
    voc = write_voc(tmp_path, ids=("a",), extra_images=())
    Image.fromarray(np.full(VOC_LABEL.shape, 40, np.uint8)).save(voc / "SegmentationClass/a.png")
    with pytest.raises(DatasetError, match=r"values \[40\]"):
        PascalVOCDataset(tmp_path)[0]
