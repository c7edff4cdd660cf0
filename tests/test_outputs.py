"""Result writers: semantic, referring and instance outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovseg.errors import ConfigError
from ovseg.io import read_label_png
from ovseg.outputs import (
    instance_id_map,
    write_instance_outputs,
    write_referring_outputs,
    write_semantic_outputs,
)
from ovseg.structures import Instances, OVSegResult, PointPrompts, ReferringResult
from ovseg.visualize import enlarge_image

IMAGE = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)


def no_temporary_files(folder):
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_semantic(tmp_path):
    labels = np.zeros((20, 30), np.int64)
    labels[:, 15:] = 1
    paths = write_semantic_outputs(OVSegResult(labels, ["a", "b"]), IMAGE, tmp_path, "x")
    np.testing.assert_array_equal(read_label_png(paths["labels"]), labels)  # the input's size
    assert paths["overlay"].is_file() and json.loads(paths["json"].read_text())["classes"]
    picture = np.asarray(Image.open(paths["overlay"]))
    assert picture.shape[0] == 20 * 18 and picture.shape[1] > 30 * 18  # 30 px: 18x, + legend
    pair = write_semantic_outputs(
        OVSegResult(labels, ["a", "b"]), IMAGE, tmp_path / "pair", "x", side_by_side=True
    )
    both = np.asarray(Image.open(pair["overlay"]))
    np.testing.assert_array_equal(both[:360, :540], enlarge_image(IMAGE, 18))  # image first
    assert both.shape[1] > picture.shape[1] + 540
    np.testing.assert_array_equal(read_label_png(pair["labels"]), labels)


def test_referring(tmp_path):
    mask = np.zeros((20, 30), bool)
    mask[4:9, 10:20] = True
    similarity = np.linspace(0, 1, 600, dtype=np.float32).reshape(20, 30)
    result = ReferringResult(
        mask=mask,
        score=0.75,
        phrase="the red one",
        similarity=similarity,
        points=PointPrompts([[12.5, 6.5], [2.5, 2.5]], [1, 0]),
    )
    paths = write_referring_outputs(result, IMAGE, tmp_path, "img")
    assert sorted(p.name for p in paths.values()) == [
        "img.json",
        "img_mask.png",
        "img_overlay.png",
        "img_similarity.png",
    ]
    np.testing.assert_array_equal(read_label_png(paths["mask"]), mask.astype(np.uint8) * 255)
    grey = read_label_png(paths["similarity"])
    np.testing.assert_array_equal(grey, (similarity * 255).round().astype(np.uint8))
    summary = json.loads(paths["json"].read_text())
    assert summary["phrase"] == "the red one" and summary["box_xyxy"] == [10, 4, 20, 9]
    assert summary["points"]["labels"] == [1, 0] and summary["image_size"] == [20, 30]
    # mask | heat map, each 18x (30 px wide input, pictures >= 512 px), 4 px gap enlarged too
    width, height = Image.open(paths["overlay"]).size
    assert width == 18 * (2 * 30 + 4) and height > 18 * 20
    pair = write_referring_outputs(result, IMAGE, tmp_path / "pair", "img", side_by_side=True)
    assert Image.open(pair["overlay"]).size == (18 * (3 * 30 + 8), height)  # image | mask | heat
    assert no_temporary_files(tmp_path)


def test_instances(tmp_path):
    masks = np.zeros((2, 20, 30), bool)
    masks[0, 2:10, 2:12] = True
    masks[1, 5:15, 8:20] = True
    instances = Instances(
        masks=masks,
        boxes=[[2, 2, 12, 10], [8, 5, 20, 15]],
        scores=[0.9, 0.6],
        labels=[1, 0],
        class_names=["cat", "dog"],
    )
    ids = instance_id_map(instances)
    assert ids[6, 10] == 1  # overlap goes to the higher score
    assert ids[12, 15] == 2 and ids[0, 0] == 0
    paths = write_instance_outputs(instances, IMAGE, tmp_path, "img")
    np.testing.assert_array_equal(read_label_png(paths["ids"]), ids)
    summary = json.loads(paths["json"].read_text())
    assert [i["name"] for i in summary["instances"]] == ["dog", "cat"]
    assert summary["instances"][0]["box_xyxy"] == [2, 2, 12, 10]
    assert Image.open(paths["overlay"]).size == (30 * 18, 20 * 18)  # enlarged to >= 512 px
    pair = write_instance_outputs(instances, IMAGE, tmp_path / "pair", "img", side_by_side=True)
    both = np.asarray(Image.open(pair["overlay"]))
    np.testing.assert_array_equal(both[:, :540], enlarge_image(IMAGE, 18))
    np.testing.assert_array_equal(read_label_png(pair["ids"]), ids)
    assert no_temporary_files(tmp_path)


def test_no_instances(tmp_path):
    empty = Instances(np.zeros((0, 20, 30), bool), np.zeros((0, 4)), [], [], ["cat"])
    paths = write_instance_outputs(empty, IMAGE, tmp_path, "none")
    assert read_label_png(paths["ids"]).max() == 0
    assert json.loads(paths["json"].read_text())["instances"] == []


def test_coco_results(tmp_path):
    masks = np.zeros((1, 20, 30), bool)
    masks[0, 2:10, 2:12] = True
    instances = Instances(masks, [[2, 2, 12, 10]], [0.9], [1], ["cat", "dog"])
    paths = write_instance_outputs(
        instances, IMAGE, tmp_path, "img", image_id=7, category_ids=[3, 18]
    )
    (entry,) = json.loads(paths["coco"].read_text())
    assert entry["image_id"] == 7 and entry["category_id"] == 18
    assert entry["bbox"] == [2, 2, 10, 8] and entry["segmentation"]["size"] == [20, 30]
    with pytest.raises(ConfigError):
        write_instance_outputs(instances, IMAGE, tmp_path, "img", image_id=7)


def test_quick_start_scene_pictures_are_readable(tmp_path, one_torch_thread):
    """The README's quick start: an enlarged overlay with a legend, labels at the input size."""
    import ovseg
    from ovseg.io import read_image

    examples = Path(__file__).resolve().parents[1] / "demo" / "examples"
    image = read_image(examples / "shapes_scene.jpg")
    names = [n for n in (examples / "shapes_scene.txt").read_text().splitlines() if n.strip()]
    result = ovseg.create_pipeline("shapes-tiny", vocabulary=names)(image)
    paths = write_semantic_outputs(result, image, tmp_path, "shapes_scene")
    assert read_label_png(paths["labels"]).shape == image.shape[:2] == (128, 128)
    width, height = Image.open(paths["overlay"]).size
    assert height == 512 and width > 512
    summary = json.loads(paths["json"].read_text())
    assert [c["name"] for c in summary["classes"]] == names
