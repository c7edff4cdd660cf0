"""GroundedReferringSegmenter on tiny random models: detector boxes, CLIP re-ranking, SAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ovseg.errors import PromptError
from ovseg.models.classifiers import MaskContext, box_masks
from ovseg.models.decoders.sam import SamDecoder
from ovseg.models.prompts.similarity import encode_phrase
from ovseg.registry import PIPELINES
from ovseg.structures import ReferringResult
from tests.models.decoders.sam_tiny import random_image, tiny_sam
from tests.models.detectors.tiny_detectors import write_tiny_owl

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory, tiny_model_names):
    owl = write_tiny_owl(tmp_path_factory.mktemp("owl") / "owl")
    torch.manual_seed(0)
    return PIPELINES.build(
        {
            "type": "GroundedReferringSegmenter",
            "backbone": {"type": "ClipBackbone", "model_name": tiny_model_names["vit"]},
            "detector": {"type": "Owlv2Detector", "model": str(owl)},
            "decoder": SamDecoder.from_model(tiny_sam()),
            "ranking": {"box_threshold": 0.05, "candidates": 10, "crop_logit_scale": 30.0},
        }
    )


def test_the_best_ranked_box_is_segmented(segmenter):
    image = random_image(40, 56)
    encoded = segmenter.encode(image)
    result = segmenter.predict(encoded, "cat")
    assert isinstance(result, ReferringResult) and result.mask.shape == (40, 56)
    # by hand: the detector's 10 best boxes, 30 x cosine(crop, phrase) + 0.5 x log(score)
    found = segmenter.detector.detect(image, ["cat"], box_threshold=0.05, max_detections=10)
    assert 1 < len(found) <= 10 and result.meta["num_candidates"] == len(found)
    context = MaskContext(image=image, tokens=None, backbone=segmenter.backbone)
    embeds = segmenter.crop_classifier.embed(box_masks(found.boxes, 40, 56), context)
    cosine = embeds @ encode_phrase(segmenter.backbone, "cat").float()
    rank = 30.0 * cosine.double() + 0.5 * torch.from_numpy(found.scores).double().log()
    best = int(rank.argmax())
    assert result.meta["box_xyxy"] == pytest.approx(found.boxes[best].tolist(), abs=1e-3)
    assert result.meta["box_score"] == pytest.approx(float(found.scores[best]), abs=1e-6)
    prediction = segmenter.decoder.predict(
        boxes=found.boxes[best : best + 1], multimask=True, embedding=encoded.embedding
    )
    mask, score, _ = prediction.best()
    np.testing.assert_array_equal(result.mask, mask)
    assert result.score == pytest.approx(score)
    # the heat map: the chosen box at 1, nothing outside the candidates' boxes
    inside = box_masks(found.boxes, 40, 56).any(dim=0).numpy()
    assert result.similarity.max() == pytest.approx(1.0) and (result.similarity[~inside] == 0).all()
    assert (
        result.similarity[box_masks(found.boxes[best : best + 1], 40, 56)[0].numpy()] == 1
    ).all()
    assert len(result.points) == 0


def test_single_mask_and_call_settings(segmenter):
    encoded = segmenter.encode(random_image(40, 56))
    single = segmenter.predict(encoded, "cat", multimask=False)
    assert single.meta["mask_index"] == 0
    # no box above the threshold: an empty mask, not an error
    nothing = segmenter.predict(encoded, "cat", box_threshold=0.999999)
    assert not nothing.mask.any() and nothing.score == 0.0 and nothing.meta["box_xyxy"] is None
    with pytest.raises(PromptError):
        segmenter.predict(encoded, "  ")
