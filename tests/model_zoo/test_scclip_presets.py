"""SC-CLIP presets: every value against SuleBai/SC-CLIP's segmentor defaults and configs.

The expected values are transcribed from the reference repository (file and line named at each
value; commit 0417ba9 unless another is named), so a preset that drifts from the reference fails
here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import ovseg
import ovseg.model_zoo
from ovseg.cli import main
from ovseg.config import load_config, to_container
from ovseg.evaluation.suite import get_suite
from ovseg.vocab import Vocabulary
from tests.conftest import TINY_CONFIGS
from tests.evaluation.test_suite import write_ade

ZOO = Path(ovseg.model_zoo.__file__).resolve().parent
CLASSES = ZOO / "classes"
# scclip_segmentor.py lines 19-22: SCCLIPForSegmentation(..., pamr_steps=0, prob_thd=0.0,
# logit_scale=40, slide_stride=112, slide_crop=224, area_thd=None, ...); predict (line 147) slides
# whenever slide_crop > 0, and no config sets it, so every benchmark slides with 224 / 112.
# clip/model.py line 247: self.beta = 0.4 (the similarity threshold); line 329: the centred
# mid-level similarities are scaled by 3.0; line 274: lof_pytorch(n_neighbors=30,
# contamination=0.05).
DEFAULTS = dict(prob=0.0, area=0.0, scale=40.0, stride=112, crop=224, short=336)
ARCHS = {
    # configs/base_config.py lines 3-8: clip_path='ViT-B/16', pre_adjust_idx=8,
    # post_adjust_idx=3, multi_start_idx=3, multi_end_idx=10, res_cls=0.3
    "vitb16": dict(model="ViT-B-16", pre=8, post=3, start=3, end=10, res_cls=0.3),
    # commit 74471da configs/base_config.py lines 12-21 (commented ViT-L/14 block):
    # clip_path='ViT-L/14', pre_adjust_idx=16, post_adjust_idx=6, multi_start_idx=8,
    # multi_end_idx=19, res_cls=0.1
    "vitl14": dict(model="ViT-L-14", pre=16, post=6, start=8, end=19, res_cls=0.1),
}
# per benchmark: the short side of Resize scale=(2048, S) (line 14 or 15 of each cfg_*.py), the
# name file, and the model overrides of lines 4-7
EXPECTED = {
    "vitb16": {
        # cfg_voc21.py lines 6-7: area_thd=0.1, logit_scale=50, prob_thd=0.15
        "voc21": dict(DEFAULTS, scale=50.0, prob=0.15, area=0.1),
        # cfg_context60.py line 6: prob_thd=0.15
        "pc60": dict(DEFAULTS, prob=0.15),
        # cfg_coco_object.py line 6: logit_scale=55, prob_thd=0.35
        "object": dict(DEFAULTS, scale=55.0, prob=0.35),
        "voc20": DEFAULTS,
        "pc59": DEFAULTS,
        # cfg_coco_stuff164k.py line 14: Resize scale=(2048, 336) (SCLIP's is 448)
        "stuff": DEFAULTS,
        # cfg_city_scapes.py line 14: Resize scale=(2048, 560)
        "city": dict(DEFAULTS, short=560),
        "ade": DEFAULTS,
    },
}
EXPECTED["vitl14"] = {
    **EXPECTED["vitb16"],
    # commit 74471da cfg_voc21.py lines 6-10: area_thd=0.1; the ViT-B/16 line 8 (logit_scale=50,
    # prob_thd=0.15) gives way to the commented ViT-L/14 line 10 (prob_thd=0.2), so the logit
    # scale stays at the default 40
    "voc21": dict(DEFAULTS, prob=0.2, area=0.1),
    # commit 74471da cfg_coco_object.py lines 6-9: ViT-L/14 prob_thd=0.25, default logit scale
    "object": dict(DEFAULTS, prob=0.25),
}
CLASS_FILES = {
    # configs/cls_*.txt: the same lists as SCLIP's, shipped here as <benchmark>.txt
    "voc21": ("voc21.txt", 21), "pc60": ("pc60.txt", 60), "object": ("object.txt", 81),
    "voc20": ("voc20.txt", 20), "pc59": ("pc59.txt", 59), "stuff": ("stuff.txt", 171),
    "city": ("city.txt", 19), "ade": ("ade.txt", 150),
}  # fmt: skip
WITH_BACKGROUND = {"voc21", "pc60", "object"}
# configs/cls_voc21.txt and cls_coco_object.txt line 1: the background words (26, the same list)
BACKGROUND = (
    "sky; wall; tree; wood; grass; road; sea; river; mountain; sands; desk; bed; building; "
    "cloud; lamp; door; window; wardrobe; ceiling; shelf; curtain; stair; floor; hill; rail; fence"
).split("; ")
# configs/cls_coco_object.txt line 2
PERSON = ("person", "person in shirt", "person in jeans", "person in dress", "person in sweater",
          "person in skirt", "person in jacket", "body")  # fmt: skip
# configs/cls_voc21.txt line 21 / cls_voc20.txt line 20
TV = ("television monitor", "tv monitor", "monitor", "television", "screen")


def _cfg(name: str) -> dict:
    return to_container(load_config(name))


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_generic_preset(arch):
    exp = ARCHS[arch]
    cfg = _cfg(f"scclip-{arch}")
    assert cfg["vocabulary"] is None and cfg["benchmark"] is None
    pipe = cfg["pipeline"]
    assert pipe["type"] == "SemanticSegmenter"
    backbone = pipe["backbone"]
    assert backbone == {
        "type": "ScClipBackbone",
        "model_name": exp["model"],
        "pretrained": "openai",  # clip.load of OpenAI's weights (scclip_segmentor.py line 29)
        "pre_adjust_idx": exp["pre"],
        "post_adjust_idx": exp["post"],
        "multi_start_idx": exp["start"],
        "multi_end_idx": exp["end"],
        "res_cls": exp["res_cls"],
        "sim_threshold": 0.4,
        "gamma": 3.0,
        "anomaly_detector": "lof",
        # scclip_segmentor.py line 47: openai_imagenet_template (the 80 CLIP templates)
        "templates": "imagenet80",
    }
    assert pipe["logit_scale"] == DEFAULTS["scale"]
    inf = pipe["inference"]
    assert (inf["mode"], inf["crop_size"], inf["stride"]) == ("slide", 224, 112)
    assert (inf["short_side"], inf["max_long_side"]) == (336, 2048)
    assert pipe["postprocess"] == {"prob_threshold": 0.0, "area_threshold": 0.0,
                                   "background_index": None, "pamr": None}  # fmt: skip


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("bench", sorted(CLASS_FILES))
def test_benchmark_preset_matches_reference_config(arch, bench):
    exp = EXPECTED[arch][bench]
    cfg = _cfg(f"scclip-{arch}-{bench}")
    assert cfg["benchmark"] == bench
    pipe = cfg["pipeline"]
    backbone = pipe["backbone"]
    assert backbone["model_name"] == ARCHS[arch]["model"]
    assert backbone["pre_adjust_idx"] == ARCHS[arch]["pre"]
    assert backbone["res_cls"] == ARCHS[arch]["res_cls"]
    assert pipe["logit_scale"] == exp["scale"]
    inf = pipe["inference"]
    assert inf["mode"] == "slide"
    assert (inf["crop_size"], inf["stride"]) == (exp["crop"], exp["stride"])
    assert (inf["short_side"], inf["max_long_side"]) == (exp["short"], 2048)
    post = pipe["postprocess"]
    assert post["prob_threshold"] == exp["prob"] and post["area_threshold"] == exp["area"]
    assert post["pamr"] is None
    assert post["background_index"] == (0 if bench in WITH_BACKGROUND else None)
    file, num = CLASS_FILES[bench]
    assert cfg["vocabulary"] == {"file": file}
    assert len(Vocabulary.create({"file": str(CLASSES / file)}).classes) == num


def test_windows_are_square_as_the_reference_index_rule_needs():
    # clip/model.py line 275 maps token indices to (row, column) with the row count as the row
    # length, right for square windows only; short side >= crop makes every window crop x crop
    for per_bench in EXPECTED.values():
        for exp in per_bench.values():
            assert exp["short"] >= exp["crop"]


def test_name_files_match_the_reference_lists():
    voc21 = Vocabulary.create({"file": str(CLASSES / "voc21.txt")})
    assert list(voc21.classes[0]) == BACKGROUND and voc21.classes[20] == TV
    obj = Vocabulary.create({"file": str(CLASSES / "object.txt")})
    assert list(obj.classes[0]) == BACKGROUND
    assert obj.classes[1] == PERSON and obj.classes[80] == ("toothbrush",)
    voc20 = Vocabulary.create({"file": str(CLASSES / "voc20.txt")})
    assert voc20.classes == voc21.classes[1:]
    pc60 = Vocabulary.create({"file": str(CLASSES / "pc60.txt")})
    pc59 = Vocabulary.create({"file": str(CLASSES / "pc59.txt")})
    assert pc60.classes[0] == ("background",) and pc60.classes[1:] == pc59.classes


def test_every_suite_benchmark_has_a_preset():
    """``ovseg eval --suite ovss8 --preset scclip-<arch>`` finds ``scclip-<arch>-<benchmark>``."""
    for arch in ARCHS:
        for benchmark in get_suite("ovss8"):
            assert _cfg(f"scclip-{arch}-{benchmark.key}")["benchmark"] == benchmark.key


def test_preset_builds_with_a_tiny_model(tiny_model_names):
    tiny = {
        "model_name": tiny_model_names["vit_deep"],
        "pretrained": None,
        "templates": "photo",
        "pre_adjust_idx": 3,
        "post_adjust_idx": 1,
        "multi_start_idx": 1,
        "multi_end_idx": 4,
    }
    seg = ovseg.create_pipeline(
        "scclip-vitb16-voc21",
        backbone=tiny,
        inference={"crop_size": 48, "stride": 24, "short_side": 48},
    )
    result = seg(torch.rand(1, 3, 48, 64), ["background", "cat", "dog"])
    assert result.sem_seg.shape == (48, 64)


def test_suite_runs_the_scclip_presets(tmp_path, one_torch_thread):
    """``ovseg eval --suite ovss8 --preset scclip-vitb16`` on the one dataset present (ADE)."""
    configs = tmp_path / "model_configs"
    configs.mkdir()
    deep = "ovseg-test-vit-deep"
    (configs / f"{deep}.json").write_text(json.dumps(TINY_CONFIGS[deep]))
    write_ade(tmp_path / "data", num=1)
    overrides = [
        f"custom_model_configs={configs}",
        f"pipeline.backbone.model_name={deep}",
        "pipeline.backbone.pretrained=null",
        "pipeline.backbone.templates=photo",
        "pipeline.backbone.pre_adjust_idx=3",
        "pipeline.backbone.post_adjust_idx=1",
        "pipeline.backbone.multi_start_idx=1",
        "pipeline.backbone.multi_end_idx=4",
        "pipeline.inference.short_side=64",
        "pipeline.inference.crop_size=64",
        "pipeline.inference.stride=32",
        "evaluation.progress=false",
    ]
    work = tmp_path / "work"
    args = ["eval", "--suite", "ovss8", "--preset", "scclip-vitb16"]
    code = main([*args, "--data-root", str(tmp_path / "data"), "--work-dir", str(work), *overrides])
    assert code == 0
    document = json.loads((work / "ovss8.json").read_text())
    assert set(document["benchmarks"]) == {"ade"}
    assert document["benchmarks"]["ade"]["preset"] == "scclip-vitb16-ade"
    results = json.loads((work / "ade" / "results.json").read_text())
    assert results["num_images"] == 1 and results["num_classes"] == 150
