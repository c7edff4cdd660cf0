"""Open-vocabulary detectors against transformers' own post-processing, on tiny random models."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from ovseg.errors import CheckpointError, ConfigError, VocabularyError, WeightsNotFoundError
from ovseg.models.classifiers.nms import box_iou
from ovseg.registry import DETECTORS
from ovseg.vocab import Vocabulary
from tests.models.detectors.tiny_detectors import write_tiny_grounding_dino, write_tiny_owl

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("detectors")
    return {
        "owlv2": write_tiny_owl(root / "owlv2", version=2),
        "owlvit": write_tiny_owl(root / "owlvit", version=1),
        "gdino": write_tiny_grounding_dino(root / "gdino"),
    }


def _images():
    rng = np.random.RandomState(0)
    return [
        rng.randint(0, 256, (40, 56, 3), dtype=np.uint8),
        rng.randint(0, 256, (60, 30, 3), dtype=np.uint8),
    ]


def _canonical(boxes, scores, labels):
    """Rows ordered by score, then box, then label (ties among equal scores are arbitrary)."""
    boxes, scores, labels = np.asarray(boxes), np.asarray(scores), np.asarray(labels)
    order = np.lexsort((labels, boxes[:, 1].round(3), boxes[:, 0].round(3), -scores.round(6)))
    return boxes[order], scores[order], labels[order]


@pytest.mark.parametrize("kind", ["owlv2", "owlvit"])
def test_owl_matches_transformers_post_processing(folders, kind):
    detector = DETECTORS.build(
        {"type": "Owlv2Detector" if kind == "owlv2" else "OwlViTDetector",
         "model": str(folders[kind]), "clip_boxes": False, "batch_size": 2}
    )  # fmt: skip
    queries = ["a cat", "dog", "red car"]
    images = _images()
    ours = detector.detect(images, queries, box_threshold=0.3)
    inputs = detector.processor(text=[queries] * 2, images=images, return_tensors="pt")
    with torch.no_grad():
        outputs = detector.model(**inputs)
    theirs = detector.processor.image_processor.post_process_object_detection(
        outputs, threshold=0.3, target_sizes=[im.shape[:2] for im in images]
    )
    assert sum(len(r["scores"]) for r in theirs) > 0
    for mine, ref in zip(ours, theirs, strict=True):
        assert len(mine) == len(ref["scores"])
        assert np.all(np.diff(mine.scores) <= 0)
        boxes, scores, labels = _canonical(ref["boxes"], ref["scores"], ref["labels"])
        my_boxes, my_scores, my_labels = _canonical(mine.boxes, mine.scores, mine.query_indices)
        np.testing.assert_allclose(my_boxes, boxes, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(my_scores, scores, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(my_labels, labels)


def test_owlv2_box_frame_is_the_padded_square(folders):
    """OWLv2 boxes scale by max(H, W): a tall image's boxes may reach x = H > W unclipped."""
    detector = DETECTORS.build({"type": "Owlv2Detector", "model": str(folders["owlv2"])})
    image = _images()[1]  # 60 x 30
    clipped = detector.detect(image, ["a cat"], box_threshold=0.0)
    detector.clip_boxes = False
    raw = detector.detect(image, ["a cat"], box_threshold=0.0)
    assert raw.boxes[:, 2].max() > 30  # the padding side
    assert clipped.boxes[:, [0, 2]].max() <= 30 and clipped.boxes[:, [1, 3]].max() <= 60


def test_owl_queries_split_over_calls_give_the_same_result(folders):
    detector = DETECTORS.build({"type": "owlv2", "model": str(folders["owlv2"])})
    queries = ["a cat", "dog", "red car", "blue star"]
    whole = detector.detect(_images()[0], queries, box_threshold=0.2)
    detector.max_queries_per_call = 1
    assert detector.query_chunks(queries) == [[0], [1], [2], [3]]
    split = detector.detect(_images()[0], queries, box_threshold=0.2)
    np.testing.assert_allclose(split.boxes, whole.boxes, atol=1e-5)
    np.testing.assert_allclose(split.scores, whole.scores, atol=1e-6)
    np.testing.assert_array_equal(split.query_indices, whole.query_indices)


def test_owl_from_model_and_device_preprocessing_give_the_same_detections(folders):
    """from_model wraps a built model and processor as the folder loader does; preprocessing
    on the model's device (here the CPU) gives the same pixels; a bf16 model takes them cast."""
    from ovseg.models.detectors.owl import Owlv2Detector

    loaded = DETECTORS.build({"type": "owlv2", "model": str(folders["owlv2"])})
    queries = ["a cat", "dog"]
    expected = loaded.detect(_images(), queries, box_threshold=0.0)
    wrapped = Owlv2Detector.from_model(
        loaded.model, loaded.processor, max_detections=5, preprocess_on_device=True
    )
    assert wrapped.folder is None and wrapped.max_detections == 5
    for mine, ref in zip(wrapped.detect(_images(), queries, box_threshold=0.0), expected):
        assert len(mine) == 5
        np.testing.assert_allclose(mine.boxes, ref.boxes[:5], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(mine.scores, ref.scores[:5], rtol=1e-5, atol=1e-6)
    half = Owlv2Detector.from_model(
        Owlv2Detector(str(folders["owlv2"])).model.to(torch.bfloat16), loaded.processor
    )
    found = half.detect(_images()[0], queries, box_threshold=0.0)
    assert len(found) == len(expected[0])
    assert np.isfinite(found.boxes).all()  # bf16 reorders close scores: compare them sorted
    np.testing.assert_allclose(np.sort(found.scores), np.sort(expected[0].scores), atol=0.02)


def test_owl_refuses_too_long_and_empty_queries(folders):
    detector = DETECTORS.build({"type": "owlv2", "model": str(folders["owlv2"])})
    with pytest.raises(VocabularyError, match="tokens long"):
        detector.detect(_images()[0], ["abcdefghijklmnopq"])  # 17 letters: 19 tokens
    with pytest.raises(VocabularyError):
        detector.detect(_images()[0], [])
    with pytest.raises(VocabularyError):
        detector.detect(_images()[0], ["cat", "  "])


def test_grounding_dino_matches_transformers_post_processing(folders):
    detector = DETECTORS.build(
        {"type": "GroundingDinoDetector", "model": str(folders["gdino"]), "clip_boxes": False,
         "batch_size": 2}
    )  # fmt: skip
    queries = ["a cat", "dog", "red car"]
    images = _images()
    ours = detector.detect(images, queries, box_threshold=0.0)
    inputs = detector.processor(text=[queries] * 2, images=images, return_tensors="pt")
    with torch.no_grad():
        outputs = detector.model(**inputs)
    theirs = detector.processor.post_process_grounded_object_detection(
        outputs, inputs["input_ids"], threshold=0.0, target_sizes=[im.shape[:2] for im in images]
    )
    # tokens of the queries: [CLS] a cat . dog . red car . [SEP]
    query_tokens = {1, 2, 4, 6, 7}
    best_token = outputs.logits.argmax(dim=-1)
    compared = 0
    for index, (mine, ref) in enumerate(zip(ours, theirs, strict=True)):
        assert len(mine) == len(ref["scores"]) == outputs.logits.shape[1]
        for box, score, token in zip(ref["boxes"], ref["scores"], best_token[index]):
            if int(token) not in query_tokens:
                continue
            match = np.nonzero(np.all(np.abs(mine.boxes - box.numpy()) < 1e-4, axis=1))[0]
            assert len(match) == 1
            assert mine.scores[match[0]] == pytest.approx(float(score), rel=1e-6)
            compared += 1
    assert compared > 5


def test_grounding_dino_splits_long_vocabularies_into_captions(folders):
    detector = DETECTORS.build({"type": "grounding_dino", "model": str(folders["gdino"])})
    queries = ["a cat", "dog", "red car", "the blue star", "remote control"]
    chunks = detector.query_chunks(queries)  # max_text_len 16
    assert len(chunks) > 1 and sorted(i for c in chunks for i in c) == list(range(5))
    for chunk in chunks:
        assert detector._caption_length([queries[i] for i in chunk]) <= 16
    image = _images()[0]
    together = detector.detect(image, queries, box_threshold=0.0)
    parts = [detector.detect(image, [queries[i] for i in c], box_threshold=0.0) for c in chunks]
    expected = np.sort(np.concatenate([p.scores for p in parts]))[::-1]
    np.testing.assert_allclose(together.scores, expected, rtol=1e-6)
    assert set(together.query_indices.tolist()) <= set(range(5))
    with pytest.raises(VocabularyError, match="separator"):
        detector.detect(image, ["a cat. dog"])
    with pytest.raises(VocabularyError, match="longer than"):
        detector.detect(image, [" ".join(["red"] * 20)])


def test_class_wise_nms_merges_synonyms(folders):
    detector = DETECTORS.build({"type": "owlv2", "model": str(folders["owlv2"])})
    vocab = Vocabulary((("cat", "a cat", "kitty"), ("dog",)))
    found = detector.detect(_images()[0], vocab, box_threshold=0.0, score_threshold=0.0, nms=0.3)
    assert set(found.labels.tolist()) <= {0, 1}
    assert found.class_names == ["cat", "dog"]
    assert (found.labels == np.array([0, 0, 0, 1])[found.query_indices]).all()
    for label in set(found.labels.tolist()):
        boxes = found.boxes[found.labels == label]
        ious = box_iou(boxes, boxes).numpy()
        np.fill_diagonal(ious, 0)
        assert ious.max(initial=0) <= 0.3
    every = detector.detect(_images()[0], vocab, box_threshold=0.0, score_threshold=0.0)
    assert len(every) == 16 * 4 and len(found) < len(every)
    assert np.all(np.diff(found.scores) <= 0)


def test_missing_and_pickled_weights(folders, tmp_path):
    copy = shutil.copytree(folders["owlv2"], tmp_path / "owl")
    (copy / "model.safetensors").unlink()
    with pytest.raises(WeightsNotFoundError, match="model.safetensors"):
        DETECTORS.build({"type": "owlv2", "model": str(copy)})
    from safetensors.torch import load_file

    state = load_file(folders["owlv2"] / "model.safetensors")
    torch.save(state, copy / "pytorch_model.bin")
    from_bin = DETECTORS.build({"type": "owlv2", "model": str(copy)})
    reference = DETECTORS.build({"type": "owlv2", "model": str(folders["owlv2"])})
    a = from_bin.detect(_images()[0], ["dog"], box_threshold=0.0)
    b = reference.detect(_images()[0], ["dog"], box_threshold=0.0)
    # same weights; the .bin copy may land in another memory layout (float32 summation order)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6, atol=1e-7)
    torch.save({k: v for k, v in list(state.items())[1:]}, copy / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="missing"):
        DETECTORS.build({"type": "owlv2", "model": str(copy)})


def test_uncached_hub_repository_names_its_source(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsNotFoundError) as info:
        DETECTORS.build({"type": "owlv2", "model": "google/owlv2-base-patch16-ensemble"})
    message = str(info.value)
    assert "https://huggingface.co/google/owlv2-base-patch16-ensemble" in message
    assert "model.safetensors" in message and "config.json" in message


def test_grounding_dino_mean_over_query_tokens(folders):
    detector = DETECTORS.build(
        {"type": "GroundingDinoDetector", "model": str(folders["gdino"]), "token_reduce": "mean",
         "clip_boxes": False}
    )  # fmt: skip
    image = _images()[0]
    found = detector.detect(image, ["red car", "dog"], box_threshold=0.0, score_threshold=0.0)
    inputs = detector.processor(text=[["red car", "dog"]], images=[image], return_tensors="pt")
    with torch.no_grad():
        probs = torch.sigmoid(detector.model(**inputs).logits[0])
    # [CLS] red car . dog . [SEP]: "red car" is tokens 1-2, "dog" token 4
    expected = torch.stack([probs[:, 1:3].mean(dim=1), probs[:, 4]], dim=1).numpy()
    assert len(found) == expected.size  # every box, once per query
    for score, query in zip(found.scores, found.query_indices, strict=True):
        assert np.isclose(expected[:, query], score, rtol=1e-5).any()
    with pytest.raises(ConfigError):
        DETECTORS.build({"type": "grounding_dino", "model": str(folders["gdino"]),
                         "token_reduce": "sum"})  # fmt: skip
