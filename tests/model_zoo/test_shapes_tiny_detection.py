"""The embedded shapes-tiny detector (ClipOwlDetector, alias clip_owl) and its grounded instances.

Quality checks on freshly generated held-out scenes (not the ones README reports, and of a seed
used for neither training nor tuning), with bounds well below the measured values so that only
a real regression fails.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

import ovseg
from ovseg.cli import main
from ovseg.data.synthetic_detection import SyntheticDetectionDataset
from ovseg.data.synthetic_vocab import THING_CLASSES, UNSEEN_CLASSES
from ovseg.evaluation.coco import evaluate_coco
from ovseg.evaluation.detection_evaluator import boxes_to_coco_results
from ovseg.model_zoo.embedded import EMBEDDED_WEIGHTS, WEIGHTS_DIR, embedded_checkpoint

KEY = ("owl-ovseg-ViT-Ti-8", "shapes")
THINGS = list(THING_CLASSES)


@pytest.fixture(scope="module")
def scenes():
    dataset = SyntheticDetectionDataset(16, seed=2026, split="val")
    return [dataset[i] for i in range(len(dataset))]


def _ground_truth(scenes) -> COCO:
    annotations = [
        {"id": len(scenes) * 10 + i * 10 + k, "image_id": i + 1, "category_id": int(c) + 1,
         "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
         "area": float((x2 - x1) * (y2 - y1)), "iscrowd": 0}
        for i, scene in enumerate(scenes)
        for k, ((x1, y1, x2, y2), c) in enumerate(zip(scene["boxes"], scene["class_ids"]))
    ]  # fmt: skip
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i + 1, "height": 128, "width": 128} for i in range(len(scenes))],
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(THINGS)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def test_packaged_detector_is_small_and_verified():
    path = WEIGHTS_DIR / EMBEDDED_WEIGHTS[KEY]["file"]
    assert path.stat().st_size < 20 * 2**20
    assert embedded_checkpoint(*KEY) == path


@pytest.mark.parametrize(
    ("naming", "ap50_bound", "unseen_bound"),
    # measured on these 16 scenes (2026-12-03): the detector's own class head AP50 50.6, unseen
    # mean AP50 69.9; its boxes named by CLIP crops (the preset's default) 72.7 and 85.0
    [("detector", 30.0, 35.0), ("clip", 55.0, 65.0)],
)
def test_detector_finds_seen_and_unseen_classes_on_held_out_scenes(
    scenes, naming, ap50_bound, unseen_bound
):
    detector = ovseg.create_pipeline(
        "shapes-tiny",
        task="detection",
        overrides=[f"pipelines.detection.postprocess.naming={naming}"],
    )
    results = []
    for i, scene in enumerate(scenes):
        found = detector(scene["image"], THINGS, box_threshold=0.02, score_threshold=0.02)
        assert found.class_names == THINGS
        results += boxes_to_coco_results(
            found.boxes, found.scores, found.labels, i + 1, list(range(1, 65))
        )
    metrics = evaluate_coco(_ground_truth(scenes), results, ["bbox"])["bbox"]
    ap50 = {row["name"]: row["AP50"] for row in metrics["per_category"]}
    unseen = [ap50[n] for n in UNSEEN_CLASSES if not np.isnan(ap50[n])]
    assert len(unseen) >= 3
    assert metrics["AP50"] > ap50_bound
    assert np.mean(unseen) > unseen_bound


def test_grounded_instances_segment_the_detector_boxes(scenes):
    grounded = ovseg.create_pipeline("shapes-tiny", task="instance_grounded")
    scene = scenes[0]
    found = grounded(scene["image"], THINGS)
    assert found.masks.shape[1:] == (128, 128) and len(found) > 0
    assert found.scores.max() <= 1.0 and all(found.masks[i].any() for i in range(len(found)))


def test_both_instance_routes_find_the_held_out_objects(scenes):
    """Box AP of the instances (boxes = mask extents) on the held-out scenes: the preset's
    instance task (detector boxes -> SAM masks named by CLIP) and SAM's automatic proposals
    named by CLIP (``instance_sam``)."""
    from ovseg.evaluation.coco import instances_to_coco_results

    truth = _ground_truth(scenes)
    box_ap = {}
    for task in ("instance", "instance_sam"):
        pipeline = ovseg.create_pipeline("shapes-tiny", task=task)
        results = []
        for i, scene in enumerate(scenes):
            found = pipeline(scene["image"], THINGS, score_threshold=0.01)
            results += instances_to_coco_results(
                found, i + 1, list(range(1, 65)), include_masks=False
            )
        box_ap[task] = evaluate_coco(truth, results, ["bbox"])["bbox"]["AP"]
    # measured on these 16 scenes (2026-12-05, ovseg-sam-tiny's second stage): grounded 47.0,
    # SAM route 56.2 (the first stage: 39.1 and 24.2, its parts joined at half overlap). On the
    # 100-scene sets of README the grounded route leads (box AP 44.1 vs 39.5 on seed 4242, 54.8
    # vs 47.3 on seed 11); on these 16 the SAM route does
    assert box_ap["instance"] > 35.0
    assert box_ap["instance_sam"] > 35.0


def test_predict_detection_with_the_embedded_preset(scenes, tmp_path, capsys):
    scene = scenes[1]
    image = tmp_path / "scene.png"
    Image.fromarray(scene["image"]).save(image)
    names = sorted({THINGS[c] for c in scene["class_ids"]} | {"red star", "blue ring"})
    out = tmp_path / "out"
    args = ["predict", str(image), "--task", "detection", "--preset", "shapes-tiny"]
    assert main([*args, "--vocab", ",".join(names), "--out", str(out)]) == 0
    assert "scene.png:" in capsys.readouterr().out
    summary = json.loads((out / "scene.json").read_text())
    coco = json.loads((out / "scene_coco.json").read_text())
    assert len(coco) == len(summary["detections"]) > 0
    best = max(summary["detections"], key=lambda d: d["score"])
    truth = {THINGS[c]: box for box, c in zip(scene["boxes"], scene["class_ids"], strict=True)}
    assert names[best["label"]] in truth
    x1, y1, x2, y2 = best["box_xyxy"]
    gx1, gy1, gx2, gy2 = truth[names[best["label"]]]
    inter = max(0, min(x2, gx2) - max(x1, gx1)) * max(0, min(y2, gy2) - max(y1, gy1))
    union = (x2 - x1) * (y2 - y1) + (gx2 - gx1) * (gy2 - gy1) - inter
    assert inter / union > 0.5
    assert (out / "scene_detections.png").is_file()
