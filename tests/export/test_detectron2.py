"""detectron2 result files: entries as SemSegEvaluator / COCOEvaluator write them, read back.

The reference encodings below follow detectron2's evaluation code
(``SemSegEvaluator.encode_json_sem_seg``, ``instances_to_coco_json``): pycocotools encodes an
``(H, W, 1)`` Fortran-order uint8 mask and the counts bytes are decoded as UTF-8.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ovseg.data.detectron2 import Detectron2InstanceDataset
from ovseg.export import create_exporter
from ovseg.export.detectron2 import (
    instances_to_detectron2_json,
    sem_seg_to_detectron2_json,
)

from .conftest import CLASSES, H, W, scene_masks

SEM_SEG_KEYS = {"file_name", "category_id", "segmentation"}
RESULT_KEYS = {"image_id", "category_id", "bbox", "score", "segmentation"}


def detectron2_rle(mask: np.ndarray) -> dict:
    """The RLE detectron2 writes for one mask."""
    rle = mask_utils.encode(np.array(mask[:, :, None], order="F", dtype=np.uint8))[0]
    rle["counts"] = rle["counts"].decode("utf-8")
    return rle


def _normalised(rle: dict) -> dict:
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"]}


def test_sem_seg_entries_match_detectron2_encoding(semantic):
    entries = sem_seg_to_detectron2_json(semantic.sem_seg, "/data/a.jpg")
    assert [e["category_id"] for e in entries] == [0, 1, 2]  # 255 (unlabelled) has no entry
    for entry, mask in zip(entries, scene_masks()):
        assert set(entry) == SEM_SEG_KEYS and entry["file_name"] == "/data/a.jpg"
        assert entry["segmentation"] == _normalised(detectron2_rle(mask))
    mapped = sem_seg_to_detectron2_json(semantic.sem_seg, "a.jpg", category_ids=[7, 9, 11])
    assert [e["category_id"] for e in mapped] == [7, 9, 11]


def test_exporter_writes_sem_seg_predictions(tmp_path, semantic):
    exporter = create_exporter("detectron2")
    exporter.start(tmp_path / "d2", CLASSES, source_root=tmp_path / "imgs")
    exporter.add("sub/scene.png", (H, W), semantic)
    summary = exporter.finish()
    out = tmp_path / "d2"
    entries = json.loads((out / "sem_seg_predictions.json").read_text())
    assert entries == sem_seg_to_detectron2_json(
        semantic.sem_seg, str(tmp_path / "imgs/sub/scene.png")
    )
    assert not (out / "coco_instances_results.json").exists()
    dicts = json.loads((out / "dataset_dicts.json").read_text())
    assert dicts == [
        {"file_name": str(tmp_path / "imgs/sub/scene.png"), "height": H, "width": W, "image_id": 1}
    ]
    assert json.loads((out / "metadata.json").read_text())["stuff_classes"] == CLASSES
    assert summary["sem_seg_predictions"] == 3


def _dataset_dicts(tmp_path) -> str:
    """Ground truth of the scene as detectron2 dicts: the ring as RLE (it has a hole) with an
    XYXY box, the other two as polygons with XYWH boxes."""
    from PIL import Image

    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "scene.png")
    ring, pair, disc = scene_masks()
    pair_polys = [[8, 68, 40, 68, 40, 88, 8, 88], [80, 72, 104, 72, 104, 92, 80, 92]]
    disc_poly = np.array(
        [[96 + 21 * np.cos(t), 32 + 21 * np.sin(t)] for t in np.linspace(0, 2 * np.pi, 64)[:-1]]
    ).ravel()
    record = {
        "file_name": "scene.png", "height": H, "width": W, "image_id": 42,
        "annotations": [
            {"bbox": [8, 8, 60, 60], "bbox_mode": 0, "segmentation": detectron2_rle(ring),
             "category_id": 0, "iscrowd": 0},
            {"bbox": [8, 68, 96, 24], "bbox_mode": 1, "segmentation": pair_polys,
             "category_id": 1},
            {"bbox": [75, 11, 42, 42], "bbox_mode": 1, "segmentation": [disc_poly.tolist()],
             "category_id": 2, "iscrowd": 0},
        ],
    }  # fmt: skip
    path = tmp_path / "dicts.json"
    path.write_text(json.dumps([record]))
    return str(path)


def test_instance_results_score_against_detectron2_dicts(tmp_path, instances):
    dataset = Detectron2InstanceDataset(_dataset_dicts(tmp_path), classes=CLASSES)
    sample = dataset[0]
    assert sample["image_id"] == 42
    assert sample["instances"]["boxes"].tolist() == [
        [8, 8, 60, 60],
        [8, 68, 104, 92],
        [75, 11, 117, 53],
    ]
    assert np.array_equal(sample["instances"]["masks"][0], scene_masks()[0])
    exporter = create_exporter("detectron2")
    exporter.image_ids = {"scene.png": 42}
    exporter.start(tmp_path / "d2", CLASSES)
    exporter.add("scene.png", (H, W), instances)
    exporter.finish()
    results = json.loads((tmp_path / "d2" / "coco_instances_results.json").read_text())
    assert results == instances_to_detectron2_json(instances, 42)
    for result, mask, box in zip(results, instances.masks, instances.boxes):
        assert set(result) == RESULT_KEYS and result["image_id"] == 42
        x1, y1, x2, y2 = box.tolist()
        assert result["bbox"] == [x1, y1, x2 - x1, y2 - y1]
        assert result["segmentation"] == _normalised(detectron2_rle(mask))
    with contextlib.redirect_stdout(io.StringIO()):
        detections = dataset.coco.loadRes(results)
        evaluation = COCOeval(dataset.coco, detections, "segm")
        evaluation.evaluate(), evaluation.accumulate(), evaluation.summarize()
    # the ring and the pair masks are exact; the 63-gon disc is close: AP50 is 100
    assert evaluation.stats[1] == pytest.approx(1.0)


def test_instances_helper_equals_detectron2_layout(instances):
    entries = instances_to_detectron2_json(instances, 5)
    assert [e["category_id"] for e in entries] == [0, 1, 2]
    assert all(set(e) == RESULT_KEYS and e["image_id"] == 5 for e in entries)
    assert entries[0]["segmentation"] == _normalised(detectron2_rle(instances.masks[0]))


def test_bad_box_mode_and_missing_segmentation_are_refused(tmp_path):
    from ovseg.errors import DatasetError

    path = _dataset_dicts(tmp_path)
    dicts = json.loads(open(path).read())
    dicts[0]["annotations"][1]["bbox_mode"] = 4
    open(path, "w").write(json.dumps(dicts))
    with pytest.raises(DatasetError, match="XYWHA_ABS"):
        Detectron2InstanceDataset(path, classes=CLASSES)
    dicts[0]["annotations"][1]["bbox_mode"] = 1
    del dicts[0]["annotations"][2]["segmentation"]
    open(path, "w").write(json.dumps(dicts))
    with pytest.raises(DatasetError, match="no 'segmentation'"):
        Detectron2InstanceDataset(path, classes=CLASSES)
    with pytest.raises(DatasetError, match="classes"):
        Detectron2InstanceDataset(path)


def test_coco_reader_reads_the_dicts_as_pycocotools_does(tmp_path):
    dataset = Detectron2InstanceDataset(_dataset_dicts(tmp_path), classes=CLASSES)
    assert dataset.category_ids == [0, 1, 2] and dataset.class_names == CLASSES
    with contextlib.redirect_stdout(io.StringIO()):
        assert isinstance(dataset.coco, COCO)
    assert dataset.coco.anns[1]["bbox"] == [8.0, 8.0, 52.0, 52.0]  # XYXY -> XYWH
