"""RefCOCO-style referring data: refs JSON + instances, one target per ref, gRefCOCO no-target."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovseg.data.refcoco import RefCOCODataset
from ovseg.errors import DatasetError
from ovseg.evaluation.loop import run_evaluation
from ovseg.evaluation.referring_evaluator import ReferringEvaluator
from ovseg.structures import PointPrompts, ReferringResult


def write_refer(root: Path, *, refs_name: str = "refs(unc).json", grefs: bool = False) -> Path:
    (root / "images" / "train2014").mkdir(parents=True)
    folder = root / ("grefcoco" if grefs else "refcoco")
    folder.mkdir()
    images = []
    for image_id in (1, 2):
        name = f"COCO_train2014_{image_id:012d}.jpg"
        Image.fromarray(np.full((20, 30, 3), 60 * image_id, np.uint8)).save(
            root / "images" / "train2014" / name
        )
        images.append({"id": image_id, "file_name": name, "height": 20, "width": 30})
    box = lambda x0, y0, x1, y1: [[x0, y0, x1, y0, x1, y1, x0, y1]]  # noqa: E731
    annotations = [
        {"id": 10, "image_id": 1, "category_id": 1, "segmentation": box(2, 2, 12, 10)},
        {"id": 11, "image_id": 1, "category_id": 1, "segmentation": box(15, 5, 25, 15)},
        {"id": 12, "image_id": 2, "category_id": 2, "segmentation": box(0, 0, 10, 10)},
    ]
    (folder / "instances.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": []})
    )
    refs = [
        {"ref_id": 0, "image_id": 1, "ann_id": 10, "split": "val",
         "sentences": [{"sent": "left box"}, {"sent": "the box on the left"}]},
        {"ref_id": 1, "image_id": 2, "ann_id": 12, "split": "val",
         "sentences": [{"sent": "dark square"}]},
        {"ref_id": 2, "image_id": 1, "ann_id": 11, "split": "train",
         "sentences": [{"sent": "right box"}]},
    ]  # fmt: skip
    if grefs:
        refs.append({"ref_id": 3, "image_id": 1, "ann_id": [10, 11], "split": "val",
                     "sentences": [{"sent": "both boxes"}]})  # fmt: skip
        refs.append({"ref_id": 4, "image_id": 2, "ann_id": [-1], "split": "val",
                     "no_target": True, "sentences": [{"sent": "a cat"}]})  # fmt: skip
    (folder / refs_name).write_text(json.dumps(refs))
    return root


def test_refs_of_the_split_with_their_targets(tmp_path):
    data = RefCOCODataset(write_refer(tmp_path), split="val")
    assert len(data) == 2 and data.num_expressions == 3
    first = data[0]
    assert [e["text"] for e in first["expressions"]] == ["left box", "the box on the left"]
    mask = first["expressions"][0]["mask"]
    assert mask.shape == (20, 30) and mask[5, 5] and not mask[10, 20]
    assert 70 <= mask.sum() <= 100  # the 10 x 8 polygon


def test_grefcoco_multi_and_no_target(tmp_path):
    data = RefCOCODataset(
        write_refer(tmp_path, refs_name="grefs(unc).json", grefs=True), dataset="grefcoco"
    )
    both = next(data[i] for i in range(len(data)) if data[i]["ref_id"] == 3)
    none = next(data[i] for i in range(len(data)) if data[i]["ref_id"] == 4)
    assert both["expressions"][0]["mask"][5, 5] and both["expressions"][0]["mask"][10, 20]
    assert not none["expressions"][0]["mask"].any()


def test_mislaid_or_pickled_refs_are_clear_errors(tmp_path):
    root = write_refer(tmp_path, refs_name="refs(unc).p")
    with pytest.raises(DatasetError, match=r"refs\(unc\).p is a pickle"):
        RefCOCODataset(root)
    with pytest.raises(DatasetError, match="does not exist"):
        RefCOCODataset(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="No ref of split 'testA'"):
        (root / "refcoco" / "refs(unc).p").rename(root / "refcoco" / "refs(unc).json")
        RefCOCODataset(root, split="testA")


class FixedAnswer:
    """Answers every sentence with the target of the sentence 'left box' of image 1."""

    def set_image(self, image):
        self.image = image

    def predict(self, phrase):
        mask = np.zeros(self.image.shape[:2], bool)
        mask[2:10, 2:12] = True
        return ReferringResult(mask, 1.0, phrase, mask.astype(np.float32), PointPrompts([], []))


def test_referring_evaluation_scores_the_sentences(tmp_path):
    data = RefCOCODataset(write_refer(tmp_path), split="val")
    evaluator = ReferringEvaluator.from_dataset(data)
    results = run_evaluation(evaluator, data, FixedAnswer(), progress=False)
    overall = results["overall"]
    assert overall["num_samples"] == 3 and results["groups"] == {}
    # both sentences of ref 0 are right; ref 1's square overlaps the answer partly
    target = data[1]["expressions"][0]["mask"]
    answer = np.zeros_like(target)
    answer[2:10, 2:12] = True
    iou = (answer & target).sum() / (answer | target).sum()
    assert overall["gIoU"] == pytest.approx(100 * (2 * 1.0 + iou) / 3, rel=1e-6)
