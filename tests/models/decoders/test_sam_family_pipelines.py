"""The referring and instance pipelines run on a SAM 2.1 decoder selected by config or passed in.

Nothing in the pipelines is specific to segment-anything: they call ``set_image``, ``predict``
and ``generate`` only, so what they return must be what the decoder itself returns.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ovseg
import ovseg.pipelines.instance  # noqa: F401  (registers the pipelines)
from ovseg.models.decoders import Sam2Decoder
from ovseg.registry import PIPELINES
from ovseg.structures import Instances, ReferringResult
from ovseg.weights import save_state_dict
from tests.models.decoders.sam2_tiny import TINY_SAM2, tiny_sam2
from tests.models.decoders.sam_tiny import random_image

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning"),
]

PROPOSALS = {
    "points_per_side": 4,
    "pred_iou_thresh": 0.0,
    "stability_score_thresh": 0.0,
    "box_nms_thresh": 1.0,  # keep the duplicates: the pipeline's own NMS must remove them
}


@pytest.fixture(scope="module")
def sam2_checkpoint(tmp_path_factory):
    model = tiny_sam2(seed=2)
    path = save_state_dict(
        model.state_dict(), tmp_path_factory.mktemp("sam2") / "tiny-sam2.safetensors"
    )
    return model, path


def test_referring_preset_with_a_sam2_decoder_config(sam2_checkpoint):
    model, path = sam2_checkpoint
    config = {
        "type": "Sam2Decoder",
        "model_type": "sam2.1_hiera_t",
        "overrides": TINY_SAM2,
        "checkpoint": str(path),
    }
    pipeline = ovseg.create_pipeline("shapes-tiny", task="referring_sasp", decoder=config)
    assert isinstance(pipeline.decoder, Sam2Decoder)
    image = random_image(48, 64, seed=3)
    result = pipeline(image, "the red star")
    assert isinstance(result, ReferringResult)
    assert result.mask.shape == (48, 64) and result.mask.dtype == bool
    # the mask is the SAM 2 decoder's own answer to the chosen points (SAM's pixel frame)
    direct = Sam2Decoder.from_model(model)
    direct.set_image(image)
    prediction = direct.predict(
        (result.points.coords - 0.5)[None], result.points.labels[None], multimask=True
    )
    index = result.meta["mask_index"]
    np.testing.assert_array_equal(result.mask, prediction.masks[0, index].numpy())
    assert result.score == pytest.approx(float(prediction.iou_scores[0, index]), abs=0)


def test_instance_pipeline_with_a_sam2_decoder_object(tiny_model_names, sam2_checkpoint):
    model, _ = sam2_checkpoint
    torch.manual_seed(0)
    decoder = Sam2Decoder.from_model(model)
    segmenter = PIPELINES.build(
        {
            "type": "InstanceSegmenter",
            "backbone": {
                "type": "ClipBackbone",
                "model_name": tiny_model_names["vit"],
                "dense_mode": "sclip",
                "templates": "photo",
            },
            "decoder": decoder,
            "inference": {"short_side": None, "max_long_side": None},
            "proposals": PROPOSALS,
            "vocabulary": ["cat", "dog", "sofa"],
            "postprocess": {"score_threshold": 0.0, "nms_threshold": 0.5, "nms_mode": "mask"},
        }
    )
    assert segmenter.decoder is decoder
    image = random_image(40, 48)
    instances = segmenter(image)
    assert isinstance(instances, Instances) and len(instances) >= 1
    assert instances.masks.shape[1:] == (40, 48)
    proposals = decoder.generate(image, **PROPOSALS)
    assert len(proposals) == 16 * 3  # no filter and no suppression: every grid mask
    # every instance is one of the decoder's proposals
    for mask in instances.masks:
        assert any(np.array_equal(mask, p) for p in proposals.masks.numpy())


def test_referring_pipeline_with_an_hq_sam_decoder_object(tiny_model_names):
    """HQ-SAM gives one mask per prompt even with multimask output: the pipeline keeps it."""
    from ovseg.models.decoders import HqSamDecoder
    from ovseg.models.decoders.sam_hq import build_sam_hq
    from tests.models.decoders.sam_tiny import TINY_SAM

    torch.manual_seed(0)
    decoder = HqSamDecoder.from_model(build_sam_hq(TINY_SAM, random_init=True))
    pipeline = PIPELINES.build(
        {
            "type": "ReferringSegmenter",
            "backbone": {
                "type": "ClipBackbone",
                "model_name": tiny_model_names["vit"],
                "dense_mode": "sclip",
                "templates": "photo",
            },
            "decoder": decoder,
            "selector": {"type": "SasPSelector", "num_points": 5},
            "inference": {"short_side": None, "max_long_side": None},
            "multimask": True,
        }
    )
    image = random_image(40, 48)
    encoded = pipeline.encode(image)
    result = pipeline.predict(encoded, "a red square")
    assert result.meta["mask_index"] == 0 and result.mask.shape == (40, 48)
    direct = decoder.predict(
        (result.points.coords - 0.5)[None],
        result.points.labels[None],
        embedding=encoded.embedding,
    )
    np.testing.assert_array_equal(result.mask, direct.masks[0, 0].numpy())
