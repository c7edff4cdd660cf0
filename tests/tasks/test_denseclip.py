"""The DenseCLIP training task: losses, parameter groups, class exclusion, training, recipes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from ovseg.config import load_config, to_container
from ovseg.data.synthetic_vocab import CLASS_NAMES, UNSEEN_CLASSES
from ovseg.engine import train
from ovseg.errors import CheckpointError, VocabularyError, WeightsNotFoundError
from ovseg.models.denseclip_export import build_from_export
from ovseg.registry import TASKS
from ovseg.tasks.denseclip import DenseCLIPTask
from ovseg.weights import load_safetensors_metadata

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[2]
SMALL = {
    "decoder": {"width": 16, "heads": 2, "layers": 1},
    "neck_args": {"fpn_channels": 16, "channels": 16},
}
NAMES = ["red circle", "blue star", "grass", "sky"]


def _task(tiny_model_names, model_extra=None, **kwargs):
    torch.manual_seed(0)
    model = {"model_name": tiny_model_names["vit"], **SMALL, **(model_extra or {})}
    return DenseCLIPTask(model, list(CLASS_NAMES), crop_size=32, **kwargs)


def test_param_groups_follow_the_reference_paramwise_rule(tiny_model_names):
    task = _task(tiny_model_names)
    names = {id(p): n for n, p in task.named_parameters()}
    groups = task.param_groups(1e-4, 1e-4)
    seen = [names[id(p)] for g in groups for p in g["params"]]
    trainable = [n for n, p in task.named_parameters() if p.requires_grad]
    assert sorted(seen) == sorted(trainable) and len(seen) == len(set(seen))
    assert not any("text_encoder" in n for n in seen)
    by_name = {names[id(p)]: g for g in groups for p in g["params"]}
    backbone = by_name["segmentor.backbone.visual.conv1.weight"]
    assert backbone["lr_mult"] == 0.1 and backbone["weight_decay"] == 1e-4
    norm = by_name["segmentor.context_decoder.decoder.0.norm1.weight"]
    assert norm["lr_mult"] == 1.0 and norm["weight_decay"] == 0.0
    for name in ("segmentor.prompt.contexts", "segmentor.gamma"):
        assert by_name[name]["lr_mult"] == 1.0 and by_name[name]["weight_decay"] == 1e-4
    # the longest matching key wins, as in mmcv: a backbone norm keeps the backbone rule
    assert by_name["segmentor.backbone.visual.ln_pre.weight"]["lr_mult"] == 0.1


def test_task_loss_is_decode_ce_plus_weighted_score_ce(tiny_model_names):
    task = _task(tiny_model_names).eval()
    images = torch.randn(2, 3, 32, 32)
    labels = torch.randint(0, len(CLASS_NAMES) - 8, (2, 32, 32))
    labels[:, :4] = 255
    out = task({"image": images, "label": labels})
    with torch.no_grad():
        seg = task.segmentor(images, task.segmentor.encode_text(task.train_tokens))
        up = F.interpolate(seg.logits, size=(32, 32), mode="bilinear", align_corners=False)
        decode = F.cross_entropy(up, labels, ignore_index=255, reduction="sum") / labels.numel()
        up = F.interpolate(seg.score_map / 0.07, size=(32, 32), mode="bilinear")
        aux = 0.4 * F.cross_entropy(up, labels, ignore_index=255, reduction="sum") / labels.numel()
    assert out["loss_decode"].item() == pytest.approx(decode.item(), rel=1e-5)
    assert out["loss_aux"].item() == pytest.approx(aux.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx((decode + aux).item(), rel=1e-5)
    assert 0.0 <= out["acc"].item() <= 1.0


def test_excluded_classes_are_not_prompted_and_their_pixels_ignored(tiny_model_names, tmp_path):
    (tmp_path / "ovseg_split.json").write_text(json.dumps({"unseen": list(UNSEEN_CLASSES)}))
    task = _task(tiny_model_names, split_file=tmp_path, train_transforms=[])
    assert task.excluded == list(UNSEEN_CLASSES) and len(task.train_names) == 60
    assert task.train_tokens.shape[0] == 60 and task.eval_tokens.shape[0] == 68
    unseen_id = CLASS_NAMES.index(UNSEEN_CLASSES[0])
    seen_id = CLASS_NAMES.index("grass")
    label = torch.full((32, 32), seen_id).numpy()
    label[:, :8] = unseen_id
    sample = {"image": torch.zeros(32, 32, 3, dtype=torch.uint8).numpy(), "label": label}
    out = task.data_transform("train")(sample)
    assert out["image"].shape == (3, 32, 32) and out["label"].shape == (32, 32)
    values = set(out["label"].unique().tolist())
    assert values <= {255, task.train_names.index("grass")} and 255 in values
    assert (out["label"] == 255).sum() == 8 * 32
    val = task.data_transform("val")(sample)
    assert val["image"].dtype == torch.float32 and int(val["label"][0, 0]) == unseen_id
    with pytest.raises(VocabularyError):
        _task(tiny_model_names, exclude_classes=["purple unicorn"])


def test_short_training_run_lowers_the_loss_and_exports(tiny_model_names, tmp_path):
    cfg = {
        "task": {
            "type": "DenseCLIP",
            "model": {"model_name": tiny_model_names["vit"], **SMALL},
            "classes": list(CLASS_NAMES),
            "exclude_classes": list(UNSEEN_CLASSES),
            "crop_size": 32,
            "train_transforms": [
                {"type": "RandomCrop", "crop_size": 32},
                {"type": "RandomFlip", "prob": 0.5},
            ],
            "test": {"short_side": 32, "max_long_side": 64, "crop_size": 32, "stride": 32},
        },
        "data": {
            "train": {
                "type": "TransformedDataset",
                "dataset": {
                    "type": "SyntheticSceneDataset",
                    "num": 4,
                    "image_size": 48,
                    "split": "train",
                },
            },
            "val": {
                "type": "TransformedDataset",
                "dataset": {
                    "type": "SyntheticSceneDataset",
                    "num": 2,
                    "image_size": 32,
                    "split": "val",
                },
            },
            "batch_size": 4,
            "num_workers": 0,
        },
        "optimizer": {"type": "AdamW", "lr": 2e-3, "weight_decay": 1e-4},
        "schedule": {"type": "poly", "power": 0.9, "warmup_iters": 2, "warmup_ratio": 1e-6},
        "train": {"max_iters": 16, "log_interval": 1, "seed": 0, "device": "cpu", "amp": "off"},
        "work_dir": str(tmp_path / "run"),
    }
    result = train(cfg)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if r["mode"] == "train"]
    assert len(losses) == 16
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4
    assert {"mIoU", "mIoU_seen", "mIoU_unseen"} <= set(result["metrics"])
    exported = Path(result["export"])
    meta = load_safetensors_metadata(exported)
    assert meta["architecture"] == "DenseCLIPSegmentor" and len(json.loads(meta["classes"])) == 60
    model = build_from_export(exported)
    trained = TASKS.get("DenseCLIP")  # the task class is registered under its recipe name
    assert trained is DenseCLIPTask
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        logits = model(images, model.encode_names(NAMES)).logits
    assert logits.shape == (1, 4, 8, 8) and torch.isfinite(logits).all()


def _recipe(name):
    return yaml.safe_load((ROOT / "configs" / "denseclip" / name).read_text())


@pytest.mark.parametrize(
    "name, model_name, crop, stride",
    [
        ("denseclip_r50_fpn_ade20k.yaml", "RN50", 512, 341),
        ("denseclip_r101_fpn_ade20k.yaml", "RN101", 512, 341),
        ("denseclip_vitb16_fpn_ade20k.yaml", "ViT-B-16", 640, 426),
    ],
)
def test_ade20k_recipes_carry_the_reference_numbers(name, model_name, crop, stride):
    cfg = _recipe(name)
    task = cfg["task"]
    model = task["model"]
    assert (model["model_name"], model["pretrained"]) == (model_name, "openai")
    assert model["input_resolution"] == crop and model["num_contexts"] == 8
    assert model["decoder"] == {"width": 256, "heads": 4, "layers": 3, "dropout": 0.1}
    assert model["gamma_init"] == 1e-4 and model["neck"] == "SemanticFPN"
    assert model["neck_args"] == {"fpn_channels": 256, "channels": 256, "dropout": 0.1}
    assert (task["tau"], task["aux_weight"], task["crop_size"]) == (0.07, 0.4, crop)
    assert task["classes"] == {"file": "ade.txt"}
    assert task["paramwise"] == {
        "backbone": {"lr_mult": 0.1},
        "text_encoder": {"lr_mult": 0.0},
        "norm": {"decay_mult": 0.0},
    }
    resize, crop_t, flip, photo = task["train_transforms"]
    assert resize == {"type": "RandomResize", "scale": [2048, crop], "ratio_range": [0.5, 2.0]}
    assert crop_t == {"type": "RandomCrop", "crop_size": crop, "cat_max_ratio": 0.75}
    assert flip == {"type": "RandomFlip", "prob": 0.5} and photo == {
        "type": "PhotoMetricDistortion"
    }
    assert task["test"]["mode"] == "slide" and task["test"]["short_side"] == crop
    assert (task["test"]["crop_size"], task["test"]["stride"]) == (crop, stride)
    assert cfg["optimizer"] == {"type": "AdamW", "lr": 1e-4, "weight_decay": 1e-4}
    assert cfg["schedule"]["type"] == "poly" and cfg["schedule"]["power"] == 0.9
    assert (cfg["schedule"]["warmup_iters"], cfg["schedule"]["warmup_ratio"]) == (1500, 1e-6)
    assert cfg["data"]["batch_size"] == 32 and cfg["train"]["max_iters"] == 80000
    if model_name == "ViT-B-16":
        assert model["drop_path_rate"] == 0.1 and model["out_indices"] == [3, 5, 7, 11]
        assert model["score_concat_index"] == 2 and model["cls_pos_includes_class_embedding"]


def test_recipe_and_shapes_configs_build(tiny_model_names, tmp_path):
    (tmp_path / "ovseg_split.json").write_text(json.dumps({"unseen": list(UNSEEN_CLASSES)}))
    cfg = to_container(
        load_config(ROOT / "configs" / "denseclip" / "denseclip_vitb16_fpn_ade20k.yaml")
    )
    model = {**cfg["task"]["model"], "model_name": tiny_model_names["vit"], "pretrained": None}
    model.update(SMALL, input_resolution=32, out_indices=None)
    cfg["task"]["model"] = model
    task = TASKS.build(cfg["task"])
    assert len(task.class_names) == 150 and task.test["stride"] == 426
    assert task.segmentor.backbone.drop_path_rate == 0.1
    shapes = to_container(load_config(ROOT / "configs" / "shapes" / "shapes_tiny_denseclip.yaml"))
    shapes["task"]["split_file"] = str(tmp_path)
    task = TASKS.build(shapes["task"])  # the embedded shapes-tiny CLIP
    assert task.segmentor.config["model_name"] == "ovseg-ViT-Ti-8" and len(task.train_names) == 60
    assert task.segmentor.score_level == 1
    assert shapes["data"]["train"]["dataset"]["root"] == "data/synth"


def test_load_from_starts_training_from_an_export(tiny_model_names, tmp_path):
    source = _task(tiny_model_names)
    with torch.no_grad():
        source.segmentor.gamma.fill_(0.25)
    exported = tmp_path / "first.safetensors"
    source.export(exported)
    task = _task(tiny_model_names, load_from=exported)
    for name, value in source.segmentor.state_dict().items():
        assert torch.equal(task.segmentor.state_dict()[name], value), name
    fresh = _task(tiny_model_names)
    assert not torch.equal(fresh.segmentor.gamma, task.segmentor.gamma)
    # the export holds every weight, so the CLIP checkpoint is not read
    absent = {"checkpoint": tmp_path / "absent_clip.pt"}
    with pytest.raises(WeightsNotFoundError):
        _task(tiny_model_names, model_extra=absent)
    task = _task(tiny_model_names, model_extra=absent, load_from=exported)
    assert torch.equal(task.segmentor.gamma, source.segmentor.gamma)


def test_load_from_refuses_another_architecture(tiny_model_names, tmp_path):
    exported = tmp_path / "first.safetensors"
    _task(tiny_model_names).export(exported)
    model = {"model_name": tiny_model_names["vit"], **SMALL, "num_contexts": 4}
    with pytest.raises(CheckpointError, match="does not fit the DenseCLIP architecture"):
        DenseCLIPTask(model, list(CLASS_NAMES), crop_size=32, load_from=exported)
    with pytest.raises(WeightsNotFoundError):
        _task(tiny_model_names, load_from=tmp_path / "missing.safetensors")


def test_second_stage_config_starts_from_the_first_stage(tmp_path):
    first = to_container(load_config(ROOT / "configs" / "shapes" / "shapes_tiny_denseclip.yaml"))
    second = to_container(
        load_config(ROOT / "configs" / "shapes" / "shapes_tiny_denseclip_ft.yaml")
    )
    assert second["task"]["load_from"] == f"{first['work_dir']}/model_fp16.safetensors"
    assert second["work_dir"] != first["work_dir"]
    assert second["optimizer"]["lr"] < first["optimizer"]["lr"]
    unchanged = {k: v for k, v in second["task"].items() if k != "load_from"}
    assert unchanged == first["task"]
    assert second["data"] == first["data"]
