import shutil

import numpy as np
import pytest
from PIL import Image

from ovseg.data.ade20k import ADE20K847Dataset, ADE20KDataset, resolve_ade_root
from ovseg.data.synthetic import CLASS_NAMES, UNSEEN_CLASSES, generate_scene, scene_rng
from ovseg.errors import DatasetError
from ovseg.registry import DATASETS


def _tiny_ade(root, stems=("ADE_val_00000001",), label=None):
    """A hand-made ADE tree with a 4x5 image and annotation per stem (no class file)."""
    ade = root / "ADEChallengeData2016"
    (ade / "images/validation").mkdir(parents=True)
    (ade / "annotations/validation").mkdir(parents=True)
    label = np.array([[0, 1, 2, 3, 255]] * 4, np.uint8) if label is None else label
    for stem in stems:
        Image.fromarray(np.full((4, 5, 3), 100, np.uint8)).save(
            ade / f"images/validation/{stem}.jpg"
        )
        Image.fromarray(label).save(ade / f"annotations/validation/{stem}.png")
    return ade


def test_reads_back_synthetic_world(synthetic_world):
    out, summary = synthetic_world
    ds = ADE20KDataset(out, split="validation")
    assert len(ds) == summary["num_val"]
    assert ds.class_names == list(CLASS_NAMES) and ds.unseen == list(UNSEEN_CLASSES)
    assert ds.num_classes == 68 and ds.ignore_index == 255
    for i in range(len(ds)):
        item = ds[i]
        scene = generate_scene(scene_rng(summary["seed"], "val", i), split="val")
        assert item["filename"].endswith(f"ADE_val_{i + 1:08d}.jpg")
        assert item["label"].dtype == np.int64
        assert np.array_equal(item["label"], scene.label)  # labels are lossless
        assert item["image"].dtype == np.uint8 and item["image"].shape == scene.image.shape
        diff = np.abs(item["image"].astype(int) - scene.image.astype(int))
        assert diff.mean() < 4  # JPEG q=95 4:4:4 only perturbs the image a little
    train = DATASETS.build(
        {"type": "ade20k", "root": str(out / "ADEChallengeData2016"), "split": "train"}
    )
    assert len(train) == summary["num_train"]


def test_reduce_zero_label_follows_ade_convention(tmp_path):
    _tiny_ade(tmp_path)
    classes = tmp_path / "c.txt"
    classes.write_text("wall\nbuilding, edifice\nsky\n")
    reduced = ADE20KDataset(tmp_path, class_file=classes)[0]["label"]
    assert reduced[0].tolist() == [255, 0, 1, 2, 255]
    raw = ADE20KDataset(tmp_path, class_file=classes, reduce_zero_label=False)[0]["label"]
    assert raw[0].tolist() == [0, 1, 2, 3, 255] and raw.dtype == np.int64
    ds = ADE20KDataset(tmp_path, split="val", class_file=classes)
    assert ds.class_names == ["wall", "building", "sky"]
    assert ds.class_synonyms[1] == ("building", "edifice") and ds.unseen == []


def test_class_names_from_object_info_csv(tmp_path):
    ade = _tiny_ade(tmp_path)
    (ade / "objectInfo150.csv").write_text(
        "Idx,Ratio,Train,Val,Name\n1,0.15,11664,1172,wall\n2,0.1,6046,612,building;edifice\n"
    )
    ds = ADE20KDataset(ade)
    assert ds.class_names == ["wall", "building"] and ds.class_synonyms[1] == (
        "building",
        "edifice",
    )


def test_packaged_class_file_by_name(tmp_path):
    _tiny_ade(tmp_path)
    assert ADE20KDataset(tmp_path, class_file="shapes.txt").class_names == list(CLASS_NAMES)


def test_missing_class_names_say_what_to_pass(tmp_path):
    _tiny_ade(tmp_path)
    with pytest.raises(DatasetError, match="class_file"):
        ADE20KDataset(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        ADE20KDataset(tmp_path, class_file=tmp_path / "nope.txt")


def test_mislaid_root_names_the_right_folder(tmp_path):
    ade = _tiny_ade(tmp_path)
    with pytest.raises(DatasetError, match=r"pass root=.*ADEChallengeData2016") as err:
        ADE20KDataset(ade / "images" / "validation")
    assert "Expected tree" in str(err.value)
    with pytest.raises(DatasetError, match="does not exist"):
        ADE20KDataset(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="neither"):
        resolve_ade_root(empty)
    assert resolve_ade_root(tmp_path) == ade and resolve_ade_root(ade) == ade


def test_missing_split_folder_is_named(tmp_path):
    ade = _tiny_ade(tmp_path)
    shutil.rmtree(ade / "annotations/validation")
    with pytest.raises(DatasetError, match=r"Missing folder .*annotations/validation"):
        ADE20KDataset(tmp_path, class_file="shapes.txt")
    with pytest.raises(DatasetError, match=r"Missing folder .*images/training"):
        ADE20KDataset(tmp_path, split="training", class_file="shapes.txt")
    with pytest.raises(DatasetError, match="split must be"):
        ADE20KDataset(tmp_path, split="test")


def test_images_without_annotation_are_reported(tmp_path):
    ade = _tiny_ade(tmp_path, stems=("ADE_val_00000001", "ADE_val_00000002"))
    (ade / "annotations/validation/ADE_val_00000002.png").unlink()
    with pytest.raises(DatasetError, match="1 of 2 images .*ADE_val_00000002"):
        ADE20KDataset(tmp_path, class_file="shapes.txt")


def test_size_mismatch_is_reported(tmp_path):
    _tiny_ade(tmp_path, label=np.zeros((3, 3), np.uint8))
    ds = ADE20KDataset(tmp_path, class_file="shapes.txt")
    with pytest.raises(DatasetError, match="same size"):
        ds[0]


def test_unknown_unseen_classes_are_rejected(tmp_path):
    ade = _tiny_ade(tmp_path)
    (ade / "ovseg_split.json").write_text('{"classes": ["a", "b"], "unseen": ["c"]}')
    with pytest.raises(DatasetError, match="unseen"):
        ADE20KDataset(tmp_path)
    (ade / "ovseg_split.json").write_text("{not json")
    with pytest.raises(DatasetError, match="regenerate"):
        ADE20KDataset(tmp_path)


def test_class_names_from_challenge_object_info_txt(tmp_path):
    ade = _tiny_ade(tmp_path)
    (ade / "objectInfo150.txt").write_text(
        "Idx\tRatio\tTrain\tVal\tName\n1\t0.1576\t11664\t1172\twall\n"
        "2\t0.1072\t6046\t612\tbuilding;edifice\n"
    )
    ds = ADE20KDataset(ade)
    assert ds.class_names == ["wall", "building"]
    assert ds.class_synonyms[1] == ("building", "edifice")
    sample = ds[0]
    assert sample["image_path"] == sample["filename"]
    assert sample["label_path"].endswith("annotations/validation/ADE_val_00000001.png")


# ADE20K-847 TIFF values: 0 wall ... 846 adding machine, 65535 unlabelled; 255 is a class
FULL_LABEL = np.array([[0, 1, 846, 65535], [255, 256, 65535, 0]], np.uint16)


def _tiny_ade847(root, stems=("ADE_val_00000001", "ADE_val_00000002")):
    """ADE20K_2021_17_01 as detectron2's prepare_ade20k_full_sem_seg.py leaves it."""
    full = root / "ADE20K_2021_17_01"
    (full / "images_detectron2/validation").mkdir(parents=True)
    (full / "annotations_detectron2/validation").mkdir(parents=True)
    for stem in stems:
        Image.fromarray(np.full((2, 4, 3), 50, np.uint8)).save(
            full / f"images_detectron2/validation/{stem}.jpg"
        )
        Image.fromarray(FULL_LABEL).save(full / f"annotations_detectron2/validation/{stem}.tif")
    return full


def test_ade847_reads_uint16_tiffs(tmp_path):
    full = _tiny_ade847(tmp_path)
    ds = DATASETS.build({"type": "ade847", "root": str(tmp_path)})
    assert isinstance(ds, ADE20K847Dataset) and len(ds) == 2
    assert ds.num_classes == 847 and ds.ignore_index == 65535
    assert ds.class_names[0] == "wall" and ds.class_names[846] == "adding machine"
    assert ds.class_synonyms[1] == ("building", "edifice")
    # repeated first names get distinct display names; the queries stay the reference synonyms
    assert ds.class_names[147] == "screen (crt screen)"
    assert ds.class_synonyms[147][1:] == ("screen", "crt screen")
    assert len(set(ds.class_names)) == 847
    sample = ds[1]
    assert sample["label"].dtype == np.int64 and np.array_equal(sample["label"], FULL_LABEL)
    assert sample["label_path"].endswith("annotations_detectron2/validation/ADE_val_00000002.tif")
    assert ADE20K847Dataset(full, split="val").samples == ds.samples


def test_ade847_mislaid(tmp_path):
    full = _tiny_ade847(tmp_path)
    (full / "annotations_detectron2/validation/ADE_val_00000002.tif").unlink()
    with pytest.raises(DatasetError, match="ADE_val_00000002") as err:
        ADE20K847Dataset(tmp_path)
    assert "datasets/README.md" in str(err.value)
    shutil.rmtree(full / "annotations_detectron2")
    with pytest.raises(DatasetError, match=r"Missing folder .*annotations_detectron2/validation"):
        ADE20K847Dataset(tmp_path)
    with pytest.raises(DatasetError, match="images_detectron2"):
        ADE20K847Dataset(tmp_path / "ADE20K_2021_17_01" / "images_detectron2")
