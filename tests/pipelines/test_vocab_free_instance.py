"""Instances named without a vocabulary: each SAM proposal searched in a text database."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ovseg.cased.build import build_database
from ovseg.cased.search import CasedSearch
from ovseg.models.decoders.sam import SamDecoder
from ovseg.pipelines.vocab_free_instance import VocabFreeInstanceSegmenter
from ovseg.registry import PIPELINES
from tests.conftest import randomize_
from tests.models.decoders.sam_tiny import random_image, tiny_sam

CONCEPTS = ["cat", "dog", "red car", "tree", "boat", "lamp", "wooden chair", "river", "sky"]
PROPOSALS = {
    "points_per_side": 4,
    "pred_iou_thresh": 0.0,
    "stability_score_thresh": 0.0,
    "box_nms_thresh": 1.0,
}


@pytest.fixture(scope="module")
def pipeline(tiny_model_names, tmp_path_factory, one_torch_thread):
    torch.manual_seed(0)
    instance = PIPELINES.build(
        {
            "type": "InstanceSegmenter",
            "backbone": {
                "type": "ClipBackbone",
                "model_name": tiny_model_names["vit"],
                "dense_mode": "sclip",
                "templates": "photo",
            },
            "decoder": SamDecoder.from_model(tiny_sam()),
            "inference": {"short_side": None, "max_long_side": None},
            "proposals": PROPOSALS,
            "postprocess": {"score_threshold": 0.0, "nms_threshold": 0.5},
        }
    )
    randomize_(instance.backbone.model, seed=5)
    folder = tmp_path_factory.mktemp("vf_instance")
    (folder / "names.txt").write_text("\n".join(CONCEPTS))
    db = build_database(
        folder / "names.txt", instance.backbone, folder / "db", kind="concepts", progress=False
    )
    search = CasedSearch(instance.backbone, db, dedup_threshold=1.5)
    return VocabFreeInstanceSegmenter(instance, search)


def test_every_mask_takes_the_best_name_of_its_own_search(pipeline):
    image = random_image(40, 48)
    found = pipeline(image)
    assert len(found) > 0 and found.masks.shape[1:] == (40, 48)
    assert set(found.class_names) <= set(CONCEPTS)
    assert sorted(set(found.labels.tolist())) == list(range(len(found.class_names)))
    # the result says how its names were found (a concept database: no POS filter applies)
    assert found.meta["vocab_free"]["pos_filter"] == "concepts"
    assert found.to_dict()["meta"] == found.meta
    again = pipeline.search.name_regions(pipeline.search.embed_regions(image, masks=found.masks))
    assert [found.class_names[label] for label in found.labels] == [r.best for r in again]
    name_scores = np.array([r.scores[0] for r in again], dtype=np.float32)
    assert (found.scores <= name_scores + 1e-6).all()  # x SAM's predicted IoU in [0, 1]
    assert (np.diff(found.scores) <= 1e-7).all()
    for mask, box in zip(found.masks, found.boxes, strict=True):
        ys, xs = np.nonzero(mask)
        np.testing.assert_array_equal(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])


def test_a_given_vocabulary_uses_the_instance_pipeline(pipeline):
    image = random_image(40, 48)
    named = pipeline(image, ["cat", "dog"])
    assert named.class_names == ["cat", "dog"]


def test_a_crop_classifier_gives_the_region_embeddings(pipeline):
    """crop_classifier: each mask is searched with that classifier's crop (here a square 1.3x
    its box with the surroundings), not CaSED's masked region crop."""
    from ovseg.models.classifiers import MaskContext, MaskedCropClassifier

    crops = {"type": "MaskedCropClassifier", "context_scale": 1.3, "mask_background": False}
    with_crops = VocabFreeInstanceSegmenter(pipeline.instance, pipeline.search, crops)
    assert isinstance(with_crops.crop_classifier, MaskedCropClassifier)
    image = random_image(40, 48)
    found = with_crops(image)
    assert len(found) > 0 and found.meta["vocab_free"]["region_crop"] == "crop_classifier"
    context = MaskContext(image=image, tokens=None, backbone=pipeline.search.backbone)
    expected = with_crops.crop_classifier.embed(torch.from_numpy(found.masks), context)
    again = pipeline.search.name_regions(expected)
    assert [found.class_names[label] for label in found.labels] == [r.best for r in again]
    masked = pipeline.search.embed_regions(image, masks=found.masks)
    assert not torch.allclose(F.normalize(masked, dim=-1), expected, atol=1e-3)
    assert pipeline(image).meta["vocab_free"]["region_crop"] == "cased"
