"""ProxyCLIP presets: every value against mc-lan/ProxyCLIP's segmentor defaults and configs.

The expected values are transcribed from the reference repository (file and line named at each
value), so a change of a preset that drifts from the reference fails here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import ovseg
import ovseg.model_zoo
from ovseg.config import load_config, to_container
from ovseg.errors import WeightsNotFoundError
from ovseg.vocab import Vocabulary

ZOO = Path(ovseg.model_zoo.__file__).resolve().parent
CLASSES = ZOO / "classes"
ARCHS = {
    # configs/base_config.py lines 4-5 (default) and lines 9-11 (the listed alternatives)
    "vitb16": ("ViT-B-16", "openai"),
    "vitl14": ("ViT-L-14", "openai"),
    "vith14": ("ViT-H-14", "laion2b_s32b_b79k"),
}
# proxyclip_segmentor.py line 30-31: ProxyCLIPSegmentation(..., prob_thd=0.0, logit_scale=40,
# beta=1.2, gamma=3.0, slide_stride=112, slide_crop=336); forward_slide is used whenever
# slide_crop > 0 (line 260), so every benchmark slides.
DEFAULTS = dict(prob=0.0, scale=40.0, beta=1.2, gamma=3.0, stride=112, crop=336)
# per benchmark: (short side from the Resize scale=(2048, S), name file, overrides)
EXPECTED = {
    # cfg_voc21.py line 6 prob_thd=0.2; line 15 Resize scale=(2048, 336)
    "voc21": dict(DEFAULTS, short=336, prob=0.2, vocab="voc21_proxyclip.txt", classes=21),
    # cfg_context60.py line 6 prob_thd=0.15; line 15 (2048, 336)
    "pc60": dict(DEFAULTS, short=336, prob=0.15, vocab="pc60.txt", classes=60),
    # cfg_coco_object.py line 6 prob_thd=0.25; line 15 (2048, 336)
    "object": dict(DEFAULTS, short=336, prob=0.25, vocab="object_proxyclip.txt", classes=81),
    # cfg_voc20.py line 14 (2048, 336)
    "voc20": dict(DEFAULTS, short=336, vocab="voc20_plain.txt", classes=20),
    # cfg_context59.py line 14 (2048, 336)
    "pc59": dict(DEFAULTS, short=336, vocab="pc59.txt", classes=59),
    # cfg_coco_stuff164k.py line 14 (2048, 336)
    "stuff": dict(DEFAULTS, short=336, vocab="stuff.txt", classes=171),
    # cfg_city_scapes.py lines 6-7 slide_stride=112, slide_crop=224; line 16 (2048, 448)
    "city": dict(DEFAULTS, short=448, crop=224, stride=112, vocab="city.txt", classes=19),
    # cfg_ade20k.py line 14 (2048, 448)
    "ade": dict(DEFAULTS, short=448, vocab="ade.txt", classes=150),
}
WITH_BACKGROUND = {"voc21", "pc60", "object"}
# configs/cls_coco_object.txt line 1: COCO-Object's background words (17, fewer than VOC's 26)
OBJECT_BACKGROUND = (
    "sky; wall; tree; wood; grass; road; sea; river; mountain; sands; desk; bed; building; "
    "cloud; floor; hill; rail"
).split("; ")
# configs/cls_voc21.txt line 1: VOC's background words
VOC_BACKGROUND = (
    "sky; wall; tree; wood; grass; road; sea; river; mountain; sands; desk; bed; building; "
    "cloud; lamp; door; window; wardrobe; ceiling; shelf; curtain; stair; floor; hill; rail; fence"
).split("; ")


def _cfg(name: str) -> dict:
    return to_container(load_config(name))


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_generic_preset(arch):
    cfg = _cfg(f"proxyclip-{arch}")
    assert cfg["vocabulary"] is None and cfg["benchmark"] is None
    pipe = cfg["pipeline"]
    assert pipe["type"] == "SemanticSegmenter"
    backbone = pipe["backbone"]
    assert backbone["type"] == "ProxyClipBackbone"
    assert (backbone["model_name"], backbone["pretrained"]) == ARCHS[arch]
    # proxyclip_segmentor.py line 53: vfm_model 'dino' (base_config.py line 6) is dino_vitb8
    assert backbone["proxy_model"] == "dino_vitb8"
    assert backbone["proxy_checkpoint"] is None  # a local file the user gives
    assert (backbone["beta"], backbone["gamma"]) == (DEFAULTS["beta"], DEFAULTS["gamma"])
    # proxyclip_segmentor.py line 90: openai_imagenet_template (the 80 CLIP templates)
    assert backbone["templates"] == "imagenet80"
    assert pipe["logit_scale"] == DEFAULTS["scale"]
    inf = pipe["inference"]
    assert (inf["mode"], inf["crop_size"], inf["stride"]) == ("slide", 336, 112)
    assert (inf["short_side"], inf["max_long_side"]) == (336, 2048)
    post = pipe["postprocess"]
    assert post == {"prob_threshold": 0.0, "area_threshold": 0.0, "background_index": None,
                    "pamr": None}  # fmt: skip


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("bench", sorted(EXPECTED))
def test_benchmark_preset_matches_reference_config(arch, bench):
    exp = EXPECTED[bench]
    cfg = _cfg(f"proxyclip-{arch}-{bench}")
    assert cfg["benchmark"] == bench
    pipe = cfg["pipeline"]
    assert (pipe["backbone"]["model_name"], pipe["backbone"]["pretrained"]) == ARCHS[arch]
    assert pipe["backbone"]["proxy_model"] == "dino_vitb8"
    assert (pipe["backbone"]["beta"], pipe["backbone"]["gamma"]) == (exp["beta"], exp["gamma"])
    assert pipe["logit_scale"] == exp["scale"]
    inf = pipe["inference"]
    assert inf["mode"] == "slide"
    assert (inf["crop_size"], inf["stride"]) == (exp["crop"], exp["stride"])
    assert (inf["short_side"], inf["max_long_side"]) == (exp["short"], 2048)
    post = pipe["postprocess"]
    assert post["prob_threshold"] == exp["prob"]
    assert post["area_threshold"] == 0.0 and post["pamr"] is None
    assert post["background_index"] == (0 if bench in WITH_BACKGROUND else None)
    assert cfg["vocabulary"] == {"file": exp["vocab"]}
    vocab = Vocabulary.create({"file": str(CLASSES / exp["vocab"])})
    assert len(vocab.classes) == exp["classes"]


def test_windows_never_need_the_reference_padding():
    # forward_slide pads windows to multiples of 56 (proxyclip_segmentor.py line 220); with the
    # short side >= crop every window is crop x crop, and every crop is a multiple of 56
    for exp in EXPECTED.values():
        assert exp["short"] >= exp["crop"] and exp["crop"] % 56 == 0


def test_name_files_match_the_reference_lists():
    voc21 = Vocabulary.create({"file": str(CLASSES / "voc21_proxyclip.txt")})
    assert list(voc21.classes[0]) == VOC_BACKGROUND
    # cls_voc21.txt lines 2-21 are the plain VOC names, without synonyms
    plain = Vocabulary.create({"file": str(CLASSES / "voc21_plain.txt")})
    assert voc21.classes[1:] == plain.classes[1:]
    assert voc21.classes[15] == ("person",) and voc21.classes[20] == ("tvmonitor",)
    voc20 = Vocabulary.create({"file": str(CLASSES / "voc20_plain.txt")})
    assert voc20.classes == plain.classes[1:]  # cls_voc20.txt
    obj = Vocabulary.create({"file": str(CLASSES / "object_proxyclip.txt")})
    assert list(obj.classes[0]) == OBJECT_BACKGROUND
    assert obj.classes[1] == ("person",) and obj.classes[80] == ("toothbrush",)
    obj_plain = Vocabulary.create({"file": str(CLASSES / "object_plain.txt")})
    assert obj.classes[1:] == obj_plain.classes[1:]


def test_preset_builds_with_tiny_models_and_refuses_missing_proxy_weights(tiny_model_names):
    tiny = {
        "model_name": tiny_model_names["vit"],
        "pretrained": None,
        "random_proxy": True,
        "proxy_kwargs": {"embed_dim": 32, "depth": 1, "num_heads": 2, "patch_size": 4,
                         "img_size": 32},
        "templates": "photo",
    }  # fmt: skip
    seg = ovseg.create_pipeline(
        "proxyclip-vitb16-voc20",
        backbone=tiny,
        inference={"crop_size": 32, "stride": 16, "short_side": 40},
    )
    result = seg(torch.rand(1, 3, 40, 50), ["cat", "dog"])
    assert result.sem_seg.shape == (40, 50)
    with pytest.raises(WeightsNotFoundError, match="dino_vitbase8_pretrain.pth"):
        ovseg.create_pipeline("proxyclip-vitb16-voc20", backbone={**tiny, "random_proxy": False})
