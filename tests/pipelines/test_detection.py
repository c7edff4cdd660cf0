"""DetectionPipeline and detector-proposal instance segmentation, end to end on tiny models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ovseg.api import create_pipeline
from ovseg.errors import ConfigError, VocabularyError, WeightsNotFoundError
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
