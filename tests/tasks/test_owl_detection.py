"""The OwlDetection task: targets, the frozen text queries, the loss, evaluation, export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from ovseg.data.synthetic_detection import SyntheticDetectionDataset
from ovseg.data.synthetic_vocab import THING_CLASSES, UNSEEN_CLASSES
from ovseg.errors import ConfigError
from ovseg.models.backbones.clip import ClipBackbone
from ovseg.registry import DETECTORS
from ovseg.tasks.owl_detection import OwlDetection
from ovseg.weights import save_state_dict


@pytest.fixture(scope="module")
def task():
    torch.manual_seed(0)
    return OwlDetection(image_size=32, class_init="clip", merge_class_token=False,
                        freeze=["visual.conv1."], hflip=False)  # fmt: skip


@pytest.fixture(scope="module")
def samples():
    return [SyntheticDetectionDataset(4, seed=7, split="train").sample(i) for i in range(4)]


def test_queries_are_the_frozen_clip_text_embeddings(task):
    clip = ClipBackbone("ovseg-ViT-Ti-8", pretrained="shapes", templates="photo")
    assert len(task.train_classes) == 56 and not set(task.train_classes) & set(UNSEEN_CLASSES)
    assert task.eval_classes == list(THING_CLASSES)
    assert torch.allclose(task.train_queries, clip.encode_text(task.train_classes), atol=1e-6)
    assert not any(name.startswith("text") for name, _ in task.named_parameters())
    with pytest.raises(ConfigError, match="held-out"):
        OwlDetection(train_classes=["red circle", UNSEEN_CLASSES[0]])


def test_prep_and_collate_make_normalised_boxes_and_query_indices(task, samples):
    prep = task.data_transform("train")
    batch = task.collate([prep(s) for s in samples])
    assert batch["images"].shape == (4, 3, 32, 32)
    for sample, boxes, classes in zip(samples, batch["boxes"], batch["classes"], strict=True):
        x1, y1, x2, y2 = (sample["boxes"] / 128.0).T
        want = np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=1)
        assert np.allclose(boxes.numpy(), want, atol=1e-6)
        names = [THING_CLASSES[c] for c in sample["class_ids"]]
        assert [task.train_classes[c] for c in classes] == names


def test_hflip_mirrors_boxes():
    flip = OwlDetection(image_size=32, hflip=True).data_transform("train")
    sample = {"image": np.zeros((128, 128, 3), np.uint8), "boxes": np.array([[10, 20, 30, 60.0]]),
              "class_ids": np.array([0])}  # fmt: skip
    centres = {round(float(flip(sample)["boxes"][0, 0]), 4) for _ in range(30)}
    assert centres == {round(20 / 128, 4), round(1 - 20 / 128, 4)}


def test_forward_gives_owl_losses_and_gradients_reach_trained_parts_only(task, samples):
    batch = task.collate([task.data_transform("train")(s) for s in samples])
    out = task(batch)
    assert set(out) == {"loss", "loss_class", "loss_l1", "loss_giou"}
    assert torch.isfinite(out["loss"])
    task.zero_grad()
    out["loss"].backward()
    model = task.model
    assert model.visual.conv1.weight.grad is None
    assert model.visual.transformer.resblocks[-1].mlp.c_fc.weight.grad.abs().sum() > 0
    assert model.class_head.logit_shift.weight.grad.abs().sum() > 0
    assert model.box_head.dense2.weight.grad.abs().sum() > 0


def test_unseen_objects_in_training_are_refused(task):
    sample = SyntheticDetectionDataset(30, seed=0, split="val").sample
    scene = next(sample(i) for i in range(30) if any(
        THING_CLASSES[c] in UNSEEN_CLASSES for c in sample(i)["class_ids"]))  # fmt: skip
    batch = task.collate([task.data_transform("val")(scene)])
    with pytest.raises(ConfigError, match="outside train_classes"):
        task(batch)


def test_param_groups_scale_the_tower(task):
    groups = task.param_groups(1e-3, 0.05)
    tower = {id(p) for n, p in task.model.named_parameters() if n.startswith("visual.")}
    for group in groups:
        in_tower = {id(p) in tower for p in group["params"]}
        assert len(in_tower) == 1
        assert group["lr_mult"] == (task.tower_lr_mult if in_tower.pop() else 1.0)
    count = sum(len(g["params"]) for g in groups)
    assert count == sum(p.requires_grad for p in task.model.parameters())


def test_evaluate_counts_a_perfect_box_as_a_hit(task, samples, monkeypatch):
    batch = task.collate([task.data_transform("val")(s) for s in samples[:1]])
    targets = batch["boxes"][0]

    def oracle(images, queries):
        logits = torch.full((1, 16, len(queries)), -5.0)
        boxes = torch.full((1, 16, 4), 0.05)
        for i, (box, cls) in enumerate(zip(targets, batch["eval_classes"][0], strict=True)):
            boxes[0, i], logits[0, i, cls] = box, 5.0
        return logits, boxes

    monkeypatch.setattr(task.model, "forward", oracle)
    assert task.evaluate([batch]) == {"recall50": 1.0}


def test_export_loads_into_the_detector(task, tmp_path):
    path = tmp_path / "owl.safetensors"
    task.export(path)
    detector = DETECTORS.build({"type": "ClipOwlDetector", "checkpoint": str(path),
                                "image_size": 32, "merge_class_token": False})  # fmt: skip
    for key, value in task.model.state_dict().items():
        assert torch.equal(detector.model.state_dict()[key], value), key
    state = {k: v for k, v in task.model.state_dict().items() if k != "box_head.dense2.bias"}
    save_state_dict(state, tmp_path / "partial.safetensors")
    with pytest.raises(ConfigError, match="does not fit.*box_head.dense2.bias"):
        DETECTORS.build({"type": "ClipOwlDetector", "image_size": 32,
                         "checkpoint": str(tmp_path / "partial.safetensors")})  # fmt: skip


def test_engine_trains_a_few_iterations(tmp_path):
    from ovseg.engine.launch import main_train

    config = {
        "custom_imports": ["ovseg.tasks.owl_detection"],
        "task": {"type": "OwlDetection", "image_size": 32, "freeze": ["visual.transformer."]},
        "data": {"train": {"type": "SyntheticDetectionDataset", "num": 8, "seed": 0,
                           "split": "train", "cache": True},
                 "val": {"type": "SyntheticDetectionDataset", "num": 2, "seed": 1, "split": "val"},
                 "batch_size": 4, "num_workers": 0},
        "optimizer": {"type": "AdamW", "lr": 1e-3},
        "train": {"max_iters": 2, "amp": "bf16", "log_interval": 1, "eval_interval": 2,
                  "device": "cpu"},
        "work_dir": str(tmp_path / "run"),
    }  # fmt: skip
    path = tmp_path / "owl.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main_train([str(path)]) == 0
    lines = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    train = [x for x in lines if x["mode"] == "train"]
    assert len(train) == 2 and all(x["it_s"] > 0 for x in train)
    assert any("recall50" in x for x in lines if x["mode"] == "val")
    assert (tmp_path / "run" / "model_final.safetensors").is_file()
