"""PromptedSAM: batching, per-prompt decoding, SAM's loss, evaluation, export, engine runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ovseg.config import load_config
from ovseg.data.sam_prompts import Prompt, SamPromptDataset
from ovseg.engine import train
from ovseg.errors import ConfigError
from ovseg.models.decoders.sam_build import build_sam
from ovseg.registry import DATASETS, TASKS
from ovseg.tasks.prompted_sam import (
    PromptedSAM,
    decode_per_prompt,
    dice_loss,
    focal_loss,
    mask_iou,
)
from tests.models.decoders.sam_tiny import TINY_SAM, tiny_sam, write_tiny_coco
from tests.tolerance import assert_close_to_scale

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CONFIG = Path(__file__).resolve().parents[2] / "configs" / "sam" / "shapes_tiny_sam.yaml"


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return write_tiny_coco(tmp_path_factory.mktemp("coco"))


@pytest.fixture
def task():
    torch.manual_seed(0)
    return PromptedSAM(TINY_SAM)


def _samples(task, coco, mode="train", count=3, seed=0):
    dataset = SamPromptDataset(
        coco["ann_file"], coco["img_dir"], mode=mode, transform=task.data_transform(mode)
    )
    np.random.seed(seed)
    return [dataset[i] for i in range(count)]


def test_decode_per_prompt_equals_segment_anythings_decoder():
    sam = tiny_sam(seed=3)
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn((2, 32, 8, 8), generator=generator)
    boxes = torch.rand((3, 4), generator=generator) * 60
    sparse, dense = sam.prompt_encoder(points=None, boxes=boxes, masks=None)
    image_pe = sam.prompt_encoder.get_dense_pe()
    with torch.no_grad():
        expected = [
            sam.mask_decoder.predict_masks(embeddings[i : i + 1], image_pe, sparse, dense)
            for i in range(2)
        ]
        # prompts 0-2 on image 0, then the same prompts on image 1, in one call
        rows = torch.tensor([0, 0, 0, 1, 1, 1])
        masks, iou = decode_per_prompt(
            sam.mask_decoder,
            embeddings[rows],
            image_pe,
            sparse.repeat(2, 1, 1),
            dense.repeat(2, 1, 1, 1),
        )
    assert masks.shape == (6, 4, 32, 32) and iou.shape == (6, 4)
    # one batched call vs one call per image: float32 summed in another order. The mask logits
    # (|logit| up to ~50, sums of cancelling terms) err in proportion to their scale: measured
    # <= 2.2e-7 of max|logit| (MKL AVX-512 / AVX2 / SSE), ~10x more on AMD; bound 1e-4 of it.
    # IoU predictions are O(1): 1e-5 absolute is ~100 ulps.
    assert_close_to_scale(masks, torch.cat([e[0] for e in expected]), 1e-4, "mask logits")
    torch.testing.assert_close(iou, torch.cat([e[1] for e in expected]), atol=1e-5, rtol=0)


def test_collate_normalises_like_sam_and_groups_prompts(task, coco):
    samples = _samples(task, coco, count=3)
    samples[0]["prompts"] = [
        Prompt(0, box=np.array([1.0, 2.0, 20.0, 30.0])),
        Prompt(0, points=np.array([[5.0, 6.0]]), labels=np.array([1])),
        Prompt(0, points=np.array([[5.0, 6.0], [7.0, 8.0]]), labels=np.array([1, 0])),
    ]
    batch = task.collate(samples)
    h, w = samples[0]["input_size"]
    expected = task.model.preprocess(samples[0]["image"][None].float())
    torch.testing.assert_close(batch["images"][:1], expected)
    assert batch["valid"][0, 0, :h, :w].all() and not batch["valid"][0, 0, h:].any()
    assert batch["masks"].shape[0] == sum(len(s["masks"]) for s in samples)
    keys = [
        (g["kind"], g["multimask"], None if g["coords"] is None else g["coords"].shape[1])
        for g in batch["groups"]
    ]
    assert len(keys) == len(set(keys))  # one group per sparse-token layout
    for group in batch["groups"]:
        for image, instance in zip(group["image"], group["instance"], strict=True):
            offset = sum(len(s["masks"]) for s in samples[: int(image)])
            assert 0 <= int(instance) - offset < len(samples[int(image)]["masks"])
        if group["kind"] == "box":
            assert group["boxes"].shape[1] == 4 and group["coords"] is None
        else:
            assert group["multimask"] == (group["coords"].shape[1] == 1)
            assert group["labels"].shape == group["coords"].shape[:2]


def _sigmoid_focal(logit, target, alpha=0.25, gamma=2.0):
    p = torch.sigmoid(logit)
    p_t = p * target + (1 - p) * (1 - target)
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    return -alpha_t * (1 - p_t) ** gamma * torch.log(p_t)


def test_loss_terms_equal_their_definitions():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn((2, 3, 6, 5), generator=generator, dtype=torch.float64) * 3
    targets = (torch.rand((2, 1, 6, 5), generator=generator) > 0.5).double()
    valid = torch.ones((2, 1, 6, 5), dtype=torch.float64)
    valid[1, :, 4:] = 0  # padding rows of the second image
    for t in range(2):
        for k in range(3):
            keep = valid[t, 0].bool()
            logit, target = logits[t, k][keep], targets[t, 0][keep]
            focal = _sigmoid_focal(logit, target).mean()
            p = torch.sigmoid(logit)
            dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
            pred = logit > 0
            iou = (pred & target.bool()).sum() / (pred | target.bool()).sum()
            assert focal_loss(logits, targets, valid)[t, k].item() == pytest.approx(focal.item())
            assert dice_loss(logits, targets, valid)[t, k].item() == pytest.approx(dice.item())
            assert mask_iou(logits, targets, valid)[t, k].item() == pytest.approx(iou.item())
    empty = torch.zeros((1, 1, 2, 2))
    assert mask_iou(empty - 1, empty, empty + 1).item() == 1.0  # nothing predicted, nothing there


@pytest.mark.parametrize("supervise_all_iou", [True, False])
def test_forward_backprops_the_best_of_three_and_the_iou_head(
    task, coco, monkeypatch, supervise_all_iou
):
    task.supervise_all_iou = supervise_all_iou
    samples = _samples(task, coco, count=3, seed=4)
    samples[1]["prompts"].append(Prompt(0, points=np.array([[20.0, 21.0]]), labels=np.ones(1)))
    samples[2]["prompts"].append(Prompt(0, box=np.array([3.0, 4.0, 30.0, 25.0])))
    batch = task.collate(samples)
    outputs = task.predict_groups(batch)
    monkeypatch.setattr(task, "predict_groups", lambda _batch: outputs)
    result = task(batch)
    terms = []
    for group, (logits, iou_pred) in zip(batch["groups"], outputs, strict=True):
        for row in range(len(group["image"])):
            target = batch["masks"][group["instance"][row]][None].float()
            valid = batch["valid"][group["image"][row]].float()
            candidates = []
            for k in range(logits.shape[1]):
                logit = logits[row, k][valid[0].bool()]
                truth = target[0][valid[0].bool()]
                focal = _sigmoid_focal(logit, truth).mean()
                p = torch.sigmoid(logit)
                dice = 1 - (2 * (p * truth).sum() + 1) / (p.sum() + truth.sum() + 1)
                pred = logit > 0
                union = (pred | truth.bool()).sum()
                iou = (pred & truth.bool()).sum() / union if union else torch.tensor(1.0)
                candidates.append((20 * focal + dice, iou))
            best = min(range(len(candidates)), key=lambda k: candidates[k][0].item())
            squared = [(iou_pred[row, k] - candidates[k][1]) ** 2 for k in range(len(candidates))]
            mse = torch.stack(squared).mean() if supervise_all_iou else squared[best]
            terms.append(candidates[best][0] + mse)
    assert any(g["multimask"] for g in batch["groups"])  # the best-of-3 path is exercised
    assert result["loss"].item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-4)


def test_gradients_reach_all_three_parts(task, coco):
    batch = task.collate(_samples(task, coco, count=4, seed=2))
    out = task(batch)
    assert set(out) == {"loss", "focal", "dice", "iou_mse", "mask_iou"}
    out["loss"].backward()
    for name in (
        "image_encoder.patch_embed.proj.weight",
        "image_encoder.blocks.0.attn.rel_pos_h",
        "prompt_encoder.point_embeddings.1.weight",
        "mask_decoder.iou_prediction_head.layers.0.weight",
        "mask_decoder.output_hypernetworks_mlps.0.layers.0.weight",
    ):
        grad = task.model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_param_groups_and_freeze(task):
    groups = task.param_groups(1e-3, 0.1)
    names = {id(p): n for n, p in task.model.named_parameters()}
    decayed = {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    plain = {names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert decayed | plain == set(names.values()) and not decayed & plain
    assert "image_encoder.blocks.0.attn.qkv.weight" in decayed
    for name in (
        "image_encoder.pos_embed",
        "image_encoder.blocks.0.attn.rel_pos_w",
        "mask_decoder.iou_token.weight",
        "prompt_encoder.not_a_point_embed.weight",
        "image_encoder.blocks.0.norm1.weight",
    ):
        assert name in plain, name
    frozen = PromptedSAM(TINY_SAM, freeze=["image_encoder."])
    assert not any(p.requires_grad for p in frozen.model.image_encoder.parameters())
    assert all(p.requires_grad for p in frozen.model.mask_decoder.parameters())
    with pytest.raises(ConfigError, match="matches no parameter"):
        PromptedSAM(TINY_SAM, freeze=["encoder."])


def test_evaluate_measures_box_and_point_iou(task, coco, monkeypatch):
    batch = task.collate(_samples(task, coco, mode="eval", count=5))
    task.eval()
    with torch.no_grad():
        metrics = task.evaluate([batch])
    assert set(metrics) == {"miou_box", "miou_point", "miou_point_oracle"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    assert metrics["miou_point"] <= metrics["miou_point_oracle"]

    def perfect(batch):  # ground-truth logits; for points the 2nd of 3 is right and scored best
        outputs = []
        for group in batch["groups"]:
            truth = batch["masks"][group["instance"]][:, None].float() * 20 - 10
            if group["multimask"]:
                logits = torch.cat([-truth, truth, -truth], dim=1)
                scores = torch.tensor([[0.1, 0.9, 0.2]]).expand(len(truth), 3)
            else:
                logits, scores = truth, torch.ones((len(truth), 1))
            outputs.append((logits, scores))
        return outputs

    monkeypatch.setattr(task, "predict_groups", perfect)
    assert task.evaluate([batch]) == {"miou_box": 1.0, "miou_point": 1.0, "miou_point_oracle": 1.0}


def test_export_loads_with_build_sam(task, tmp_path):
    with torch.no_grad():
        task.model.mask_decoder.iou_token.weight.add_(1.0)
    task.export(tmp_path / "sam.safetensors")
    loaded = build_sam(TINY_SAM, checkpoint=tmp_path / "sam.safetensors")
    for key, value in task.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_engine_trains_a_few_iterations_and_exports(coco, tmp_path):
    data = {
        "type": "SamPromptDataset",
        "ann_file": str(coco["ann_file"]),
        "img_dir": str(coco["img_dir"]),
    }
    cfg = {
        "task": {"type": "PromptedSAM", "model_type": TINY_SAM},
        "data": {
            "train": {**data, "negative_prob": 0.5},
            "val": {**data, "mode": "eval"},
            "batch_size": 2,
            "num_workers": 0,
        },
        "optimizer": {"type": "AdamW", "lr": 1e-3, "weight_decay": 0.05},
        "train": {"max_iters": 3, "log_interval": 1, "clip_grad": 1.0},
        "work_dir": str(tmp_path / "run"),
    }
    result = train(cfg)
    assert result["iteration"] == 3
    assert set(result["metrics"]) == {"miou_box", "miou_point", "miou_point_oracle"}
    assert np.isfinite(result["train"]["loss"])
    build_sam(TINY_SAM, checkpoint=result["export"])


def test_shipped_config_builds():
    cfg = load_config(str(CONFIG))
    assert cfg.task.type == "PromptedSAM" and cfg.task.model_type == "ovseg-sam-tiny"
    assert cfg.data.train.type == cfg.data.val.type == "SamPromptDataset"
    assert cfg.data.val.mode == "eval"
    task = TASKS.build(dict(cfg.task))
    assert task.img_size == 128 and "SamPromptDataset" in DATASETS
    assert sum(p.numel() for p in task.parameters()) < 2_000_000
