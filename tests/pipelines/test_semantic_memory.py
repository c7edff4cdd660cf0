"""Bounded memory in the semantic pipeline: working resolution, query chunks, thin images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ovseg
from ovseg.errors import ConfigError
from ovseg.inference.labels import nearest_resize, working_size
from ovseg.inference.postprocess import semantic_result
from ovseg.inference.resize import resize_bilinear
from ovseg.inference.sliding import average_window_scores
from tests.pipelines.test_semantic import tiny_config as semantic_config

VOCAB = ["background|sky|wall", "cat", "dog|puppy", "sofa", "red star|star", "tree"]


def tiny_config(model_name, pamr=True, **inference):
    """test_semantic's tiny sliding-window config with thresholds (and PAMR)."""
    config = semantic_config(model_name, **inference)
    postprocess = {"prob_threshold": 0.3, "area_threshold": 0.05}
    if pamr:
        postprocess["pamr"] = {"num_iter": 3, "dilations": [1, 2]}
    config["pipeline"]["postprocess"] = postprocess
    return config


def old_full_resolution_result(seg, encoded, vocab, size=None):
    """The computation before memory was bounded: every query's map at the input size (or
    ``size``), PAMR there, then softmax / synonyms / thresholds on the whole (Q, H, W) map."""
    size = encoded.original_size if size is None else size
    text = seg.backbone.encode_text(vocab.queries)
    window_scores = [torch.einsum("dhw,qd->qhw", t, text) for t in encoded.features]
    scores = average_window_scores(window_scores, encoded.windows, *encoded.resized_size)
    scores = F.interpolate(scores[None], size=size, mode="bilinear", align_corners=False)
    scores = seg.pamr(resize_bilinear(encoded.guide, size), scores)
    return semantic_result(
        scores[0] * seg.logit_scale,
        vocab,
        background_index=vocab.background_index,
        prob_threshold=0.3,
        area_threshold=0.05,
    )


@pytest.fixture
def images():
    rng = np.random.default_rng(3)
    blocks = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    smooth = np.kron(blocks, np.ones((9, 9, 1), dtype=np.uint8))  # 45 x 63, flat regions
    return [smooth, rng.integers(0, 256, size=(40, 56, 3), dtype=np.uint8)]


@pytest.fixture
def seg(tiny_model_names, one_torch_thread):
    torch.manual_seed(0)
    return ovseg.create_pipeline(tiny_config(tiny_model_names["vit"]), vocabulary=VOCAB)


def test_labels_equal_the_full_resolution_computation(seg, images):
    vocab = ovseg.Vocabulary.create(VOCAB)
    for image in images:
        encoded = seg.encode(image)
        result = seg.predict(encoded)
        old = old_full_resolution_result(seg, encoded, vocab)
        np.testing.assert_array_equal(result.sem_seg, old.sem_seg)
        np.testing.assert_array_equal(result.probs, old.probs)  # same code path, same numbers
        assert result.mean_scores() == old.mean_scores()


def test_query_chunks_give_the_same_labels(tiny_model_names, seg, images):
    torch.manual_seed(0)
    chunked = ovseg.create_pipeline(
        tiny_config(tiny_model_names["vit"], score_bytes=2 * 45 * 63 * 4), vocabulary=VOCAB
    )
    for image in images:
        whole, parts = seg(image), chunked(image)
        assert parts.meta["query_chunks"] == 5 and parts.probs is None
        # The streamed softmax adds exponentials in another order than torch.softmax: labels
        # agree except where two classes' probabilities tie to ~1e-6 (none in these scenes).
        np.testing.assert_array_equal(parts.sem_seg, whole.sem_seg)
        for name, score in whole.mean_scores().items():
            other = parts.mean_scores()[name]
            assert (score is None) == (other is None)
            if score is not None:
                assert other == pytest.approx(score, rel=1e-5, abs=1e-6)


def test_a_large_image_is_scored_at_the_working_resolution(tiny_model_names, images):
    torch.manual_seed(0)
    capped = ovseg.create_pipeline(
        tiny_config(tiny_model_names["vit"], max_work_pixels=600), vocabulary=VOCAB
    )
    uncapped = ovseg.create_pipeline(
        tiny_config(tiny_model_names["vit"], max_work_pixels=None), vocabulary=VOCAB
    )
    image = images[0]
    work = working_size(*image.shape[:2], 600)
    assert work[0] * work[1] <= 600 and work == (20, 28)
    result = capped(image)
    assert result.sem_seg.shape == image.shape[:2]
    assert result.meta["working_size"] == list(work)
    assert result.probs.shape == (len(VOCAB), *work)
    # the labels are those of the whole computation at the working size, looked up at the
    # input size by nearest neighbour
    encoded = capped.encode(image)
    at_work = old_full_resolution_result(capped, encoded, ovseg.Vocabulary.create(VOCAB), work)
    np.testing.assert_array_equal(result.sem_seg, nearest_resize(at_work.sem_seg, image.shape[:2]))
    np.testing.assert_array_equal(result.probs, at_work.probs)
    # without a cap the same image is scored at its own size
    assert uncapped(image).probs.shape == (len(VOCAB), *image.shape[:2])


def test_nearest_resize_maps_pixel_centres():
    values = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(
        nearest_resize(values, (4, 6)),
        [[0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2], [3, 3, 4, 4, 5, 5], [3, 3, 4, 4, 5, 5]],
    )
    assert nearest_resize(values, (2, 3)) is values


@pytest.mark.parametrize("size", [(400, 3), (3, 400), (1, 1)])
def test_thin_images_give_a_result(tiny_model_names, size, one_torch_thread):
    torch.manual_seed(0)
    seg = ovseg.create_pipeline(
        tiny_config(tiny_model_names["vit"], pamr=False, short_side=24, max_long_side=64),
        vocabulary=VOCAB,
    )
    image = np.random.default_rng(0).integers(0, 256, size=(*size, 3), dtype=np.uint8)
    result = seg(image)
    assert result.sem_seg.shape == size
    assert set(np.unique(result.sem_seg)) <= set(range(len(VOCAB)))


@pytest.mark.parametrize(
    "inference",
    [
        {"stride": "abc"},
        {"stride": 0},
        {"stride": -16},
        {"stride": 48},  # larger than the 32 px window: pixels between windows get no score
        {"short_side": 0},
        {"crop_size": 4},  # below the 8 px patch
        {"batch_size": 0},
        {"max_work_pixels": -1},
        {"mode": "tiles"},
    ],
)
def test_bad_window_settings_are_refused(tiny_model_names, inference):
    with pytest.raises(ConfigError, match="inference"):
        ovseg.create_pipeline(tiny_config(tiny_model_names["vit"], **inference), vocabulary=VOCAB)


def test_bad_logit_scale_and_unknown_call_settings_are_refused(tiny_model_names, seg, images):
    config = tiny_config(tiny_model_names["vit"])
    config["pipeline"]["logit_scale"] = "abc"
    with pytest.raises(ConfigError, match="logit_scale"):
        ovseg.create_pipeline(config, vocabulary=VOCAB)
    encoded = seg.encode(images[1])
    with pytest.raises(ConfigError, match="score_threshold"):
        seg.predict(encoded, VOCAB, score_threshold=0.5)


def test_call_overrides_change_one_call_only(seg, images):
    encoded = seg.encode(images[1])
    strict = seg.predict(encoded, VOCAB, prob_threshold=0.99)
    default = seg.predict(encoded, VOCAB)
    assert (strict.sem_seg == 0).sum() > (default.sem_seg == 0).sum()  # more background
    assert seg.postprocess["prob_threshold"] == 0.3
