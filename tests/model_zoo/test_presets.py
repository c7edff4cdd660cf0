"""The packaged presets: well-formed, complete, and carrying the reference settings."""

from pathlib import Path

import pytest
import yaml

import ovseg.model_zoo

ZOO = Path(ovseg.model_zoo.__file__).resolve().parent
PRESETS = ZOO / "presets"
CLASSES = ZOO / "classes"

METHODS = ("maskclip", "sclip", "clearclip", "naclip")
BENCHMARK_CLASSES = {
    "voc21": 21, "pc60": 60, "object": 81, "voc20": 20,
    "pc59": 59, "stuff": 171, "city": 19, "ade": 150,
}  # fmt: skip
WITH_BACKGROUND = {"voc21", "pc60", "object"}

TOP_KEYS = {"pipeline", "vocabulary", "benchmark"}
PIPELINE_KEYS = {"type", "backbone", "logit_scale", "inference", "postprocess"}
BACKBONE_KEYS = {"type", "model_name", "pretrained", "dense_mode", "templates"}
OPTIONAL_BACKBONE_KEYS = {"naclip_std", "keep_residual", "keep_ffn"}
INFERENCE_KEYS = {"short_side", "max_long_side", "mode", "crop_size", "stride", "batch_size"}
POSTPROCESS_KEYS = {"prob_threshold", "area_threshold", "background_index", "pamr"}

# (logit_scale, short_side, mode, crop, stride, prob_thd, area_thd, pamr) per method x benchmark,
# read from the reference repositories' configs/cfg_*.py and segmentor defaults.
_S = dict(scale=40.0, short=336, mode="slide", crop=224, stride=112, prob=0.0, area=0.0, pamr=None)
_C = dict(scale=50.0, short=448, mode="slide", crop=448, stride=224, prob=0.0, area=0.0, pamr=None)
_N = dict(_S, pamr={"num_iter": 10, "dilations": [8, 16]})
EXPECTED = {
    "sclip": {
        "voc21": dict(_S, scale=65.0, prob=0.1, area=0.1),
        "pc60": dict(_S, scale=50.0, prob=0.1),
        "object": dict(_S, scale=50.0, prob=0.1),
        "voc20": _S, "pc59": _S, "ade": _S,
        "stuff": dict(_S, short=448),
        "city": dict(_S, short=560),
    },
    "clearclip": {
        "voc21": dict(_C, prob=0.5), "pc60": dict(_C, prob=0.15), "object": dict(_C, prob=0.4),
        "voc20": _C, "pc59": _C, "stuff": _C, "ade": _C,
        "city": dict(_C, crop=224, stride=224),
    },
    "naclip": {
        "voc21": dict(_N, prob=0.1, mode="whole"), "pc60": dict(_N, prob=0.1),
        "object": dict(_N, prob=0.1), "voc20": dict(_N, mode="whole"),
        "pc59": _N, "stuff": _N, "ade": _N, "city": dict(_N, short=560),
    },
}  # fmt: skip
EXPECTED["maskclip"] = EXPECTED["clearclip"]


def _load(path: Path) -> dict:
    with path.open() as f:
        data = yaml.safe_load(f)
    assert isinstance(data, dict), f"{path.name} is not a mapping"
    return data


def _merge(base: dict, child: dict) -> dict:
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _resolve(path: Path) -> dict:
    data = _load(path)
    base_name = data.pop("_base_", None)
    if base_name is None:
        return data
    return _merge(_resolve(path.parent / base_name), data)


def _class_lines(name: str) -> list[str]:
    path = Path(name) if Path(name).is_absolute() else CLASSES / name
    lines = [line.strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line]


EMBEDDED_PRESETS = {"shapes-tiny", "shapes-tiny-denseclip"}  # tested in tests/model_zoo
# trained-head presets (their weights come from a training run), tested in
# tests/pipelines/test_denseclip.py
TRAINED_PRESETS = {p.stem for p in PRESETS.glob("denseclip-*.yaml")}
# ProxyCLIP presets (CLIP plus a proxy model) are tested in test_proxyclip_presets.py
PROXY_PRESETS = {p.stem for p in PRESETS.glob("proxyclip-*.yaml")}
# SC-CLIP presets (their own backbone type) are tested in test_scclip_presets.py
SCCLIP_PRESETS = {p.stem for p in PRESETS.glob("scclip-*.yaml")}
# detector + SAM presets (no semantic pipeline) are tested in test_detection_presets.py
DETECTION_PRESETS = {"owlv2-b16-sam-vith", "grounding-dino-t-sam-vith"}
DETECTION_PRESETS |= {p.stem for p in PRESETS.glob("mdetr-*.yaml")}
# READ reasoning presets (a released multimodal model) are tested in tests/pipelines/test_reasoning.py
READ_PRESETS = {p.stem for p in PRESETS.glob("read-*.yaml")}
# CLIP + SAM presets for every task are tested in test_clipsam_presets.py
CLIPSAM_PRESETS = {p.stem for p in PRESETS.glob("clipsam-*.yaml")}
# SAM 2.1 + CLIP presets (referring / instance / video) are tested in test_sam2_presets.py
SAM2_PRESETS = {p.stem for p in PRESETS.glob("sam2.1-*.yaml")}
OWN_TESTS = SAM2_PRESETS | SCCLIP_PRESETS | DETECTION_PRESETS | READ_PRESETS | CLIPSAM_PRESETS
ALL_PRESETS = sorted(
    p
    for p in PRESETS.glob("*.yaml")
    if p.stem not in EMBEDDED_PRESETS | TRAINED_PRESETS | PROXY_PRESETS | OWN_TESTS
)


def test_every_method_and_benchmark_has_a_preset():
    names = {p.stem for p in ALL_PRESETS}
    assert all((PRESETS / f"{name}.yaml").is_file() for name in EMBEDDED_PRESETS)
    expected = {f"{m}-vitb16" for m in METHODS}
    expected |= {f"{m}-vitb16-{b}" for m in METHODS for b in BENCHMARK_CLASSES}
    assert names == expected


@pytest.mark.parametrize("path", ALL_PRESETS, ids=lambda p: p.stem)
def test_preset_parses_and_has_the_schema(path):
    raw = _load(path)
    if "_base_" in raw:
        assert (path.parent / raw["_base_"]).is_file(), f"missing base {raw['_base_']}"
    assert set(raw) - {"_base_"} <= TOP_KEYS
    cfg = _resolve(path)
    assert set(cfg) == TOP_KEYS
    pipe = cfg["pipeline"]
    assert set(pipe) == PIPELINE_KEYS
    assert pipe["type"] == "SemanticSegmenter"
    backbone = pipe["backbone"]
    assert BACKBONE_KEYS <= set(backbone) <= BACKBONE_KEYS | OPTIONAL_BACKBONE_KEYS
    assert backbone["type"] == "ClipBackbone"
    assert (backbone["model_name"], backbone["pretrained"]) == ("ViT-B-16", "openai")
    assert backbone["dense_mode"] == path.stem.split("-")[0]
    assert backbone["templates"] == "imagenet80"
    assert set(pipe["inference"]) == INFERENCE_KEYS
    assert pipe["inference"]["mode"] in {"slide", "whole"}
    assert set(pipe["postprocess"]) == POSTPROCESS_KEYS
    post = pipe["postprocess"]
    assert 0.0 <= post["prob_threshold"] <= 1.0 and 0.0 <= post["area_threshold"] <= 1.0
    if post["prob_threshold"] > 0 or post["area_threshold"] > 0:
        assert post["background_index"] is not None


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bench", sorted(BENCHMARK_CLASSES))
def test_benchmark_preset_vocabulary_and_settings(method, bench):
    path = PRESETS / f"{method}-vitb16-{bench}.yaml"
    assert _load(path)["_base_"] == f"{method}-vitb16.yaml"
    cfg = _resolve(path)
    assert cfg["benchmark"] == bench
    vocab_file = cfg["vocabulary"]["file"]
    # ClearCLIP's repository (which also runs MaskCLIP) names VOC/Object classes without synonyms
    plain = method in {"clearclip", "maskclip"} and bench in {"voc21", "voc20", "object"}
    assert vocab_file == (f"{bench}_plain.txt" if plain else f"{bench}.txt")
    assert (CLASSES / vocab_file).is_file()
    lines = _class_lines(vocab_file)
    assert len(lines) == BENCHMARK_CLASSES[bench]

    post = cfg["pipeline"]["postprocess"]
    if bench in WITH_BACKGROUND:
        assert post["background_index"] == 0
        assert "background" in lines[0] or "sky" in lines[0]
    else:
        assert post["background_index"] is None

    exp = EXPECTED[method][bench]
    inf = cfg["pipeline"]["inference"]
    assert cfg["pipeline"]["logit_scale"] == exp["scale"]
    assert inf["short_side"] == exp["short"] and inf["max_long_side"] == 2048
    assert inf["mode"] == exp["mode"]
    if exp["mode"] == "slide":
        assert (inf["crop_size"], inf["stride"]) == (exp["crop"], exp["stride"])
    assert post["prob_threshold"] == exp["prob"]
    assert post["area_threshold"] == exp["area"]
    assert post["pamr"] == exp["pamr"]
    if method == "naclip":
        assert cfg["pipeline"]["backbone"]["naclip_std"] == 5.0


@pytest.mark.parametrize(
    "name, count",
    [*BENCHMARK_CLASSES.items(), ("voc21_plain", 21), ("voc20_plain", 20), ("object_plain", 81)],
)
def test_class_files(name, count):
    lines = _class_lines(f"{name}.txt" if not name.endswith(".txt") else name)
    assert len(lines) == count
    for line in lines:
        names = [n.strip() for n in line.split(",")]
        assert all(names), f"empty synonym in {line!r}"


def test_synonym_lists_match_the_reference_vocabularies():
    voc21 = _class_lines("voc21.txt")
    # the background line shows "background" and queries exactly the reference's 26 stuff words
    assert voc21[0].startswith("background: ")
    assert voc21[0].removeprefix("background: ").split(", ")[:3] == ["sky", "wall", "tree"]
    assert len(voc21[0].split(", ")) == 26
    assert voc21[15].startswith("person, person in shirt")
    assert voc21[20] == "television monitor, tv monitor, monitor, television, screen"
    assert _class_lines("voc20.txt") == voc21[1:]
    assert _class_lines("object.txt")[0] == voc21[0]
    assert _class_lines("pc60.txt")[0] == "background"
    assert _class_lines("pc60.txt")[1:] == _class_lines("pc59.txt")
    assert _class_lines("voc21_plain.txt")[0] == "background"
    assert _class_lines("voc21_plain.txt")[20] == "tvmonitor"
    assert _class_lines("city.txt")[0] == "road" and _class_lines("ade.txt")[0] == "wall"
