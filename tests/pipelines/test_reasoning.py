from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import yaml

import ovseg
from ovseg.config import resolve_config_path
from ovseg.errors import ConfigError, PromptError, WeightsNotFoundError
from ovseg.models.prompts.sasp import SasPSelector
from ovseg.outputs import write_reasoning_outputs
from ovseg.pipelines.reasoning import ReasoningImage, ReasoningSegmenter
from ovseg.structures import ReasoningResult
from tests.models.multimodal.read_tiny import (
    ANSWER_WITH_MASK,
    script_language_model,
    tiny_read_model,
    write_tiny_release,
)

QUESTION = "What is the largest object ? Please segment it ."


def picture(height: int = 40, width: int = 56, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def scripted():
    model, tok = tiny_read_model(seed=0)
    script_language_model(model, tok, ANSWER_WITH_MASK)
    return model, tok


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_tiny_release(tmp_path_factory.mktemp("read_release"))


def test_answer_masks_scores_and_points(scripted):
    model, tok = scripted
    seg = ReasoningSegmenter(model=copy.deepcopy(model), tokenizer=tok)
    result = seg(picture(), QUESTION)
    assert isinstance(result, ReasoningResult)
    assert result.answer == "Sure [SEG] ." and result.question == QUESTION
    assert result.masks.shape == (1, 40, 56) and result.masks.dtype == bool
    assert result.scores.shape == (1,) and np.isfinite(result.scores).all()
    assert len(result.points) == 1 and len(result.points[0]) > 0
    assert result.meta["stopped_at_eos"] is True
    summary = result.to_dict()
    assert summary["num_masks"] == 1 and summary["masks"][0]["area"] == int(result.masks[0].sum())


def test_set_image_encodes_sam_once_and_overrides_apply(scripted):
    model, tok = scripted
    seg = ReasoningSegmenter(model=copy.deepcopy(model), tokenizer=tok)
    encoded = seg.set_image(picture())
    assert isinstance(encoded, ReasoningImage)
    first = seg.predict(QUESTION)
    assert "sam_embedding" in encoded._cache
    cached = encoded._cache["sam_embedding"]
    second = seg.predict(encoded, QUESTION)
    assert encoded._cache["sam_embedding"] is cached
    assert np.array_equal(first.masks, second.masks)
    short = seg.predict(encoded, QUESTION, max_new_tokens=1)
    assert short.answer == "Sure" and len(short) == 0 and short.masks.shape == (0, 40, 56)
    with pytest.raises(ConfigError):
        seg.predict(encoded, QUESTION, temperature=0.2)
    with pytest.raises(PromptError):
        seg.predict(encoded, "   ")


def test_no_seg_gives_text_only(scripted):
    model, tok = scripted
    model = copy.deepcopy(model)
    script_language_model(model, tok, {":": "no", "no": "</s>"})
    result = ReasoningSegmenter(model=model, tokenizer=tok)(picture(), QUESTION)
    assert result.answer == "no" and len(result) == 0 and result.masks.shape == (0, 40, 56)


def test_unexpected_image_size_is_resized(scripted):
    model, tok = scripted
    seg = ReasoningSegmenter(model=copy.deepcopy(model), tokenizer=tok)
    result = seg(picture(23, 91, seed=4), QUESTION)
    assert result.masks.shape == (1, 23, 91)
    coords = result.points[0].coords
    assert (coords[:, 0] >= 0).all() and (coords[:, 0] <= 91).all()
    assert (coords[:, 1] >= 0).all() and (coords[:, 1] <= 23).all()


def test_long_question_is_cut_with_a_warning(scripted):
    model, tok = scripted
    seg = ReasoningSegmenter(model=copy.deepcopy(model), tokenizer=tok, max_length=48)
    with pytest.warns(UserWarning, match="too long"):
        result = seg(picture(), QUESTION + " the red star and the largest object ?" * 3)
    assert result.answer == "Sure [SEG] ."


def test_selector_config_replaces_the_default(scripted):
    model, tok = scripted
    seg = ReasoningSegmenter(
        model=copy.deepcopy(model),
        tokenizer=tok,
        selector={"type": "SasPSelector", "num_points": 5, "down_sample": 1},
    )
    assert seg.model.selector.num_points == 5
    assert len(seg(picture(), QUESTION).points[0]) == 5


def test_create_pipeline_from_a_release_folder(release):
    seg = ovseg.create_pipeline(str(release["config"]), task="reasoning", device="cpu")
    assert isinstance(seg, ReasoningSegmenter)
    assert seg.meta["task"] == "reasoning"
    result = seg(picture(), QUESTION)
    assert result.answer == "Sure [SEG] ." and len(result) == 1
    with pytest.raises(ConfigError):
        ovseg.create_pipeline(str(release["config"]), ["red star"], task="reasoning")


def test_reasoning_outputs(scripted, tmp_path):
    model, tok = scripted
    image = picture()
    result = ReasoningSegmenter(model=copy.deepcopy(model), tokenizer=tok)(image, QUESTION)
    paths = write_reasoning_outputs(result, image, tmp_path, "scene", source="scene.png")
    assert sorted(p.name for p in paths.values()) == [
        "scene.json",
        "scene_mask_0.png",
        "scene_overlay.png",
    ]
    summary = json.loads(paths["json"].read_text())
    assert summary["answer"] == "Sure [SEG] ." and summary["source"] == "scene.png"
    assert summary["masks"][0]["file"] == "scene_mask_0.png"
    empty = ReasoningResult(QUESTION, "no", np.zeros((0, 40, 56), bool), np.zeros(0))
    paths = write_reasoning_outputs(empty, image, tmp_path / "empty", "scene")
    assert sorted(paths) == ["json", "overlay"]


READ_PRESETS = {
    "read-llava-7b-reasonseg-val": ("rui-qian/READ-LLaVA-v1.5-7B-for-ReasonSeg-valset", "7B"),
    "read-llava-7b-reasonseg-test": ("rui-qian/READ-LLaVA-v1.5-7B-for-ReasonSeg-testset", "7B"),
    "read-llava-13b-reasonseg-test": ("rui-qian/READ-LLaVA-v1.5-13B-for-ReasonSeg-testset", "13B"),
    "read-llava-7b-fprefcoco": ("rui-qian/READ-LLaVA-v1.5-7B-for-fprefcoco", "7B"),
}
# READ's model/READ.py: similarity_map_to_points settings per model size
SASP = {
    "7B": {"num_points": 30, "t_pos": 0.8, "t_neg": 0.2, "down_sample": 2},
    "13B": {"num_points": 60, "t_pos": 0.6, "t_neg": 0.2, "down_sample": 1},
}


@pytest.mark.parametrize("name", sorted(READ_PRESETS))
def test_read_presets(name):
    repo, size = READ_PRESETS[name]
    section = yaml.safe_load(resolve_config_path(name).read_text())["pipelines"]["reasoning"]
    assert section["type"] == "ReasoningSegmenter" and section["hf_repo"] == repo
    assert section["vision_tower_repo"] == "openai/clip-vit-large-patch14-336"
    selector = dict(section["selector"])
    assert selector.pop("type") == "SasPSelector" and selector.pop("compat") == "read"
    assert selector == SASP[size]
    SasPSelector(**selector)


def test_missing_release_names_the_folder_to_download(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError) as info:
        ovseg.create_pipeline("read-llava-7b-reasonseg-val", task="reasoning")
    message = str(info.value)
    assert "hf download rui-qian/READ-LLaVA-v1.5-7B-for-ReasonSeg-valset --local-dir DIR" in message
    assert "pipelines.reasoning.weights=DIR" in message
    assert "https://huggingface.co/rui-qian/READ-LLaVA-v1.5-7B-for-ReasonSeg-valset" in message


def test_missing_vision_tower_names_clip(release, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match="hf download openai/clip-vit-large-patch14-336"):
        ReasoningSegmenter(
            weights=str(release["folder"]), vision_tower_repo="openai/clip-vit-large-patch14-336"
        )


def test_bf16_precision_runs_and_agrees(scripted):
    """READ runs in bf16; SAM's point encoding stays float32 as segment-anything computes it."""
    model, tok = scripted
    image = picture()
    full = ReasoningSegmenter(model=copy.deepcopy(model), tokenizer=tok)(image, QUESTION)
    half = ReasoningSegmenter(model=copy.deepcopy(model), tokenizer=tok, precision="bf16")
    assert next(half.model.mllm.language_model.parameters()).dtype == torch.bfloat16
    result = half(image, QUESTION)
    assert result.answer == full.answer and len(result) == 1
    agree = (result.masks == full.masks).mean()
    assert agree > 0.95  # bf16 keeps 8 bits of mantissa: a few border pixels may flip
    with pytest.raises(ConfigError):
        ReasoningSegmenter(model=copy.deepcopy(model), tokenizer=tok, precision="int8")


def test_folder_with_its_own_tower_needs_no_clip_folder(tmp_path, monkeypatch):
    from tests.models.multimodal.read_tiny import TINY_CLIP, write_read_folder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tok = tiny_read_model(seed=0)
    script_language_model(model, tok, ANSWER_WITH_MASK)
    folder = write_read_folder(
        tmp_path / "read",
        model,
        tok,
        tmp_path / "no_clip",
        include_tower=True,
        extra_config={"vision_config": TINY_CLIP},
    )
    from tests.models.decoders.sam_tiny import TINY_SAM

    seg = ReasoningSegmenter(
        weights=str(folder),
        vision_tower_repo="openai/clip-vit-large-patch14-336",
        sam_architecture=TINY_SAM,
    )
    assert seg(picture(), QUESTION).answer == "Sure [SEG] ."
