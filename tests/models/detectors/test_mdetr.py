"""The MDETR detector: strict loading of released-layout checkpoints, and ``detect`` against the
reference post-processing formulas (transcribed here) on the model's raw outputs."""

from __future__ import annotations

import argparse
import os

import numpy as np
import pytest
import torch

from ovseg.errors import (
    CheckpointError,
    ConfigError,
    UnsafeCheckpointError,
    VocabularyError,
    WeightsNotFoundError,
)
from ovseg.registry import DETECTORS
from tests.models.detectors.tiny_mdetr import (
    tiny_architecture,
    tiny_state_dict,
    write_tiny_checkpoint,
    write_tiny_tokenizer,
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("mdetr")
    state = tiny_state_dict(0)
    return {
        "state": state,
        "tokenizer": write_tiny_tokenizer(root / "tokenizer"),
        "checkpoint": write_tiny_checkpoint(root / "tiny.pth", state=state),
    }


def _build(files, **extra):
    config = {
        "type": "MdetrDetector", "checkpoint": str(files["checkpoint"]),
        "tokenizer": str(files["tokenizer"]), "architecture": tiny_architecture(),
        "min_size": 48, "max_size": 80, **extra,
    }  # fmt: skip
    return DETECTORS.build(config)


@pytest.fixture(scope="module")
def detector(files):
    return _build(files, clip_boxes=False)


def _image(seed=0, shape=(40, 56, 3)):
    return np.random.RandomState(seed).randint(0, 256, shape, dtype=np.uint8)


def _reference_positive_map(encoding, spans, width):
    """``create_positive_map`` of datasets/coco.py (binarised), transcribed."""
    rows = torch.zeros(len(spans), width)
    for row, (beg, end) in enumerate(spans):
        beg_pos = encoding.char_to_token(beg)
        end_pos = encoding.char_to_token(end - 1)
        if beg_pos is None:
            beg_pos = encoding.char_to_token(beg + 1)
            if beg_pos is None:
                beg_pos = encoding.char_to_token(beg + 2)
        if end_pos is None:
            end_pos = encoding.char_to_token(end - 2)
            if end_pos is None:
                end_pos = encoding.char_to_token(end - 3)
        if beg_pos is None or end_pos is None:
            continue
        rows[row, beg_pos : end_pos + 1] = 1
    return rows


def test_released_layout_loads_strictly_and_exactly(files, detector):
    loaded = detector.model.state_dict()
    assert set(loaded) == set(files["state"])
    assert all(torch.equal(loaded[k], v) for k, v in files["state"].items())


def test_detect_follows_the_reference_post_processing(detector):
    queries = ["a cat", "red car"]
    image = _image()
    found = detector.detect(image, queries, box_threshold=0.0)
    caption = "a cat. red car"
    with torch.no_grad():
        outputs, encoding = detector.predict([image], caption)
    logits, boxes = outputs["pred_logits"][0], outputs["pred_boxes"][0]
    # PostProcess: scores = 1 - softmax[..., -1]; boxes cxcywh -> xyxy * (w, h, w, h)
    prob = torch.softmax(logits, -1)
    scores = 1 - prob[:, -1]
    cx, cy, w, h = boxes.unbind(-1)
    xyxy = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
    xyxy = xyxy * torch.tensor([56.0, 40.0, 56.0, 40.0])
    positive = _reference_positive_map(encoding, [(0, 5), (7, 14)], logits.shape[-1])
    assert positive.sum(1).tolist() == [5, 7]  # one token per byte: "a cat", "red car"
    label = (prob @ positive.T).argmax(-1)
    order = torch.argsort(scores, descending=True, stable=True)
    assert len(found) == len(scores) == 10
    np.testing.assert_allclose(found.scores, scores[order].numpy(), rtol=1e-6)
    np.testing.assert_allclose(found.boxes, xyxy[order].numpy(), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(found.query_indices, label[order].numpy())
    # threshold on the PostProcess score (strictly above), as the demo's ``probas > 0.7``
    cut = float(np.median(found.scores))
    kept = detector.detect(image, queries, box_threshold=cut)
    assert len(kept) == int((scores > cut).sum()) and (kept.scores > cut).all()


def test_other_queries_get_their_share_of_the_box_score(detector):
    image = _image(1)
    found = detector.detect(image, ["a cat", "red car"], box_threshold=0.0, score_threshold=0.0)
    with torch.no_grad():
        outputs, encoding = detector.predict([image], "a cat. red car")
    prob = torch.softmax(outputs["pred_logits"][0].double(), -1)
    mass = prob @ _reference_positive_map(encoding, [(0, 5), (7, 14)], prob.shape[-1]).double().T
    expected = (1 - prob[:, -1:]) * mass / mass.max(-1, keepdim=True).values
    assert len(found) == 20  # every box once per query
    for score, query in zip(found.scores, found.query_indices, strict=True):
        assert np.isclose(expected[:, query].numpy(), score, rtol=1e-5).any()
    masses = _build_like(detector, score="mass").detect(
        image, ["a cat", "red car"], box_threshold=0.0, score_threshold=0.0
    )
    for score, query in zip(masses.scores, masses.query_indices, strict=True):
        assert np.isclose(mass[:, query].numpy(), score, rtol=1e-5).any()


def _build_like(detector, **changes):
    clone = object.__new__(type(detector))
    clone.__dict__.update(detector.__dict__)
    for key, value in changes.items():
        setattr(clone, key, value)
    return clone


def test_one_query_is_a_referring_expression(detector):
    """One query: the caption is the expression itself, every score is ``1 - p(no object)``."""
    image = _image(2)
    found = detector.detect(image, ["the blue star"], box_threshold=0.0, max_detections=1)
    with torch.no_grad():
        outputs, _ = detector.predict([image], "the blue star")
    scores = 1 - torch.softmax(outputs["pred_logits"][0], -1)[:, -1]
    assert found.scores[0] == pytest.approx(float(scores.max()), rel=1e-6)


def test_separate_captions_score_each_query_alone(detector):
    image = _image(3)
    separate = _build_like(detector, caption="separate")
    found = separate.detect(image, ["a cat", "red car"], box_threshold=0.0)
    assert separate.query_chunks(["a cat", "red car"]) == [[0], [1]]
    for index, query in enumerate(["a cat", "red car"]):
        with torch.no_grad():
            outputs, _ = detector.predict([image], query)
        scores = 1 - torch.softmax(outputs["pred_logits"][0], -1)[:, -1]
        mine = np.sort(found.scores[found.query_indices == index])[::-1]
        np.testing.assert_allclose(mine, np.sort(scores.numpy())[::-1], rtol=1e-6)


def test_long_vocabularies_split_into_captions_and_nothing_is_cut(detector):
    queries = ["a cat", "red car", "the blue star", "remote control", "dog"]
    chunks = detector.query_chunks(queries)  # 31 token positions: several captions
    assert len(chunks) > 1 and [i for c in chunks for i in c] == list(range(5))
    for chunk in chunks:
        assert detector._caption_length([queries[i] for i in chunk]) <= 31
    image = _image(4)
    together = detector.detect(image, queries, box_threshold=0.0)
    parts = [detector.detect(image, [queries[i] for i in c], box_threshold=0.0) for c in chunks]
    expected = np.sort(np.concatenate([p.scores for p in parts]))[::-1]
    np.testing.assert_allclose(together.scores, expected, rtol=1e-6)
    assert len(together) == 10 * len(chunks)
    with pytest.raises(VocabularyError, match="longer than"):
        detector.detect(image, ["x" * 30])  # 30 bytes + <s> + </s> = 32 > 31
    with pytest.raises(VocabularyError):
        detector.detect(image, [])
    with pytest.raises(VocabularyError):
        detector.detect(image, ["cat", " "])


def test_batched_images_equal_single_ones(files):
    """Images of one size batch without padding: the same as one by one. (Differently sized
    images are zero-padded to one batch, as the reference's NestedTensor does, which changes
    the smaller image's numbers a little: the CNN sees the padding.)"""
    detector = _build(files, batch_size=2)
    images = [_image(5), _image(6)]
    both = detector.detect(images, ["a cat"], box_threshold=0.0)
    for image, result in zip(images, both, strict=True):
        alone = detector.detect(image, ["a cat"], box_threshold=0.0)
        np.testing.assert_allclose(result.scores, alone.scores, rtol=1e-5)
        np.testing.assert_allclose(result.boxes, alone.boxes, rtol=1e-5, atol=1e-4)
    tall = detector.detect([_image(7, (60, 30, 3)), _image(8)], ["a cat"], box_threshold=0.0)
    assert tall[0].image_size == (60, 30) and tall[1].image_size == (40, 56)
    assert tall[0].boxes[:, [0, 2]].max() <= 30 and tall[0].boxes[:, [1, 3]].max() <= 60


def _save(path, state, **extra):
    torch.save({"model": state, "epoch": 1, **extra}, path)
    return path


def test_wrong_missing_and_unsafe_checkpoints_are_refused(files, tmp_path):
    state = dict(files["state"])
    renamed = dict(state)
    renamed["class_embed.weightX"] = renamed.pop("class_embed.weight")
    with pytest.raises(CheckpointError, match=r"missing.*class_embed.weight.*unexpected"):
        _build({**files, "checkpoint": _save(tmp_path / "renamed.pth", renamed)})
    fewer = {k: v for k, v in state.items() if not k.startswith("contrastive_align")}
    with pytest.raises(CheckpointError, match="missing \\(4\\)"):
        _build({**files, "checkpoint": _save(tmp_path / "fewer.pth", fewer)})
    shaped = dict(state, **{"query_embed.weight": torch.zeros(11, 32)})
    with pytest.raises(CheckpointError, match="mismatched.*query_embed"):
        _build({**files, "checkpoint": _save(tmp_path / "shape.pth", shaped)})
    bad_positions = dict(
        state, **{"transformer.text_encoder.embeddings.position_ids": torch.zeros(1, 130)}
    )
    with pytest.raises(CheckpointError, match="position_ids"):
        _build({**files, "checkpoint": _save(tmp_path / "pos.pth", bad_positions)})
    # training arguments are plain data; anything that could run code is refused unloaded
    plain = _save(tmp_path / "plain.pth", state, args=argparse.Namespace(lr=1.0))
    assert _build({**files, "checkpoint": plain}).release == "mdetr_resnet101"
    unsafe = _save(tmp_path / "unsafe.pth", state, args=argparse.Namespace(hook=os.getcwd))
    with pytest.raises(UnsafeCheckpointError):
        _build({**files, "checkpoint": unsafe})


def test_missing_release_names_file_url_and_folder(files, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch" / "hub"))
    config = {
        "type": "mdetr", "model": "mdetr_resnet101_refcocoplus",
        "tokenizer": str(files["tokenizer"]),
    }  # fmt: skip
    with pytest.raises(WeightsNotFoundError) as info:
        DETECTORS.build(config)
    message = str(info.value)
    assert "https://zenodo.org/record/4721981/files/refcoco%2B_resnet101_checkpoint.pth" in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in message
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "refcoco%2B_resnet101_checkpoint.pth"
    cached.parent.mkdir(parents=True)
    write_tiny_checkpoint(cached, state=files["state"])
    found = DETECTORS.build({**config, "architecture": tiny_architecture()})
    assert found.release == "mdetr_resnet101_refcocoplus"


def test_bad_settings_are_refused(files, tmp_path):
    with pytest.raises(ConfigError, match="caption"):
        _build(files, caption="both")
    with pytest.raises(ConfigError, match="score"):
        _build(files, score="logit")
    with pytest.raises(ConfigError, match="releases"):
        _build(files, model="mdetr_resnet50")
    with pytest.raises(WeightsNotFoundError, match="merges.txt"):
        (tmp_path / "tok").mkdir()
        (tmp_path / "tok" / "vocab.json").write_text("{}")
        _build({**files, "tokenizer": tmp_path / "tok"})


def test_resize_follows_the_reference_sizes():
    """``get_size_with_aspect_ratio`` (datasets/transforms.py), transcribed: short side 800,
    unless the long side would pass 1333."""
    from ovseg.models.detectors.mdetr import resize_for_mdetr

    assert resize_for_mdetr(_image(0, (480, 640, 3))).shape == (800, 1066, 3)
    assert resize_for_mdetr(_image(0, (640, 480, 3))).shape == (1066, 800, 3)
    # 1333 * 100 / 1000 = 133.3 -> 133; long side int(133 * 1000 / 100) = 1330
    assert resize_for_mdetr(_image(0, (100, 1000, 3))).shape == (133, 1330, 3)
    same = _image(0, (800, 900, 3))
    assert resize_for_mdetr(same) is same
