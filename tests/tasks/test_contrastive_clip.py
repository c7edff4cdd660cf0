"""ContrastiveCLIP: transforms, batches, parameter groups, retrieval metrics, training, export."""

from __future__ import annotations

import json
import math

import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torchvision import transforms as T

from ovseg.engine import train
from ovseg.errors import ConfigError
from ovseg.tasks.contrastive_clip import ContrastiveCLIP
from tests.engine.clip_tiny import MODEL_NAME, make_model_config_dir, tiny_train_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory):
    return make_model_config_dir(tmp_path_factory.mktemp("clip_task"))


@pytest.fixture()
def task(config_dir):
    torch.manual_seed(0)
    return ContrastiveCLIP(MODEL_NAME, model_config_dir=config_dir)


def test_transforms_and_collate(task, config_dir):
    image = Image.new("RGB", (48, 40), (255, 0, 0))
    train_tf, val_tf = task.data_transform("train"), task.data_transform("val")
    assert not any(isinstance(t, T.ColorJitter) for t in train_tf.transforms)  # colour is kept
    crop = next(t for t in train_tf.transforms if isinstance(t, T.RandomResizedCrop))
    assert crop.scale == (0.7, 1.0)
    x = val_tf(image)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    mean, std = torch.tensor(task.mean), torch.tensor(task.std)
    torch.testing.assert_close(x[:, 16, 16], (torch.tensor([1.0, 0.0, 0.0]) - mean) / std)
    assert torch.equal(val_tf(image), x)
    assert train_tf(image).shape == (3, 32, 32)

    batch = task.collate([{"image": x, "caption": "a red square"}, {"image": x, "caption": "dog"}])
    assert batch["image"].shape == (2, 3, 32, 32)
    assert batch["text"].shape == (2, 16) and batch["text"].dtype == torch.long

    jitter = ContrastiveCLIP(MODEL_NAME, model_config_dir=config_dir, color_jitter=0.2)
    assert any(isinstance(t, T.ColorJitter) for t in jitter.data_transform("train").transforms)


def test_forward_loss_and_temperature_clamp(task):
    batch = {"image": torch.randn(4, 3, 32, 32), "text": task.tokenizer(["a", "b", "c", "d"])}
    out = task(batch)
    assert out["loss"].ndim == 0 and out["loss"].requires_grad
    assert out["logit_scale"].item() == pytest.approx(1 / 0.07, rel=1e-5)
    out["loss"].backward()
    assert task.model.logit_scale.grad is not None
    with torch.no_grad():
        task.model.logit_scale.fill_(7.0)
    task.after_train_step()
    assert task.model.logit_scale.item() == pytest.approx(math.log(100))


def test_param_groups_exclude_gains_biases_scale_and_embeddings(task, config_dir):
    names = {id(p): n for n, p in task.model.named_parameters()}
    groups = task.param_groups(1e-3, 0.1)
    decayed = {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    plain = {names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert decayed.isdisjoint(plain) and len(decayed | plain) == len(names)
    for name in ("logit_scale", "ln_final.weight", "visual.conv1.weight"):
        assert (name in decayed) == (name == "visual.conv1.weight")
    assert {"positional_embedding", "token_embedding.weight", "visual.class_embedding"} <= plain
    assert all("bias" not in n for n in decayed)
    assert {
        "text_projection",
        "visual.proj",
        "transformer.resblocks.0.attn.in_proj_weight",
    } <= decayed

    tuned = ContrastiveCLIP(
        MODEL_NAME, model_config_dir=config_dir, decay_embeddings=True, lr_mults={"visual.": 0.1}
    )
    names = {id(p): n for n, p in tuned.model.named_parameters()}
    groups = tuned.param_groups(1e-3, 0.1)
    decayed = {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert "positional_embedding" in decayed and "visual.class_embedding" not in decayed
    slow = {names[id(p)] for g in groups if g["lr_mult"] == 0.1 for p in g["params"]}
    assert slow == {n for n in names.values() if n.startswith("visual.")}


def test_retrieval_metrics(task, monkeypatch):
    # features stand in for images / captions: caption i matches image i except where swapped
    feats = torch.eye(6)
    monkeypatch.setattr(task.model, "encode_image", lambda x, normalize: x)
    monkeypatch.setattr(task.model, "encode_text", lambda x, normalize: x)
    perfect = [{"image": feats[:4], "text": feats[:4]}, {"image": feats[4:], "text": feats[4:]}]
    assert task.evaluate(perfect) == {
        "i2t_top1": 1.0,
        "t2i_top1": 1.0,
        "i2t_top5": 1.0,
        "t2i_top5": 1.0,
    }
    swapped = feats[[1, 0, 2, 3, 4, 5]]
    metrics = task.evaluate([{"image": feats, "text": swapped}])
    assert metrics["i2t_top1"] == pytest.approx(4 / 6) and metrics["t2i_top1"] == pytest.approx(
        4 / 6
    )
    assert metrics["i2t_top5"] == 1.0


def test_export_and_init_checkpoint_round_trip(task, tmp_path):
    task.export(tmp_path / "clip.safetensors")
    exported = load_file(tmp_path / "clip.safetensors")
    fresh = open_clip.create_model(MODEL_NAME, pretrained=None)
    fresh.load_state_dict(exported)  # bare open_clip keys, strict
    torch.manual_seed(1)
    again = ContrastiveCLIP(MODEL_NAME, init_checkpoint=tmp_path / "clip.safetensors")
    for key, value in task.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[key], value)


def test_unknown_architecture_is_a_config_error():
    with pytest.raises(ConfigError, match="open_clip"):
        ContrastiveCLIP("no-such-clip-arch")


def test_training_lowers_the_contrastive_loss(tmp_path):
    cfg = tiny_train_config(tmp_path / "data", tmp_path / "work", val=True,
                            train={"max_iters": 20, "eval_interval": 10})  # fmt: skip
    cfg["schedule"] = {"type": "constant", "warmup_iters": 2}
    cfg["optimizer"]["lr"] = 2e-3
    result = train(cfg)
    records = [
        json.loads(line) for line in (tmp_path / "work" / "log.jsonl").read_text().splitlines()
    ]
    losses = [r["loss"] for r in records if r["mode"] == "train"]
    assert len(losses) == 20
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.75 * first, losses
    vals = [r for r in records if r["mode"] == "val"]
    assert [r["iter"] for r in vals] == [10, 20]
    assert set(result["metrics"]) == {"i2t_top1", "i2t_top5", "t2i_top1", "t2i_top5"}
    assert all(0.0 <= v <= 1.0 for v in result["metrics"].values())
    assert (
        load_file(result["export"]).keys() == open_clip.create_model(MODEL_NAME).state_dict().keys()
    )
