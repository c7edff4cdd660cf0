"""The embedded presets beyond the default: the DenseCLIP head and the SAM-based tasks.

Quality checks on freshly generated held-out scenes (not the ones README reports), with bounds
well below the measured values so that only a real regression fails.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import ovseg
from ovseg.data.synthetic import SyntheticSceneDataset
from ovseg.evaluation.referring import ReferringMetric
from ovseg.evaluation.semseg import SemSegMetric
from ovseg.model_zoo.embedded import EMBEDDED_WEIGHTS, WEIGHTS_DIR, embedded_checkpoint
from tests.quick_start import CLASS_FILE, DEMO, NUM_OBJECTS, SCENE, run_quick_start


@pytest.fixture(scope="module")
def scenes():
    return SyntheticSceneDataset(num=12, seed=2025, split="val")


@pytest.mark.parametrize(
    "key", [("denseclip-ovseg-ViT-Ti-8", "shapes"), ("ovseg-sam-tiny", "shapes")]
)
def test_packaged_weights_are_small_and_verified(key):
    path = WEIGHTS_DIR / EMBEDDED_WEIGHTS[key]["file"]
    assert path.stat().st_size < 10 * 2**20
    assert embedded_checkpoint(*key) == path


def test_denseclip_preset_segments_seen_and_unseen_classes(scenes):
    seg = ovseg.create_pipeline("shapes-tiny-denseclip")
    metric = SemSegMetric(
        num_classes=len(scenes.class_names),
        class_names=scenes.class_names,
        groups={
            "seen": [c for c in scenes.class_names if c not in scenes.unseen],
            "unseen": scenes.unseen,
        },
    )
    for sample in scenes:
        metric.process(seg(sample["image"]).sem_seg, sample["label"])
    results = metric.compute()
    # measured on these 12 scenes (2026-12-05): aAcc 98.84, seen 68.33, unseen 87.13 (the four
    # stages, 176 px, windows every 21 px); the two first stages (160 px, every 27 px) gave
    # 98.52, 67.93 and 78.44 (2026-12-03), the first stage alone 97.75, 59.24 and 52.88, the
    # head of half its schedule (5000 iterations) 97.33, 45.71 and 57.36, the first head (backbone
    # at lr x0.1, 3000 iterations, 128 px scenes, windows every 43 px) 94.34, 31.52 and 22.77
    assert results["aAcc"] > 96.0
    assert results["groups"]["seen"]["mIoU"] > 60.0
    assert results["groups"]["unseen"]["mIoU"] > 60.0


def test_painted_route_lifts_the_training_free_map(scenes):
    """pipelines.semantic_painted (SAM's masks named by the CLIP, painted over the sclip map)."""
    scores = {}
    for task in ("semantic", "semantic_painted"):
        seg = ovseg.create_pipeline("shapes-tiny", task=task)
        metric = SemSegMetric(num_classes=len(scenes.class_names), class_names=scenes.class_names)
        for sample in scenes:
            metric.process(seg(sample["image"]).sem_seg, sample["label"])
        scores[task] = metric.compute()["mIoU"]
    # measured on these 12 scenes (2026-12-05): sclip alone 10.76, painted 28.88 (README: 13.5
    # and 43.45 on the 500 validation scenes); with the first-stage SAM, painted 24.06
    assert scores["semantic_painted"] > 20.0
    assert scores["semantic_painted"] > scores["semantic"] + 8.0


def test_quick_start_names_the_objects_of_its_ground_truth(tmp_path):
    """README's quick-start command on demo/examples/shapes_scene.jpg, against the scene's
    ground truth (demo/examples/shapes_scene_gt.png, the same encoding as *_labels.png)."""
    run = run_quick_start(tmp_path / "demo", "--preset", "shapes-tiny-denseclip")
    # measured (2026-12-05, the four stages): the red diamond 150 of its 226 pixels right (43
    # "red star"), the blue square (unseen in training) 92 %, the ring 97 %, the star 85 %,
    # 98.2 % of all pixels. The two first stages called the diamond "red star" (192 pixels):
    # the third and fourth train on same-coloured neighbours (README, DenseCLIP section).
    assert run.named == {name: name for name in run.classes[:NUM_OBJECTS]}
    diamond = run.truth == run.classes.index("red diamond")
    assert (run.labels[diamond] == run.classes.index("red diamond")).mean() > 0.5
    assert (run.labels == run.truth).mean() > 0.95


def _class_masks(sample, class_names):
    """{class name: (H, W) bool} for the thing classes present in a synthetic sample."""
    label = sample["label"]
    return {
        class_names[c]: label == c
        for c in np.unique(label)
        if c < len(class_names) and class_names[c] not in ("grass", "sand", "water", "wall")
    }


def _objects_found(inst, samples, class_names):
    """``(objects overlapped at IoU > 0.5 by a mask with their name, objects)`` of an instance
    pipeline queried with the thing classes on synthetic samples."""
    things = [c for c in class_names if c not in ("grass", "sand", "water", "wall")]
    hits = total = 0
    for sample in samples:
        found = inst(sample["image"], things)
        assert found.class_names == things
        truth = _class_masks(sample, class_names)
        total += len(truth)
        for name, target in truth.items():
            best = [
                (m & target).sum() / (m | target).sum()
                for m, label in zip(found.masks, found.labels, strict=True)
                if things[label] == name
            ]
            hits += bool(best) and max(best) > 0.5
    return hits, total


@pytest.mark.parametrize(
    ("task", "bound"),
    # measured on these 12 scenes (2026-12-05): detector boxes -> SAM 91.7, similarity points
    # 49.6 (the first-stage SAM: 84.2 and 51.9)
    [("referring", 70.0), ("referring_sasp", 25.0)],
)
def test_referring_preset_finds_named_objects(scenes, task, bound):
    ref = ovseg.create_pipeline("shapes-tiny", task=task)
    metric = ReferringMetric()
    for sample in scenes:
        ref.set_image(sample["image"])
        for name, target in _class_masks(sample, scenes.class_names).items():
            metric.process(ref.predict(name).mask, target)
    assert metric.compute()["gIoU"] > bound


@pytest.mark.parametrize("task", ["instance", "instance_sam"])
def test_instance_preset_names_objects_and_skips_stuff(scenes, task):
    inst = ovseg.create_pipeline("shapes-tiny", task=task)
    assert inst.proposal_source == {"instance": "detector", "instance_sam": "sam"}[task]
    hits, total = _objects_found(inst, list(scenes)[:6], scenes.class_names)
    assert hits / total > 0.3


def test_sam_route_gives_each_quick_start_object_a_mask_with_its_name():
    """``instance_sam`` on the quick-start scene against its ground truth: every object has a
    mask of its own, with its right name, overlapping it at IoU > 0.5."""
    truth = np.asarray(Image.open(DEMO / "shapes_scene_gt.png"))
    classes = CLASS_FILE.read_text().splitlines()
    found = ovseg.create_pipeline("shapes-tiny", task="instance_sam")(
        ovseg.io.read_image(SCENE), classes
    )
    best = _best_named_ious(found, truth, classes)
    # measured (2026-12-05, ovseg-sam-tiny's second stage): star 0.83, diamond 0.65, square
    # 0.80, ring 0.93 (README, SAM section); with the first stage the diamond's only mask was
    # named "blue ring" and the ring came in arcs (IoU 0.43 at best)
    assert min(best.values()) > 0.5, best


def _best_named_ious(found, truth, classes):
    """{class name: best IoU of a mask with that name against its ground truth}."""
    best = {}
    for index, name in enumerate(classes[:NUM_OBJECTS]):
        target = truth == index
        best[name] = max(
            ((mask & target).sum() / (mask | target).sum() for mask, label in
             zip(found.masks, found.labels, strict=True) if label == index),
            default=0.0,
        )  # fmt: skip
    return best


def test_denseclip_instances_give_each_quick_start_object_one_mask_with_its_name():
    """shapes-tiny-denseclip's instance task (the DenseCLIP map's regions redrawn by SAM) on the
    quick-start scene: four instances, one per object, each with its right name."""
    truth = np.asarray(Image.open(DEMO / "shapes_scene_gt.png"))
    classes = CLASS_FILE.read_text().splitlines()
    found = ovseg.create_pipeline("shapes-tiny-denseclip", task="instance")(
        ovseg.io.read_image(SCENE), classes
    )
    # measured (2026-12-05): blue ring 0.86, blue square 0.79, red star 0.74, red diamond 0.38;
    # IoUs ring 0.97, square 0.85, star 0.85, diamond 0.65. The detector route of shapes-tiny
    # gives the diamond no instance of its own.
    assert sorted(found.class_names[label] for label in found.labels) == sorted(
        classes[:NUM_OBJECTS]
    )
    best = _best_named_ious(found, truth, classes)
    assert min(best.values()) > 0.5, best


def test_denseclip_instances_find_the_objects_of_fresh_scenes(scenes):
    inst = ovseg.create_pipeline("shapes-tiny-denseclip", task="instance")
    hits, total = _objects_found(inst, scenes, scenes.class_names)
    # measured on these 12 scenes (2026-12-05): 25 of the 28 objects (shapes-tiny's detector
    # route: 22)
    assert hits / total > 0.7


def test_demo_scene_referring_and_clicks():
    image = ovseg.io.read_image(SCENE)
    ref = ovseg.create_pipeline("shapes-tiny", task="referring")
    found = ref(image, "blue ring")
    assert found.mask.shape == image.shape[:2] and found.mask.any()
    inst = ovseg.create_pipeline("shapes-tiny", task="instance")
    inst.set_image(image)
    ys, xs = np.nonzero(found.mask)
    click = ovseg.PointPrompts([[xs.mean() + 0.5, ys.mean() + 0.5]], [1])
    named = inst.segment_clicks(click, ["blue ring", "red star", "water", "wall"])
    assert len(named) == 1 and named.masks[0].any()


def test_vocab_free_instances_take_the_sam_route():
    """shapes-tiny's instance task segments detector boxes; the vocabulary-free instances need
    class-agnostic proposals, so they are built from pipelines.instance_sam."""
    pipeline = ovseg.create_pipeline("shapes-tiny", task="vocab_free_instance")
    assert pipeline.instance.proposal_source == "sam"
    found = pipeline(ovseg.io.read_image(SCENE))
    assert len(found) > 0 and found.masks.any(axis=(1, 2)).all()


def test_vocab_free_names_objects_from_crops_with_their_surroundings(scenes):
    """The preset searches 50 texts for each object's square crop 1.3x its box with the
    surroundings (vocab_free_instance.crop_classifier), as the CLIP was trained."""
    pipeline = ovseg.create_pipeline("shapes-tiny", task="vocab_free_instance")
    assert pipeline.search.k == 50 and pipeline.crop_classifier.context_scale == 1.3
    right = {"crops": 0, "cased": 0}
    total = 0
    for sample in scenes:
        truth = _class_masks(sample, scenes.class_names)
        masks = torch.from_numpy(np.stack(list(truth.values())))
        total += len(truth)
        for key, embeddings in (
            ("crops", pipeline.region_embeddings(sample["image"], masks)),
            ("cased", pipeline.search.embed_regions(sample["image"], masks=masks.numpy())),
        ):
            names = [found.best for found in pipeline.search.name_regions(embeddings)]
            right[key] += sum(name == target for name, target in zip(names, truth, strict=True))
    # measured on these 12 scenes (2026-12-05): 23 of the 28 objects named exactly with the
    # preset's crops, 11 with CaSED's masked region crops
    assert right["crops"] / total > 0.6
    assert right["crops"] > right["cased"]
