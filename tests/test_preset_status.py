"""``ovseg list``: presets grouped by task, each ready or naming the weights to fetch; no model
is built and no weight file read."""

from __future__ import annotations

import open_clip
import pytest
import torch
import yaml

import ovseg.weights
from ovseg.cli import main
from ovseg.preset_status import preset_status

REPO = "timm/vit_base_patch16_clip_224.openai"


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def no_model_built(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("ovseg list built a model or read weights")

    monkeypatch.setattr(open_clip, "create_model", refuse)
    monkeypatch.setattr(ovseg.weights, "load_state_dict", refuse)
    monkeypatch.setattr(torch, "load", refuse)


def test_list_groups_presets_by_task_and_marks_what_runs(empty_hf_cache, no_model_built, capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    sections = {}
    current = None
    for line in out.splitlines():
        if line.endswith(":") and not line.startswith(" "):
            current = line[:-1]
            sections[current] = {}
        elif current and line.startswith("  "):
            name, _, state = line.strip().partition(" ")
            sections[current][name] = state.strip()
    assert list(sections) == [
        "semantic",
        "semantic_painted",
        "referring",
        "referring_sasp",
        "referring_grounded",
        "instance",
        "instance_grounded",
        "instance_sam",
        "detection",
        "reasoning",
        "vocab-free",
    ]
    for task in set(sections) - {"detection", "reasoning"}:
        assert sections[task]["shapes-tiny"].startswith("ready (embedded")
    assert sections["detection"]["owlv2-b16-sam-vith"] == (
        "needs Owlv2Detector google/owlv2-base-patch16-ensemble: "
        "hf download google/owlv2-base-patch16-ensemble"
    )
    assert "SAM vit_h" in sections["instance"]["grounding-dino-t-sam-vith"]
    read_repo = "rui-qian/READ-LLaVA-v1.5-7B-for-ReasonSeg-valset"
    assert sections["reasoning"]["read-llava-7b-reasonseg-val"] == (
        f"needs READ {read_repo}: hf download {read_repo} (or pipelines.reasoning.weights=DIR); "
        "CLIP vision tower openai/clip-vit-large-patch14-336: hf download "
        "openai/clip-vit-large-patch14-336 (or pipelines.reasoning.vision_tower=DIR)"
    )
    assert "read-llava-7b-reasonseg-val" not in sections["semantic"]
    assert sections["detection"]["shapes-tiny"] == "ready (embedded)"
    assert sections["instance_grounded"]["shapes-tiny"] == "ready (embedded)"
    assert sections["instance_sam"]["shapes-tiny"] == "ready (embedded)"
    assert sections["referring_sasp"]["shapes-tiny"] == "ready (embedded)"
    assert sections["vocab-free"]["shapes-tiny"] == "ready (embedded, packaged database)"
    assert sections["semantic"]["shapes-tiny-denseclip"] == "ready (embedded)"
    assert "shapes-tiny-denseclip" not in sections["referring"]
    assert sections["semantic"]["sclip-vitb16-voc21"] == (
        f"needs CLIP ViT-B-16 / openai: hf download {REPO} open_clip_model.safetensors"
    )
    assert sections["semantic"]["denseclip-r50-ade"].startswith(
        "needs DenseCLIP release res50 (denseclip_fpn_res50_512x512_80k.pth): "
        "https://cloud.tsinghua.edu.cn/f/8636d4a95c60418ba63c/?dl=1 -> "
    )
    # real CLIP + SAM presets for every task name what each task lacks
    big = "clipsam-vitl14dc-samh"
    assert sections["semantic"][big] == (
        "needs CLIP ViT-L-14 / datacomp_xl_s13b_b90k: hf download "
        "laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K open_clip_model.safetensors"
    )
    for task in ("referring", "instance"):
        assert (
            "SAM vit_h / sa1b: https://dl.fbaipublicfiles.com/segment_anything/"
            "sam_vit_h_4b8939.pth" in sections[task][big]
        )
    assert (
        f"`ovseg db build --texts CAPTIONS --preset {big} --out "
        "~/.cache/ovseg/databases/pmd-vitl14-datacomp`" in sections["vocab-free"][big]
    )


def test_weights_in_the_hf_cache_make_a_preset_ready(empty_hf_cache):
    assert not preset_status("sclip-vitb16-voc21").ready("semantic")
    repo = empty_hf_cache / f"models--{REPO.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "open_clip_model.safetensors").write_bytes(b"x")
    status = preset_status("sclip-vitb16-voc21")
    assert status.ready("semantic")
    assert [w.where for w in status.tasks["semantic"]] == ["Hugging Face cache"]


def test_read_folders_in_the_hf_cache_make_a_reasoning_preset_ready(empty_hf_cache):
    name = "read-llava-13b-reasonseg-test"
    assert not preset_status(name).ready("reasoning")
    for repo in (
        "rui-qian/READ-LLaVA-v1.5-13B-for-ReasonSeg-testset",
        "openai/clip-vit-large-patch14-336",
    ):
        folder = empty_hf_cache / f"models--{repo.replace('/', '--')}"
        (folder / "refs").mkdir(parents=True)
        (folder / "refs" / "main").write_text("abc123")
        (folder / "snapshots" / "abc123").mkdir(parents=True)
        (folder / "snapshots" / "abc123" / "config.json").write_text("{}")
    status = preset_status(name)
    assert status.ready("reasoning")
    assert [w.where for w in status.tasks["reasoning"]] == ["Hugging Face cache"] * 2


def test_released_denseclip_checkpoint_in_torch_hub_makes_the_preset_ready(
    tmp_path, monkeypatch, no_model_built
):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert not preset_status("denseclip-vitb16-ade").ready("semantic")
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / "denseclip_fpn_vit-b_640x640_80k.pth").write_bytes(b"x")
    status = preset_status("denseclip-vitb16-ade")
    assert status.ready("semantic")
    assert [w.where for w in status.tasks["semantic"]] == ["torch hub cache"]


def test_sam_and_local_checkpoints(tmp_path, monkeypatch, no_model_built):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    clip_file = tmp_path / "clip.safetensors"
    clip_file.write_bytes(b"x")
    backbone = {"type": "ClipBackbone", "model_name": "ViT-B-16", "checkpoint": str(clip_file)}
    config = {
        "pipeline": {"type": "SemanticSegmenter", "backbone": backbone},
        "pipelines": {
            "referring": {
                "type": "ReferringSegmenter",
                "backbone": "${pipeline.backbone}",
                "decoder": {"type": "SamDecoder", "model_type": "vit_b"},
            }
        },
    }
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(config))
    status = preset_status(str(path))
    assert status.ready("semantic") and not status.ready("referring")
    (missing,) = status.missing("referring")
    assert missing.what == "SAM vit_b / sa1b" and "sam_vit_b_01ec64.pth" in missing.fetch
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / "sam_vit_b_01ec64.pth").write_bytes(b"x")
    assert preset_status(str(path)).ready("referring")
    clip_file.unlink()
    assert preset_status(str(path)).missing("semantic")[0].fetch == f"the file {clip_file}"


def test_detector_weights_in_a_folder_or_the_hf_cache(empty_hf_cache, tmp_path, no_model_built):
    assert not preset_status("grounding-dino-t-sam-vith").ready("detection")
    repo = empty_hf_cache / "models--IDEA-Research--grounding-dino-tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "model.safetensors").write_bytes(b"x")
    status = preset_status("grounding-dino-t-sam-vith")
    assert status.ready("detection")
    assert [w.where for w in status.tasks["detection"]] == ["Hugging Face cache"]
    folder = tmp_path / "owl"
    folder.mkdir()
    config = {
        "pipelines": {
            "detection": {
                "type": "DetectionPipeline",
                "detector": {"type": "owlv2", "model": str(folder)},
            }
        }
    }
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(config))
    assert preset_status(str(path)).tasks["detection"][0].where == "local folder"


def test_mdetr_checkpoint_and_tokenizer(empty_hf_cache, tmp_path, monkeypatch, no_model_built):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    status = preset_status("mdetr-r101-refcocoplus-sam-vith")
    missing = {w.what: w.fetch for w in status.missing("detection")}
    assert set(missing) == {"MDETR mdetr_resnet101_refcocoplus", "MDETR tokenizer roberta-base"}
    assert "refcoco%2B_resnet101_checkpoint.pth" in missing["MDETR mdetr_resnet101_refcocoplus"]
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / "refcoco%2B_resnet101_checkpoint.pth").write_bytes(b"x")
    repo = empty_hf_cache / "models--FacebookAI--roberta-base"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "merges.txt").write_text("#version: 0.2\n")
    status = preset_status("mdetr-r101-refcocoplus-sam-vith")
    assert status.ready("detection")
    assert [w.where for w in status.tasks["detection"]] == ["torch hub cache", "Hugging Face cache"]
