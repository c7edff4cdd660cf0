"""SemanticSegmenter end to end on a tiny random CLIP."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ovseg
from ovseg.errors import ConfigError, ImageReadError, ImageTooLargeError, VocabularyError
from tests.tolerance import assert_argmax_matches


def tiny_config(model_name, **inference):
    return {
        "pipeline": {
            "type": "SemanticSegmenter",
            "backbone": {
                "type": "ClipBackbone",
                "model_name": model_name,
                "dense_mode": "sclip",
                "templates": "photo",
            },
            "logit_scale": 40.0,
            "inference": {"mode": "slide", "crop_size": 32, "stride": 16, **inference},
        }
    }


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(40, 56, 3), dtype=np.uint8)


@pytest.fixture
def seg(tiny_model_names):
    torch.manual_seed(0)
    return ovseg.create_pipeline(
        tiny_config(tiny_model_names["vit"]), vocabulary=["cat", "dog|puppy", "sofa"]
    )


def test_result_shapes_and_json(seg, image):
    result = seg(image)
    assert result.sem_seg.shape == (40, 56)
    assert result.probs.shape == (3, 40, 56)
    assert set(np.unique(result.sem_seg)) <= {0, 1, 2}
    summary = result.to_dict()
    assert sum(c["area"] for c in summary["classes"]) == 40 * 56
    assert [c["name"] for c in summary["classes"]] == ["cat", "dog", "sofa"]


def test_matches_hand_computation_single_window(tiny_model_names, image):
    torch.manual_seed(0)
    seg = ovseg.create_pipeline(
        tiny_config(tiny_model_names["vit"], mode="whole"), vocabulary=["cat", "dog|puppy", "sofa"]
    )
    result = seg(image)
    backbone = seg.backbone
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    dense = F.normalize(backbone.encode_dense(backbone.normalize(tensor)), dim=1)[0]
    text = backbone.encode_text(["cat", "dog", "puppy", "sofa"])
    scores = torch.einsum("dhw,qd->qhw", dense, text)[None]
    scores = F.interpolate(scores, size=(40, 56), mode="bilinear", align_corners=False)
    scores = F.interpolate(scores, size=(40, 56), mode="bilinear", align_corners=False)[0]
    probs = torch.softmax(40.0 * scores, dim=0)
    probs = torch.stack([probs[0], probs[1:3].amax(0), probs[3]])
    # the pipeline's own float32 path vs this one: probabilities (<= 1) are softmax(40 x cosine),
    # so a cosine's rounding (~1e-7) moves them by up to ~1e-6 (measured <= 5e-7); a pixel whose
    # two best classes are within twice the bound of each other may take either label
    np.testing.assert_allclose(result.probs, probs.numpy(), rtol=0, atol=1e-5)
    assert_argmax_matches(result.sem_seg, probs, margin=2e-5)


def test_slide_over_one_window_equals_whole(tiny_model_names):
    image = np.random.default_rng(1).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    torch.manual_seed(0)
    slide = ovseg.create_pipeline(tiny_config(tiny_model_names["vit"]), vocabulary=["a", "b"])
    torch.manual_seed(0)
    whole = ovseg.create_pipeline(
        tiny_config(tiny_model_names["vit"], mode="whole"), vocabulary=["a", "b"]
    )
    # one window covering the image: the same tensors through the same ops (the average over one
    # window divides by 1), so exact by design
    np.testing.assert_array_equal(slide(image).probs, whole(image).probs)


def test_set_image_then_predict_reuses_tokens(seg, image, monkeypatch):
    seg.set_image(image)
    calls = []
    original = seg.backbone.encode_dense
    monkeypatch.setattr(seg.backbone, "encode_dense", lambda x: calls.append(1) or original(x))
    first = seg.predict(["cat", "dog"])
    second = seg.predict(["sofa", "cat", "table"])
    assert calls == [] and first.class_names == ["cat", "dog"] and len(second.class_names) == 3
    fresh = seg(image, ["cat", "dog"])
    np.testing.assert_array_equal(first.probs, fresh.probs)  # same tokens, same ops: exact


def test_predict_batch_equals_single_images(seg, image):
    other = np.ascontiguousarray(image[::-1, :40])
    batch = seg.predict_batch([image, other])
    for single, batched in zip([seg(image), seg(other)], batch):
        # batch of 2 vs 1: float32 summation order only; probabilities (<= 1) of softmax(40 x
        # cosine) move by up to ~1e-6 (measured <= 5e-7 with MKL's AVX2 path, one thread)
        np.testing.assert_allclose(batched.probs, single.probs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("workers", [0, 2])
def test_predict_batch_streams_files_in_order_and_raises_a_bad_one(seg, image, tmp_path, workers):
    from PIL import Image

    paths = []
    for index in range(5):
        path = tmp_path / f"{index}.png"
        Image.fromarray(np.ascontiguousarray(np.roll(image, 7 * index, axis=1))).save(path)
        paths.append(path)
    seg.encode_group = 2  # groups of two images and a last one alone
    batch = seg.predict_batch(paths, workers=workers, prefetch_depth=2)
    for path, batched in zip(paths, batch, strict=True):
        single = seg(path)
        np.testing.assert_allclose(batched.probs, single.probs, rtol=0, atol=1e-5)
    (tmp_path / "bad.png").write_bytes(b"not a picture")
    with pytest.raises(ImageReadError):
        seg.predict_batch([paths[0], tmp_path / "bad.png"], workers=workers)


def test_load_image_resizes_ahead_and_encode_takes_it(seg, image):
    prepared = seg.load_image(image)
    assert prepared.array is not None and prepared.original == image.shape[:2]
    assert prepared.tensor.device == seg.backbone.device and prepared.tensor.dtype == torch.float32
    direct, loaded = seg(image), seg(prepared)
    assert np.array_equal(direct.sem_seg, loaded.sem_seg)
    np.testing.assert_array_equal(direct.probs, loaded.probs)


def test_background_threshold_and_unlabelled(tiny_model_names, image):
    cfg = tiny_config(tiny_model_names["vit"])
    cfg["pipeline"]["postprocess"] = {"prob_threshold": 0.99}
    seg = ovseg.create_pipeline(cfg, vocabulary=["background|sky", "cat", "dog"])
    assert set(np.unique(seg(image).sem_seg)) <= {0, 1, 2}
    assert (seg(image).sem_seg == 0).mean() > 0.5  # low confidence goes to background
    no_bg = seg(image, ["cat", "dog"]).sem_seg
    assert (no_bg == 255).mean() > 0.5  # no background class: unlabelled


def test_pamr_runs(tiny_model_names, image):
    cfg = tiny_config(tiny_model_names["vit"])
    cfg["pipeline"]["postprocess"] = {"pamr": {"num_iter": 2, "dilations": [1, 2]}}
    result = ovseg.create_pipeline(cfg, vocabulary=["a", "b"])(image)
    assert result.sem_seg.shape == (40, 56)


def test_bad_inputs(seg, tiny_model_names, tmp_path):
    with pytest.raises(VocabularyError):
        seg(np.zeros((8, 8, 3), np.uint8), [])
    with pytest.raises(VocabularyError):
        seg(np.zeros((8, 8, 3), np.uint8), ["cat", "cat"])
    with pytest.raises(ConfigError, match="No preset"):
        ovseg.create_pipeline("no-such-preset")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageReadError):
        seg(bad)
    cfg = tiny_config(tiny_model_names["vit"], max_pixels=100)
    with pytest.raises(ImageTooLargeError):
        ovseg.create_pipeline(cfg, vocabulary=["a"])(np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(ConfigError, match="inference"):
        ovseg.create_pipeline(tiny_config(tiny_model_names["vit"], bogus=1), vocabulary=["a"])
    with pytest.raises(ConfigError, match="set_image"):
        ovseg.create_pipeline(tiny_config(tiny_model_names["vit"]), vocabulary=["a"]).predict()


def test_on_each_device_it_matches_the_cpu_and_streams_chunks_on_the_device(
    device, tiny_model_names, image
):
    names = ["cat", "dog|puppy", "sofa"]
    torch.manual_seed(0)
    cpu = ovseg.create_pipeline(tiny_config(tiny_model_names["vit"]), vocabulary=names)
    torch.manual_seed(0)
    here = ovseg.create_pipeline(
        tiny_config(tiny_model_names["vit"]), vocabulary=names, device=str(device)
    )
    want, got = cpu(image), here(image)
    # CUDA kernels sum in other orders (and cuDNN may use TF32 in the patch convolution):
    # probabilities of softmax(40 x cosine) move by far less than 1e-2
    np.testing.assert_allclose(got.probs, want.probs, rtol=0, atol=1e-2)
    assert_argmax_matches(got.sem_seg, want.probs, margin=2e-2)
    # query chunks of one (a score budget of one byte): the streamed softmax runs where the
    # model is and gives the labels of the whole-map path
    torch.manual_seed(0)
    chunked = ovseg.create_pipeline(
        tiny_config(tiny_model_names["vit"], score_bytes=1), vocabulary=names, device=str(device)
    )
    streamed = chunked(image)
    assert streamed.meta["query_chunks"] == 4 and streamed.probs is None
    assert_argmax_matches(streamed.sem_seg, got.probs, margin=1e-5)
    np.testing.assert_allclose(
        streamed.label_scores, np.take_along_axis(got.probs, got.sem_seg[None], 0)[0], atol=1e-5
    )
