"""InstanceSegmenter, click-to-segment and SAM-refined semantic maps on tiny random models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

import ovseg.pipelines.instance  # noqa: F401  (registers the pipelines)
from ovseg.errors import ConfigError, PromptError
from ovseg.models.decoders.sam import SamDecoder
from ovseg.pipelines.instance import refine_semantic
from ovseg.registry import PIPELINES
from ovseg.structures import UNLABELLED, Instances, OVSegResult, PointPrompts
from ovseg.vocab import Vocabulary
from tests.models.decoders.sam_tiny import random_image, tiny_sam

VOCAB = ["cat", "dog|puppy", "sofa", "lamp"]
PROPOSALS = {
    "points_per_side": 4,
    "pred_iou_thresh": 0.0,
    "stability_score_thresh": 0.0,
    "box_nms_thresh": 1.0,  # keep SAM's duplicates: the pipeline's own NMS must remove them
}


def backbone_config(model_name):
    return {
        "type": "ClipBackbone",
        "model_name": model_name,
        "dense_mode": "sclip",
        "templates": "photo",
    }


def build(model_name, **kwargs):
    torch.manual_seed(0)
    return PIPELINES.build(
        {
            "type": "InstanceSegmenter",
            "backbone": backbone_config(model_name),
            "decoder": SamDecoder.from_model(tiny_sam()),
            "inference": {"short_side": None, "max_long_side": None},
            "proposals": PROPOSALS,
            **kwargs,
        }
    )


@pytest.fixture(scope="module")
def segmenter(tiny_model_names, one_torch_thread):
    # the tiny SAM's masks are scattered, so their boxes nearly all span the image: mask NMS
    # keeps several of them, box NMS only one
    return build(
        tiny_model_names["vit"],
        vocabulary=VOCAB,
        postprocess={"score_threshold": 0.0, "nms_threshold": 0.5, "nms_mode": "mask"},
    )


@pytest.fixture(scope="module")
def image():
    return random_image(40, 48)


@pytest.fixture(scope="module")
def instances(segmenter, image):
    return segmenter(image)


def test_shapes_boxes_labels_and_order(segmenter, instances):
    assert isinstance(instances, Instances)
    n = len(instances)
    assert n >= 2
    assert instances.masks.shape == (n, 40, 48) and instances.masks.dtype == bool
    assert instances.boxes.shape == (n, 4) and instances.labels.shape == (n,)
    assert instances.class_names == ["cat", "dog", "sofa", "lamp"]
    assert set(instances.labels.tolist()) <= {0, 1, 2, 3}
    assert (np.diff(instances.scores) <= 0).all()
    assert ((instances.scores >= 0) & (instances.scores <= 1)).all()
    for mask, box in zip(instances.masks, instances.boxes):
        ys, xs = np.nonzero(mask)
        np.testing.assert_array_equal(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    flat = instances.masks.reshape(n, -1)
    for i in range(n):
        for j in range(i + 1, n):
            if instances.labels[i] == instances.labels[j]:
                inter = (flat[i] & flat[j]).sum()
                assert inter / (flat[i] | flat[j]).sum() <= 0.5


def _assert_decisions_are_clear(probs, scores, margin=1e-5):
    """Labels and score order are discrete: check no float tie could decide them.

    The re-derivation and the pipeline run the same float32 math, possibly in another order on
    another CPU: probabilities may then differ by ~1e-6 (40 x a cosine's rounding). If no two
    class probabilities of a proposal, and no two scores, are within ``margin`` (10x that), the
    labels, the NMS order and so the kept masks are the same on every CPU.
    """
    top2 = probs.topk(2, dim=1).values
    assert bool((top2[:, 0] - top2[:, 1] > margin).all()), "a near-tie between two classes"
    ordered = scores.sort(descending=True).values
    assert bool((ordered[:-1] - ordered[1:] > margin).all()), "a near-tie between two scores"


def rederive(segmenter, image):
    """Proposals scored by hand: tokens pooled by area, cosine x 40, softmax, synonym max."""
    proposals = segmenter.proposals(segmenter._current)
    masks = proposals.masks.cpu()
    backbone = segmenter.backbone
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    tokens = F.normalize(backbone.encode_dense(backbone.normalize(tensor)), dim=1)[0]
    weights = F.adaptive_avg_pool2d(masks.float(), tokens.shape[-2:])
    pooled = torch.einsum("mhw,dhw->md", weights, tokens) / weights.sum((1, 2))[:, None]
    pooled = F.normalize(pooled, dim=1)
    text = backbone.encode_text(["cat", "dog", "puppy", "sofa", "lamp"])
    query = torch.softmax(40.0 * pooled @ text.t(), dim=1)
    probs = torch.stack([query[:, 0], query[:, 1:3].amax(1), query[:, 3], query[:, 4]], dim=1)
    prob, labels = probs.max(1)
    scores = prob * proposals.iou_scores.cpu().clamp(0, 1)
    _assert_decisions_are_clear(probs, scores)
    ys, xs = masks.any(2).float(), masks.any(1).float()
    boxes = torch.stack(
        [
            xs.argmax(1),
            ys.argmax(1),
            masks.shape[2] - xs.flip(1).argmax(1),
            masks.shape[1] - ys.flip(1).argmax(1),
        ],
        dim=1,
    ).double()
    return masks, scores, labels, boxes


def test_mask_nms_matches_a_re_derivation(segmenter, image, instances):
    masks, scores, labels, _ = rederive(segmenter, image)
    flat = masks.flatten(1)
    keep = []
    for i in sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i)):
        if all(
            labels[k] != labels[i] or (flat[k] & flat[i]).sum() / (flat[k] | flat[i]).sum() <= 0.5
            for k in keep
        ):
            keep.append(i)
    # scores (<= 1): the same math, so equal up to ~1e-6 rounding on another CPU
    np.testing.assert_allclose(instances.scores, scores[keep].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(instances.labels, labels[keep].numpy())
    np.testing.assert_array_equal(instances.masks, masks[keep].numpy())


def test_box_nms_matches_torchvision(tiny_model_names, image):
    boxed = build(tiny_model_names["vit"], vocabulary=VOCAB, postprocess={"score_threshold": 0})
    out = boxed(image)
    masks, scores, labels, boxes = rederive(boxed, image)
    keep = torchvision.ops.batched_nms(boxes, scores.double(), labels, 0.5)
    np.testing.assert_allclose(out.scores, scores[keep].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out.masks, masks[keep].numpy())
    np.testing.assert_array_equal(out.boxes, boxes[keep].numpy())


def test_other_vocabulary_reuses_proposals(segmenter, instances):
    encoded = segmenter._current
    proposals = segmenter.proposals(encoded)
    # the random CLIP names every proposal "sofa" in VOCAB; here sofa is a background word
    vocab = Vocabulary((("red thing",), ("sofa", "sky")), ("red thing", "background"))
    again = segmenter.predict(encoded, vocab)
    assert segmenter.proposals(encoded) is proposals
    assert set(again.labels.tolist()) <= {0}  # background instances are dropped
    segmenter.postprocess["drop_background"] = False
    try:
        kept = segmenter.predict(encoded, vocab)
    finally:
        segmenter.postprocess["drop_background"] = True
    assert len(kept) > len(again)  # the random CLIP calls some masks background
    np.testing.assert_array_equal(again.masks, kept.masks[kept.labels == 0])
    assert again.class_names == ["red thing", "background"]


def test_threshold_max_instances_and_mask_nms(tiny_model_names, image):
    strict = build(
        tiny_model_names["vit"],
        vocabulary=VOCAB,
        postprocess={"score_threshold": 0.0, "max_instances": 2, "nms_mode": "mask"},
    )
    out = strict(image)
    assert len(out) == 2
    none = build(tiny_model_names["vit"], postprocess={"score_threshold": 1.01})
    empty = none(image, VOCAB)
    assert len(empty) == 0 and empty.masks.shape == (0, 40, 48)
    with pytest.raises(ConfigError):
        build(tiny_model_names["vit"], postprocess={"nms_mode": "circle"})
    with pytest.raises(ConfigError):
        build(tiny_model_names["vit"], postprocess={"unknown": 1})


def test_crop_ensemble(tiny_model_names, segmenter, image):
    both = build(
        tiny_model_names["vit"],
        vocabulary=VOCAB,
        postprocess={"score_threshold": 0.0, "crop_weight": 0.5},
        crop_classifier={"type": "MaskedCropClassifier", "context_scale": 1.2},
    )
    encoded = both.encode(image)
    masks = both.proposals(encoded).masks[:3].cpu()
    pooled_only = segmenter.classify(encoded, masks, segmenter.resolve_vocabulary(None))
    mixed = both.classify(encoded, masks, both.resolve_vocabulary(None))
    assert mixed.shape == pooled_only.shape == (3, 4)
    assert not torch.allclose(mixed, pooled_only)
    assert both.crop_classifier.context_scale == 1.2


def test_segment_clicks(segmenter, image):
    encoded = segmenter.set_image(image)
    clicks = PointPrompts([[10.5, 12.5], [30.5, 5.5]], [1, 0])
    out = segmenter.segment_clicks(clicks)
    assert len(out) == len(segmenter.segment_clicks(encoded, clicks))
    prediction = segmenter.decoder.predict(
        point_coords=(clicks.coords - 0.5)[None],
        point_labels=clicks.labels[None],
        embedding=encoded.embedding,
    )
    best = int(prediction.iou_scores[0].argmax())
    expected = prediction.masks[0, best].numpy()
    assert len(out) == int(expected.any())
    if len(out):
        # the same decoder call (same prompts, same batch of one): exact by design
        np.testing.assert_array_equal(out.masks[0], expected)
        assert out.scores[0] <= float(prediction.iou_scores[0, best]) + 1e-6
    with pytest.raises(PromptError):
        segmenter.segment_clicks(PointPrompts(np.zeros((0, 2)), np.zeros(0)))


def test_refine_semantic_by_hand():
    sem_seg = np.array(
        [
            [0, 0, 1, 1],
            [0, 1, 1, 1],
            [2, 2, UNLABELLED, 1],
            [2, 2, 2, 2],
        ]
    )
    probs = np.zeros((3, 4, 4), dtype=np.float32)
    probs[0, :2, :2] = 0.9
    probs[1, :2, :2] = 0.1
    result = OVSegResult(sem_seg=sem_seg, class_names=["a", "b", "c"], probs=probs)
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, :2, :] = True  # 8 px: labels 0 x3, 1 x5 -> 1
    masks[1, :2, :1] = True  # 2 px inside mask 0, painted after it: labels 0 x2 -> 0
    out = refine_semantic(result, masks)
    expected = sem_seg.copy()
    expected[:2, :] = 1
    expected[:2, :1] = 0
    np.testing.assert_array_equal(out.sem_seg, expected)
    assert out.meta["sam_refined_masks"] == 2
    # mean probability over mask 0: class 0 mean 0.45, class 1 mean 0.05 -> 0
    out = refine_semantic(result, masks[:1], mode="mean_prob")
    assert (out.sem_seg[:2] == 0).all() and (out.sem_seg[2:] == sem_seg[2:]).all()
    with pytest.raises(ConfigError):
        refine_semantic(result, masks, mode="vote")
    with pytest.raises(ConfigError):
        refine_semantic(result, masks[:, :3])


def test_refine_semantic_with_an_encoded_images_proposals(tiny_model_names, image):
    torch.manual_seed(0)
    semantic = PIPELINES.build(
        {
            "type": "SemanticSegmenter",
            "backbone": backbone_config(tiny_model_names["vit"]),
            "inference": {"mode": "whole"},
        }
    )
    instance = build(tiny_model_names["vit"], vocabulary=VOCAB)
    encoded = instance.encode(image)
    plain = semantic(image, VOCAB)
    result = instance.refine_semantic(encoded, plain)
    assert result.sem_seg.shape == (40, 48)
    masks = instance.proposals(encoded).masks.cpu().numpy()
    smallest = masks[np.argmin(masks.reshape(len(masks), -1).sum(1))]
    assert len(np.unique(result.sem_seg[smallest])) == 1  # painted last, one label
    np.testing.assert_array_equal(result.sem_seg[~masks.any(0)], plain.sem_seg[~masks.any(0)])


def test_background_classes_are_queried_then_dropped(tiny_model_names, image):
    from ovseg.models.classifiers import with_background_classes
    from ovseg.vocab import Vocabulary

    vocab = Vocabulary.create(["cat", "dog|puppy"])
    extended = with_background_classes(vocab, ["grass", "Cat", "sand"])
    assert extended.names == ["cat", "dog", "grass", "sand"]  # a vocabulary class stays one
    assert extended.queries == ["cat", "dog", "puppy", "grass", "sand"]
    assert with_background_classes(vocab, ()) is vocab

    plain = build(
        tiny_model_names["vit"],
        vocabulary=["cat", "dog"],
        postprocess={"score_threshold": 0.0, "nms_threshold": 1.0},
    )
    with_stuff = build(
        tiny_model_names["vit"],
        vocabulary=["cat", "dog"],
        postprocess={
            "score_threshold": 0.0,
            "nms_threshold": 1.0,
            "background_classes": ["grass", "sand"],
        },
    )
    everything = plain(image, ["cat", "dog", "grass", "sand"])
    kept = with_stuff(image)
    # the masks kept are exactly those whose best class among all four is a vocabulary class
    assert sorted(kept.scores.tolist()) == pytest.approx(
        sorted(everything.scores[everything.labels < 2].tolist())
    )
    assert set(kept.labels.tolist()) <= {0, 1} and kept.class_names == ["cat", "dog"]
    assert (everything.labels >= 2).any()  # the check above dropped something


def test_cross_class_nms_keeps_one_name_per_object(tiny_model_names):
    masks = torch.zeros(4, 8, 8, dtype=torch.bool)
    masks[0, :4, :4] = True  # "cat", best
    masks[1, :4, :3] = True  # the same object as "dog": IoU 0.75 with mask 0
    masks[2, 4:, 4:] = True  # another object, "dog"
    masks[3, :4, 2:6] = True  # "sofa", IoU 1/3 with mask 0
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([0, 1, 1, 2])
    boxes = torch.tensor([[0, 0, 4, 4], [0, 0, 3, 4], [4, 4, 8, 8], [2, 0, 6, 4]])
    settings = {"nms_threshold": 0.5, "max_instances": 100}
    plain = build(tiny_model_names["vit"], postprocess={"nms_mode": "mask"})
    assert plain._kept_order(scores, labels, boxes, masks, settings).tolist() == [0, 1, 2, 3]
    for threshold, kept in ((0.5, [0, 2, 3]), (0.3, [0, 2])):
        one_name = build(
            tiny_model_names["vit"],
            postprocess={"nms_mode": "mask", "cross_class_iou": threshold},
        )
        assert one_name._kept_order(scores, labels, boxes, masks, settings).tolist() == kept
    with pytest.raises(ConfigError, match="cross_class_iou"):
        build(tiny_model_names["vit"], postprocess={"cross_class_iou": 1.5})
