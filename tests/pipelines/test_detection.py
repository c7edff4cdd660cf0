"""DetectionPipeline and detector-proposal instance segmentation, end to end on tiny models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ovseg.api import create_pipeline
from ovseg.errors import ConfigError, VocabularyError, WeightsNotFoundError
from ovseg.models.classifiers import boxes_from_masks
from ovseg.models.detectors import Detections
from ovseg.structures import Instances
from tests.models.decoders.sam_tiny import TINY_SAM, random_image, tiny_sam
from tests.models.detectors.tiny_detectors import write_tiny_owl

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    root = tmp_path_factory.mktemp("detection")
    owl = write_tiny_owl(root / "owl")
    sam_file = root / "sam.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_sam().state_dict().items()}, sam_file)
    detector = {"type": "Owlv2Detector", "model": str(owl), "box_threshold": 0.05}
    return {
        "pipelines": {
            "detection": {
                "type": "DetectionPipeline",
                "detector": detector,
                "postprocess": {"nms_threshold": 0.5},
            },
            "instance": {
                "type": "InstanceSegmenter",
                "backbone": None,
                "proposals": "detector",
                "detector": detector,
                "decoder": {
                    "type": "SamDecoder",
                    "model_type": TINY_SAM,
                    "checkpoint": str(sam_file),
                },
                "postprocess": {"score_threshold": 0.0, "nms_threshold": 0.5},
            },
        }
    }


def test_detection_pipeline_returns_the_detectors_boxes(config):
    pipeline = create_pipeline(config, ["cat", "dog|kitty"], task="detection")
    image = random_image(40, 56)
    found = pipeline(image)
    assert isinstance(found, Detections) and len(found) > 0
    assert found.class_names == ["cat", "dog"] and found.queries == ["cat", "dog", "kitty"]
    direct = pipeline.detector.detect(image, pipeline.vocabulary, box_threshold=0.05, nms=0.5)
    np.testing.assert_array_equal(found.boxes, direct.boxes)
    np.testing.assert_array_equal(found.scores, direct.scores)
    stricter = pipeline.predict(pipeline.encode(image), box_threshold=0.5)
    assert len(stricter) < len(found) and (stricter.scores > 0.5).all()
    with pytest.raises(ConfigError):
        pipeline.predict(pipeline.encode(image), threshold=0.5)
    with pytest.raises(VocabularyError):
        create_pipeline(config, task="detection")(image)


def test_instance_masks_from_detector_boxes(config):
    pipeline = create_pipeline(config, ["cat", "dog"], task="instance")
    assert pipeline.backbone is None and pipeline.proposal_source == "detector"
    image = random_image(40, 56)
    encoded = pipeline.encode(image)
    found = pipeline.predict(encoded, max_instances=1000, nms_threshold=1.0)
    assert isinstance(found, Instances) and len(found) > 0
    assert found.masks.shape[1:] == (40, 56) and found.masks.any(axis=(1, 2)).all()
    boxes = pipeline.detector.detect(image, pipeline.vocabulary, box_threshold=0.05)
    # each instance: a detector box, its label, and score = detector score x SAM's IoU
    for box, score, label, mask in list(zip(found.boxes, found.scores, found.labels, found.masks))[
        :3
    ]:
        row = int(np.nonzero(np.all(boxes.boxes == box, axis=1))[0][0])
        assert boxes.labels[row] == label
        prediction = pipeline.decoder.predict(
            boxes=box, multimask=False, embedding=encoded.embedding
        )
        iou = float(prediction.iou_scores[0, 0].clamp(0, 1))
        assert score == pytest.approx(boxes.scores[row] * iou, rel=1e-5)
        np.testing.assert_array_equal(mask, prediction.masks[0, 0].numpy())
    fewer = pipeline.predict(encoded, box_threshold=0.5, max_instances=1000, nms_threshold=1.0)
    assert len(fewer) < len(found)
    # query_threshold: one mask per box and query above it, as the detector's score_threshold
    every = pipeline.predict(
        encoded, query_threshold=0.05, score_threshold=0.0, max_instances=1000, nms_threshold=1.0
    )
    pairs = pipeline.detector.detect(image, pipeline.vocabulary, box_threshold=0.05,
                                      score_threshold=0.05)  # fmt: skip
    assert len(every) == len(pairs) > len(boxes)
    assert sorted(every.labels.tolist()) == sorted(pairs.labels.tolist())


def test_detector_proposals_need_a_detector(config):
    section = dict(config["pipelines"]["instance"], detector=None)
    with pytest.raises(ConfigError, match="detector"):
        create_pipeline({"pipelines": {"instance": section}}, ["cat"], task="instance")
    section = dict(config["pipelines"]["instance"], proposals="boxes")
    with pytest.raises(ConfigError, match="proposals"):
        create_pipeline({"pipelines": {"instance": section}}, ["cat"], task="instance")


@pytest.mark.parametrize(
    ("preset", "repo"),
    [
        ("owlv2-b16-sam-vith", "google/owlv2-base-patch16-ensemble"),
        ("grounding-dino-t-sam-vith", "IDEA-Research/grounding-dino-tiny"),
    ],
)
def test_presets_name_the_missing_detector_weights(preset, repo, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    for task in ("detection", "instance"):
        with pytest.raises(WeightsNotFoundError) as info:
            create_pipeline(preset, ["cat"], task=task)
        message = str(info.value)
        assert f"https://huggingface.co/{repo}" in message
        assert "config.json" in message and "model.safetensors" in message


def test_device_reaches_the_detector(config):
    pipeline = create_pipeline(config, ["cat"], task="detection", device="cpu")
    assert pipeline.detector.device == torch.device("cpu")


def test_preset_with_its_detector_present_names_the_missing_sam(config, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    folder = config["pipelines"]["detection"]["detector"]["model"]
    override = f"pipelines.detection.detector.model={folder}"
    detection = create_pipeline(
        "owlv2-b16-sam-vith", ["cat"], task="detection", overrides=[override]
    )
    assert str(detection.detector.folder) == folder
    with pytest.raises(WeightsNotFoundError) as info:
        create_pipeline("owlv2-b16-sam-vith", ["cat"], task="instance", overrides=[override])
    message = str(info.value)
    assert "sam_vit_h_4b8939.pth" in message
    assert "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth" in message


def test_mdetr_detects_and_proposes_instances(config, tmp_path):
    """MDETR in both pipelines: detections as the detector's own, SAM masks from its boxes."""
    from tests.models.detectors.tiny_mdetr import (
        tiny_architecture,
        write_tiny_checkpoint,
        write_tiny_tokenizer,
    )

    detector = {
        "type": "MdetrDetector", "checkpoint": str(write_tiny_checkpoint(tmp_path / "m.pth")),
        "tokenizer": str(write_tiny_tokenizer(tmp_path / "tok")),
        "architecture": tiny_architecture(), "min_size": 40, "max_size": 64,
        "box_threshold": 0.0,
    }  # fmt: skip
    pipelines = {
        "detection": dict(config["pipelines"]["detection"], detector=detector),
        "instance": dict(config["pipelines"]["instance"], detector=detector),
    }
    image = random_image(40, 56)
    detection = create_pipeline({"pipelines": pipelines}, ["cat", "dog|kitty"], task="detection")
    found = detection(image)
    direct = detection.detector.detect(image, detection.vocabulary, box_threshold=0.0, nms=0.5)
    assert len(found) > 0 and found.class_names == ["cat", "dog"]
    np.testing.assert_array_equal(found.scores, direct.scores)
    instance = create_pipeline({"pipelines": pipelines}, ["cat"], task="instance")
    masks = instance(image)
    assert isinstance(masks, Instances) and len(masks) > 0


@pytest.mark.parametrize("task", ["detection", "instance"])
def test_mdetr_preset_names_its_missing_checkpoint(task, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsNotFoundError, match="pretrained_resnet101_checkpoint.pth"):
        create_pipeline("mdetr-r101-sam-vith", ["cat"], task=task)


@pytest.fixture(scope="module")
def clip_named(config, tiny_model_names):
    """The tiny OWLv2's boxes named by a tiny random CLIP's crops, and the same boxes as found."""
    section = dict(
        config["pipelines"]["detection"],
        backbone={"type": "ClipBackbone", "model_name": tiny_model_names["vit"]},
        postprocess={
            "nms_threshold": None,
            "naming": "clip",
            "crop_logit_scale": 30.0,
            "detector_score_power": 0.5,
            "background_classes": ["grass"],
        },
    )
    torch.manual_seed(0)
    return create_pipeline(
        {"pipelines": {"detection": section}}, ["cat", "dog|kitty"], task="detection"
    )


def test_clip_naming_scores_each_box_by_its_crop(clip_named):
    from ovseg.models.classifiers import MaskContext, box_masks, query_probabilities

    pipeline = clip_named
    image = random_image(40, 56)
    found = pipeline(image)
    boxes = pipeline.detector.detect(image, pipeline.vocabulary, box_threshold=0.05)
    assert len(found) > 0 and found.class_names == ["cat", "dog"]
    assert found.queries == ["cat", "dog", "kitty"]
    # by hand: the crop's softmax over the queries and "grass", times sqrt(detector score)
    context = MaskContext(image=image, tokens=None, backbone=pipeline.backbone)
    embeds = pipeline.crop_classifier.embed(box_masks(boxes.boxes, 40, 56), context)
    text = pipeline.backbone.encode_text(["cat", "dog", "kitty", "grass"]).float()
    probs = query_probabilities(embeds, text, 30.0)
    expected = probs * torch.from_numpy(boxes.scores)[:, None].double().sqrt().float()
    best = expected.argmax(dim=1)
    kept = best < 3  # a box whose best query is the background class is dropped
    assert len(found) == int(kept.sum())
    for box, score, query, label in zip(
        found.boxes, found.scores, found.query_indices, found.labels, strict=True
    ):
        row = int(np.nonzero(np.all(boxes.boxes == box, axis=1))[0][0])
        assert query == int(best[row]) and label == [0, 1, 1][query]
        assert score == pytest.approx(float(expected[row, query]), rel=1e-5)
    assert (np.diff(found.scores) <= 0).all()
    # a score threshold: every box-query pair above it, background pairs excluded
    pairs = pipeline.predict(pipeline.encode(image), score_threshold=0.01)
    above = (expected[:, :3] > 0.01).sum().item()
    assert len(pairs) == above and set(pairs.query_indices.tolist()) <= {0, 1, 2}


def test_clip_naming_needs_a_backbone(config, tiny_model_names):
    section = dict(config["pipelines"]["detection"], postprocess={"naming": "clip"})
    with pytest.raises(ConfigError, match="backbone"):
        create_pipeline({"pipelines": {"detection": section}}, ["cat"], task="detection")
    section = dict(config["pipelines"]["detection"], postprocess={"naming": "crops"})
    with pytest.raises(ConfigError, match="naming"):
        create_pipeline({"pipelines": {"detection": section}}, ["cat"], task="detection")
    # naming: detector builds no CLIP even when one is configured
    section = dict(
        config["pipelines"]["detection"],
        backbone={"type": "ClipBackbone", "model_name": tiny_model_names["vit"]},
    )
    plain = create_pipeline({"pipelines": {"detection": section}}, ["cat"], task="detection")
    assert plain.backbone is None and plain.crop_classifier is None


def test_grounded_masks_named_by_clip(config, tiny_model_names):
    section = dict(
        config["pipelines"]["instance"],
        backbone={"type": "ClipBackbone", "model_name": tiny_model_names["vit"]},
        inference={"short_side": None, "max_long_side": None},
        postprocess={
            "naming": "clip",
            "detector_score_power": 0.5,
            "score_threshold": 0.0,
            "nms_threshold": 1.0,
        },
    )
    torch.manual_seed(0)
    pipeline = create_pipeline(
        {"pipelines": {"instance": section}}, ["cat", "dog"], task="instance"
    )
    image = random_image(40, 56)
    encoded = pipeline.encode(image)
    found = pipeline.predict(encoded, max_instances=1000)
    boxes = pipeline.detector.detect(image, pipeline.vocabulary, box_threshold=0.05)
    masks, ious = pipeline.segment_boxes(encoded, boxes.boxes)
    assert masks.shape == (len(boxes), 40, 56)
    # each box's SAM mask, named as SAM proposals are, with sqrt(detector score) x SAM's IoU
    quality = torch.from_numpy(boxes.scores).sqrt() * ious.clamp(0, 1)
    expected = pipeline.name_masks(encoded, masks, quality, pipeline.vocabulary)
    assert len(found) == len(expected) > 0
    np.testing.assert_array_equal(found.masks, expected.masks)
    np.testing.assert_allclose(found.scores, expected.scores, rtol=1e-6)
    np.testing.assert_array_equal(found.boxes, boxes_from_masks(found.masks).numpy())
    # without a backbone there is nothing to name with
    section = dict(config["pipelines"]["instance"], postprocess={"naming": "clip"})
    with pytest.raises(ConfigError, match="backbone"):
        create_pipeline({"pipelines": {"instance": section}}, ["cat"], task="instance")


def test_grounded_boxes_from_the_masks(config):
    section = dict(
        config["pipelines"]["instance"],
        postprocess={"score_threshold": 0.0, "nms_threshold": 1.0, "box_from": "mask"},
    )
    pipeline = create_pipeline(
        {"pipelines": {"instance": section}}, ["cat", "dog"], task="instance"
    )
    found = pipeline(random_image(40, 56), max_instances=1000)
    assert len(found) > 0
    np.testing.assert_array_equal(found.boxes, boxes_from_masks(found.masks).numpy())
    section = dict(section, postprocess={"box_from": "sam"})
    with pytest.raises(ConfigError, match="box_from"):
        create_pipeline({"pipelines": {"instance": section}}, ["cat"], task="instance")


def test_detector_instances_have_no_class_agnostic_proposals(config):
    from ovseg.registry import PIPELINES

    pipeline = create_pipeline(config, ["cat"], task="instance")
    with pytest.raises(ConfigError, match="instance_sam"):
        pipeline.proposals(pipeline.encode(random_image(40, 56)))
    with pytest.raises(ConfigError, match="proposals: sam"):
        PIPELINES.build(
            {"type": "VocabFreeInstanceSegmenter", "instance": pipeline, "search": None}
        )
