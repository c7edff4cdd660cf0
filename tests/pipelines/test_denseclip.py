"""DenseCLIPSegmenter: exported weights -> sem_seg results for any vocabulary; presets; eval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import ovseg
from ovseg.data.writers import write_synthetic_world
from ovseg.errors import ConfigError, WeightsNotFoundError
from ovseg.evaluation.loop import evaluate
from ovseg.inference.sliding import slide_inference
from ovseg.models.denseclip import DenseCLIPSegmentor
from ovseg.models.denseclip_export import export_segmentor
from ovseg.pipelines.denseclip import DenseCLIPSegmenter
from ovseg.registry import PIPELINES
from ovseg.structures import OVSegResult

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[2]
PRESETS = ROOT / "ovseg" / "model_zoo" / "presets"
TRAIN_CLASSES = ["red circle", "blue star", "grass"]
INFERENCE = {"short_side": 32, "max_long_side": 64, "mode": "slide", "crop_size": 32, "stride": 16}


@pytest.fixture(scope="module")
def weights(tiny_model_names, tmp_path_factory):
    torch.manual_seed(0)
    model = DenseCLIPSegmentor(
        tiny_model_names["vit"],
        decoder={"width": 16, "heads": 2, "layers": 1},
        neck_args={"fpn_channels": 16, "channels": 16},
    )
    path = tmp_path_factory.mktemp("denseclip") / "model_final.safetensors"
    export_segmentor(model, path, TRAIN_CLASSES)
    return str(path)


@pytest.fixture
def image():
    return np.random.default_rng(0).integers(0, 256, size=(40, 56, 3), dtype=np.uint8)


def test_results_for_a_vocabulary_unlike_training(weights, image):
    assert PIPELINES.get("DenseCLIPSegmenter") is DenseCLIPSegmenter
    seg = DenseCLIPSegmenter(weights, inference=INFERENCE, vocabulary=["cat", "dog", "sofa", "sky"])
    result = seg(image)
    assert isinstance(result, OVSegResult)
    assert result.sem_seg.shape == (40, 56) and result.sem_seg.dtype == np.int64
    assert result.class_names == ["cat", "dog", "sofa", "sky"]
    assert result.probs.shape == (4, 40, 56)
    np.testing.assert_allclose(result.probs.sum(0), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(result.sem_seg, result.probs.argmax(0))
    other = seg(image, vocabulary="purple hexagon, water")
    assert other.class_names == ["purple hexagon", "water"] and other.probs.shape == (2, 40, 56)


def test_cached_features_equal_direct_inference(weights, image, monkeypatch):
    seg = DenseCLIPSegmenter(weights, inference=INFERENCE)
    calls = []
    encode = seg.model.encode_image
    monkeypatch.setattr(seg.model, "encode_image", lambda x: calls.append(x.shape) or encode(x))
    features = seg.set_image(image)
    first = seg.predict(["cat", "sofa"])
    second = seg.predict(["sky", "dog", "sofa"])
    assert len(calls) == 1  # one backbone pass; both vocabularies reuse it
    assert first.probs.shape[0] == 2 and second.probs.shape[0] == 3
    assert len(features.windows[0]) == 2  # 32x45 image: 32 px windows at x = 0 and 13
    # the same logits as the segmentor's own sliding-window inference
    pixels = torch.from_numpy(np.asarray(image)).permute(2, 0, 1)[None].float() / 255
    size = features.original_size
    tensor = seg.model.normalize(
        torch.nn.functional.interpolate(pixels, size=features.resized_size, mode="bilinear")
    )
    names = ["sky", "dog", "sofa"]
    text = seg.model.encode_names(names)
    direct = slide_inference(
        lambda crops: seg.model(crops, text).logits, tensor, mode="slide", crop_size=32, stride=16
    )
    direct = torch.nn.functional.interpolate(direct[None], size=size, mode="bilinear")[0]
    cached = seg.query_logits(features, names, size)
    torch.testing.assert_close(cached, direct, rtol=1e-4, atol=1e-5)


def test_synonyms_thresholds_and_batches(weights, image):
    seg = DenseCLIPSegmenter(
        weights,
        inference={**INFERENCE, "mode": "whole"},
        postprocess={"prob_threshold": 0.9, "background_index": None},
    )
    result = seg(image, vocabulary="cat|kitty, dog")
    assert result.probs.shape == (2, 40, 56)
    assert set(np.unique(result.sem_seg)) <= {0, 1, 255}
    batch = seg.predict_batch([image, image[:32, :32]], vocabulary=["cat", "dog"])
    assert [r.sem_seg.shape for r in batch] == [(40, 56), (32, 32)]


def test_create_pipeline_and_errors(weights, image):
    cfg = {"pipeline": {"type": "DenseCLIPSegmenter", "weights": weights, "inference": INFERENCE}}
    seg = ovseg.create_pipeline(cfg, vocabulary=["cat", "dog"], device="cpu")
    assert seg(image).sem_seg.shape == (40, 56) and seg.device.type == "cpu"
    with pytest.raises(WeightsNotFoundError, match="trained weights"):
        DenseCLIPSegmenter(None)
    with pytest.raises(ConfigError, match="backbone.device"):
        DenseCLIPSegmenter(weights, backbone={"model_name": "RN50"})
    with pytest.raises(ConfigError):
        DenseCLIPSegmenter(weights, inference={"mode": "tiles"})
    with pytest.raises(ConfigError):
        DenseCLIPSegmenter(weights, inference={"windows": 3})
    with pytest.raises(ConfigError, match="set_image"):
        DenseCLIPSegmenter(weights).predict(["cat"])


@pytest.mark.parametrize(
    "arch, release, crop, stride",
    [("r50", "res50", 512, 341), ("r101", "res101", 512, 341), ("vitb16", "vit-b", 640, 426)],
)
def test_presets(arch, release, crop, stride, tmp_path, monkeypatch):
    preset = yaml.safe_load((PRESETS / f"denseclip-{arch}-ade.yaml").read_text())
    pipe = preset["pipeline"]
    assert pipe["type"] == "DenseCLIPSegmenter" and preset["vocabulary"] == {
        "file": "ade_mmseg.txt"
    }
    assert pipe["release"] == release and pipe["weights"] is None  # the authors' checkpoint
    assert pipe["inference"] == {
        "short_side": crop,
        "max_long_side": 2048,
        "mode": "slide",
        "crop_size": crop,
        "stride": stride,
        "batch_size": 8,
    }
    # the eval config scores this repository's own training run of the recipe
    eval_cfg = yaml.safe_load(
        (ROOT / "configs" / "denseclip" / f"denseclip_{arch}_fpn_ade20k_eval.yaml").read_text()
    )
    train_cfg = ROOT / "configs" / "denseclip" / f"denseclip_{arch}_fpn_ade20k.yaml"
    assert eval_cfg["pipeline"]["release"] is None
    assert yaml.safe_load(train_cfg.read_text())["work_dir"] in eval_cfg["pipeline"]["weights"]
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsNotFoundError) as err:  # the message names the file and address
        ovseg.create_pipeline(f"denseclip-{arch}-ade")
    from ovseg.model_zoo.denseclip_files import DENSECLIP_RELEASES

    entry = DENSECLIP_RELEASES[release]
    assert entry["file"] in str(err.value) and entry["url"] in str(err.value)
    assert str(tmp_path / "hub" / "checkpoints") in str(err.value)


def test_ovseg_eval_reports_seen_and_unseen(weights, tmp_path):
    write_synthetic_world(
        tmp_path / "synth",
        num_train=0,
        num_val=2,
        image_size=32,
        formats=["ade20k"],
        progress=False,
    )
    eval_cfg = yaml.safe_load(
        (ROOT / "configs" / "shapes" / "shapes_tiny_denseclip_eval.yaml").read_text()
    )
    assert eval_cfg["_base_"] == "shapes-tiny-denseclip"  # the packaged weights by default
    # another run's export: its architecture comes from the file
    eval_cfg["pipeline"] = {
        "weights": weights,
        "model": None,
        "pretrained": None,
        "inference": {**INFERENCE, "batch_size": 4},
    }
    eval_cfg["data"]["test"]["root"] = str(tmp_path / "synth")
    eval_cfg["evaluation"]["progress"] = False
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(eval_cfg))
    results = evaluate(path, work_dir=tmp_path / "out")
    assert set(results["groups"]) == {"seen", "unseen"} and results["num_images"] == 2
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert "mIoU" in json.dumps(saved)


def test_packaged_weights_need_the_architecture_and_a_known_tag():
    from ovseg.errors import ConfigError
    from ovseg.pipelines.denseclip import embedded_denseclip_weights

    with pytest.raises(ConfigError, match="pipeline.model"):
        embedded_denseclip_weights(None, "shapes")
    with pytest.raises(WeightsNotFoundError, match="packaged: ovseg-ViT-Ti-8 / shapes"):
        embedded_denseclip_weights({"model_name": "ovseg-ViT-Ti-8"}, "nope")
    path = embedded_denseclip_weights({"model_name": "ovseg-ViT-Ti-8"}, "shapes")
    assert path.endswith("ovseg-ViT-Ti-8-shapes-denseclip.safetensors")
