"""READTask: trainable parts, sample preparation, both stages, the SAM cache, export, and
engine runs with exact resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ovseg.data.synthetic import SyntheticSceneDataset
from ovseg.data.synthetic_reasoning import SyntheticReasoningDataset
from ovseg.data.world_tokenizer import train_world_tokenizer
from ovseg.engine import train
from ovseg.errors import CheckpointError, ConfigError, DatasetError, WeightsNotFoundError
from ovseg.models.multimodal.constants import IGNORE_INDEX
from ovseg.registry import POINT_SELECTORS
from ovseg.tasks.read import READTask
from ovseg.weights import load_state_dict
from tests.models.decoders.sam_tiny import TINY_SAM

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "read"
TINY_LM = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
           "num_attention_heads": 2, "num_key_value_heads": 2}  # fmt: skip
DATA = {"num": 6, "seed": 0, "split": "train", "image_size": 48, "queries_per_scene": 2}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return str(train_world_tokenizer(tmp_path_factory.mktemp("tok") / "tok", num_scenes=30))


def _settings(tokenizer_dir, **extra):
    return {
        "tokenizer": tokenizer_dir,
        "language_model": TINY_LM,
        "vision_tower": "open_clip:ovseg-ViT-Ti-8",  # random ViT-Ti-8, no weights
        "sam": TINY_SAM,
        "sam_weights": None,
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "max_length": 160,
        "attn_implementation": "eager",
        **extra,
    }


@pytest.fixture(scope="module")
def task(tokenizer_dir):
    torch.manual_seed(0)
    return READTask("reasoning", **_settings(tokenizer_dir))


def _batch(task, count=2, **data):
    dataset = SyntheticReasoningDataset(**{**DATA, **data}, transform=task.data_transform("train"))
    return task.collate([dataset[i] for i in range(count)])


def test_trainable_parts_follow_lisa(task):
    trainable = {n for n, p in task.named_parameters() if p.requires_grad}
    assert any("q_proj.lora_A" in n for n in trainable)
    assert any("v_proj.lora_B" in n for n in trainable)
    layers = {n for n in trainable if "language_model.model.layers." in n}
    assert layers and all("lora_" in n and ("q_proj" in n or "v_proj" in n) for n in layers)
    assert not any("base_layer" in n for n in trainable)
    for part in ("text_hidden_fcs.", "mask_decoder.", "lm_head.", "embed_tokens.", "mm_projector."):
        assert any(part in n for n in trainable), part
    for frozen in ("vision_tower.", "image_encoder.", "prompt_encoder."):
        assert not any(frozen in n for n in trainable), frozen
    with pytest.raises(ConfigError, match="unknown parts"):
        READTask("reasoning", **_settings(task_tokenizer(task), trainable=["everything"]))
    with pytest.raises(WeightsNotFoundError, match="run that stage first"):
        READTask("reasoning", **_settings(task_tokenizer(task), init_checkpoint="nowhere.st"))


def task_tokenizer(task):
    return task.tokenizer.name_or_path


def test_prepared_images_match_the_models_own_preprocessing(task):
    image = SyntheticReasoningDataset(**DATA)[0]["image"]
    sample = task.data_transform("train")(SyntheticReasoningDataset(**DATA)[0])
    expected = task.model.prepare_image(image)
    torch.testing.assert_close(sample["clip"], expected.clip_pixels)
    torch.testing.assert_close(sample["sam"], expected.sam_pixels)
    assert sample["input_size"] == expected.input_size and sample["original_size"] == (48, 48)
    assert sample["masks"].shape == (2, 48, 48)  # one [SEG] per query


def test_batch_layout_and_labels(task):
    batch = _batch(task)
    assert batch["offset"].tolist() == [0, 2, 4]
    assert batch["input_ids"].shape[0] == 4 and batch["images_clip"].shape[0] == 2
    seg = task.model.seg_token_idx
    for row in range(4):
        labelled = batch["labels"][row][batch["labels"][row] != IGNORE_INDEX].tolist()
        text = task.tokenizer.decode(labelled)
        assert (
            "[SEG]" in text and "USER" not in text and labelled[-1] == task.tokenizer.eos_token_id
        )
        assert (batch["input_ids"][row] == seg).sum() == 1


def test_forward_backward_and_cached_sam_embeddings(task):
    batch = _batch(task)
    task.train()
    task._sam_cache.clear()
    out = task(batch)
    assert set(out) == {"loss", "ce_loss", "mask_bce_loss", "mask_dice_loss"}
    assert all(torch.isfinite(v) for v in out.values())
    assert float(out["mask_bce_loss"]) > 0 and len(task._sam_cache) == 2
    out["loss"].backward()
    grads = {n: p.grad for n, p in task.named_parameters() if p.requires_grad}
    # SAM's IoU head and the multimask outputs are unused (single-mask decoding): DDP needs
    # find_unused_parameters, as the shipped config sets
    checked = [
        n
        for n in grads
        if "lora_B" in n or "text_hidden_fcs" in n or "mask_decoder.transformer" in n
    ]
    assert checked and all(grads[n] is not None and grads[n].abs().sum() > 0 for n in checked)
    task.zero_grad(set_to_none=True)
    task.eval()
    with torch.no_grad():
        cached = task(batch)["loss"]
        task._sam_cache.clear()
        fresh = task(batch)["loss"]
    torch.testing.assert_close(cached, fresh)


def test_similarity_loss_is_an_option_that_trains_the_sasp_map(task):
    batch = _batch(task)
    torch.manual_seed(0)
    extra = READTask("reasoning", **_settings(task_tokenizer(task), similarity_loss_weight=2.0))
    extra.model.load_state_dict(task.model.state_dict())
    extra.train()
    task.train()
    with torch.random.fork_rng():
        torch.manual_seed(1)
        plain = task(batch)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        out = extra(batch)
    assert set(out) == set(plain) | {"similarity_loss"}
    assert float(out["similarity_loss"]) > 0
    torch.testing.assert_close(out["loss"], plain["loss"] + out["similarity_loss"])
    # it reaches the image tokens' hidden states: LoRA of the first layer gets gradients from it
    extra.zero_grad(set_to_none=True)
    extra.model(**_model_inputs(extra, batch))["similarity_loss"].backward()
    lora = [p for n, p in extra.named_parameters() if "layers.0." in n and "lora_B" in n]
    assert lora and all(p.grad is not None for p in lora)
    task.zero_grad(set_to_none=True)


def _model_inputs(task, batch):
    keys = ("images_clip", "input_ids", "labels", "attention_masks", "offset", "masks_list",
            "sam_mask_shape_list")  # fmt: skip
    return {**{k: batch[k] for k in keys}, "image_embeddings": task.sam_embeddings(batch)}


def test_init_checkpoint_may_be_a_read_folder(task, tmp_path):
    folder = task.export_read_folder(tmp_path / "read_model")
    torch.manual_seed(5)
    started = READTask(
        "reasoning", **_settings(task_tokenizer(task), lora={"r": 0}, init_checkpoint=folder)
    )
    merged = task.merged_state_dict()
    tower = "mllm.vision_tower."
    for key, value in started.model.state_dict().items():
        if not key.startswith(tower):  # the frozen tower is the one `vision_tower` built
            torch.testing.assert_close(value, merged[key], rtol=0, atol=0, msg=key)
    with pytest.raises(CheckpointError, match="no part of READ"):
        from safetensors.torch import load_file, save_file

        state = load_file(folder / "model.safetensors")
        save_file({**state, "stray.weight": torch.zeros(1)}, folder / "model.safetensors")
        READTask("reasoning", **_settings(task_tokenizer(task), init_checkpoint=folder))


def test_caption_stage_labels_only_the_caption(tokenizer_dir):
    torch.manual_seed(0)
    task = READTask("caption", **_settings(tokenizer_dir))
    trainable = {n for n, p in task.named_parameters() if p.requires_grad}
    assert any("layers.0.self_attn.q_proj.weight" in n for n in trainable)  # whole LM
    assert not any("lora_" in n or "mask_decoder" in n for n in trainable)
    scenes = SyntheticSceneDataset(num=2, seed=0, split="train", image_size=48)
    prep = task.data_transform("train")
    batch = task.collate([prep(scenes[i]) for i in range(2)])
    labels = batch["labels"][0]
    labelled = labels[labels != IGNORE_INDEX].tolist()
    assert task.tokenizer.decode(labelled).strip() == scenes[0]["caption"]
    out = task(batch)
    assert float(out["mask_bce_loss"]) == 0.0 and float(out["ce_loss"]) > 0
    with pytest.raises(DatasetError, match="queries"):
        READTask.data_transform(task, "train").__class__(
            task.tokenizer, "reasoning", **_prep_numbers(prep)
        )(scenes[0])


def _prep_numbers(prep):
    return {
        "clip_size": prep.clip[0], "clip_mean": prep.clip[1], "clip_std": prep.clip[2],
        "sam_size": prep.sam[0], "sam_mean": prep.sam[1], "sam_std": prep.sam[2],
        "seg_token_idx": prep.seg_token_idx, "num_image_tokens": prep.num_image_tokens,
        "max_length": prep.max_length,
    }  # fmt: skip


def test_export_merges_lora(task, tmp_path):
    batch = _batch(task)
    with torch.no_grad():  # make LoRA matter
        for name, param in task.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    task.eval()
    path = tmp_path / "read.safetensors"
    task.export(path)
    state = load_state_dict(path)
    assert not any("lora_" in k or "base_layer" in k for k in state)
    plain = READTask("reasoning", **_settings(task_tokenizer(task), lora={"r": 0}))
    plain.model.load_state_dict(state)
    plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            plain(batch)["ce_loss"], task(batch)["ce_loss"], rtol=1e-4, atol=1e-5
        )


def _config(tmp_path, tokenizer_dir, max_iters=4, **train_extra):
    data = {"type": "SyntheticReasoningDataset", **DATA}
    return {
        "custom_imports": ["ovseg.tasks.read"],
        "task": {"type": "READ", "stage": "reasoning", **_settings(tokenizer_dir)},
        "data": {
            "train": data,
            "val": {**data, "num": 2, "split": "val", "seed": 9},
            "batch_size": 2,
            "num_workers": 0,
        },  # fmt: skip
        "optimizer": {"type": "AdamW", "lr": 1e-3, "weight_decay": 0.0},
        "schedule": {"type": "poly", "power": 1.0, "warmup_iters": 1},
        "train": {
            "max_iters": max_iters,
            "ckpt_interval": 2,
            "log_interval": 1,
            "seed": 0,
            "device": "cpu",
            **train_extra,
        },  # fmt: skip
        "work_dir": str(tmp_path),
    }


def test_engine_resume_is_exact(tmp_path, tokenizer_dir):
    full = train(_config(tmp_path / "full", tokenizer_dir))
    assert full["iteration"] == 4 and {"gIoU", "cIoU", "ce_loss"} <= set(full["metrics"])
    first = _config(tmp_path / "split", tokenizer_dir, max_iters=2)
    train(first)
    resumed = train(_config(tmp_path / "split", tokenizer_dir), resume=True)
    a = load_state_dict(full["export"])
    b = load_state_dict(resumed["export"])
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_shipped_configs_parse():
    from ovseg.config import load_config

    for name in (
        "shapes_tiny_read_caption.yaml",
        "shapes_tiny_read.yaml",
        "shapes_tiny_read_long.yaml",
        "shapes_tiny_read_long_simloss.yaml",
        "shapes_tiny_read_sasp.yaml",
        "shapes_tiny_read_sasp_more.yaml",
    ):
        cfg = load_config(CONFIGS / name)
        assert cfg["task"]["type"] == "READ"
    stage3 = load_config(CONFIGS / "shapes_tiny_read_sasp.yaml")
    stage4 = load_config(CONFIGS / "shapes_tiny_read_sasp_more.yaml")
    # stage 4 starts from stage 3's export and keeps its model and selector
    assert stage4["task"]["init_checkpoint"] == f"{stage3['work_dir']}/read_model"
    assert stage4["task"]["selector"] == stage3["task"]["selector"]
    assert stage4["task"]["similarity_loss_weight"] == 1.0 and stage4["task"]["lora"]["r"] == 0
    assert stage4["data"]["val"]["seed"] != 1000 and stage4["data"]["train"]["num"] == 16000
    stage2 = load_config(CONFIGS / "shapes_tiny_read.yaml")
    assert stage2["task"]["lora"]["r"] == 8 and stage2["task"]["lora"]["alpha"] == 16
    assert np.isclose(stage2["task"]["bce_loss_weight"], 2.0)
    assert stage2["task"].get("similarity_loss_weight", 0.0) == 0.0  # READ's loss
    long = load_config(CONFIGS / "shapes_tiny_read_long.yaml")
    assert long["task"]["lora"] == stage2["task"]["lora"]
    assert long["data"]["val"]["seed"] != 1000  # the held-out evaluation scenes


def test_read_folder_export_loads_in_the_reasoning_pipeline_and_evaluates(task, tmp_path):
    from ovseg.evaluation.loop import evaluate

    folder = task.export_read_folder(tmp_path / "read_model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["read_model"]  # no staging left
    settings = {"num": 2, "seed": 3, "split": "val", "image_size": 48, "queries_per_scene": 1}
    cfg = {
        "data": {"test": {"type": "SyntheticReasoningDataset", **settings}},
        "pipelines": {
            "reasoning": {
                "type": "ReasoningSegmenter",
                "weights": str(folder),
                "vision_tower": "open_clip:ovseg-ViT-Ti-8",
                "max_new_tokens": 6,
                "max_length": 160,
            }
        },  # fmt: skip
        "evaluation": {"type": "ReasoningMetric", "progress": False},
    }
    results = evaluate(cfg, work_dir=tmp_path / "eval")
    assert results["overall"]["num_samples"] == 2 and results["num_images"] == 2
    assert 0.0 <= results["overall"]["gIoU"] <= 100.0
    # the pipeline's model holds the merged weights
    from ovseg.models.multimodal.checkpoint import load_read_model

    loaded, tokenizer = load_read_model(folder)
    merged = task.merged_state_dict()
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, merged[key], rtol=0, atol=0, msg=key)
    assert len(tokenizer) == len(task.tokenizer)


def test_vision_tiles_and_selector_are_task_options_that_reach_the_export(tokenizer_dir, tmp_path):
    from ovseg.models.multimodal.checkpoint import load_read_model

    torch.manual_seed(0)
    selector = {"type": "SasPSelector", "compat": "read", "down_sample": 1, "t_pos": 0.95}
    tiled = READTask(
        "reasoning", **_settings(tokenizer_dir, vision_tiles=2, max_length=320, selector=selector)
    )
    tower = tiled.model.mllm.vision_tower
    assert tower.tiles == 2 and tower.image_size == 128 and tower.grid_size == (16, 16)
    assert tiled.model.mllm.num_image_tokens == 256
    assert tiled.model.selector.down_sample == 1 and tiled.model.selector.t_pos == 0.95
    batch = _batch(tiled)
    assert batch["images_clip"].shape[-2:] == (128, 128)
    out = tiled(batch)
    assert torch.isfinite(out["loss"])
    assert all(grid.shape == (16, 16) for grid in [tiled.model.points_for(
        torch.zeros(32), torch.zeros(256, 32), (48, 48))[1]])  # fmt: skip
    folder = tiled.export_read_folder(tmp_path / "read_model")
    import json

    config = json.loads((folder / "config.json").read_text())
    assert config["mm_vision_tiles"] == 2 and config["ovseg_sasp_selector"] == selector
    loaded, _ = load_read_model(folder, vision_tower="open_clip:ovseg-ViT-Ti-8")
    assert loaded.mllm.vision_tower.grid_size == (16, 16)
    # the folder's selector is the one the model trained with; an explicit one still wins
    assert loaded.selector.down_sample == 1 and loaded.selector.t_pos == 0.95
    from ovseg.models.prompts.sasp import SasPSelector

    chosen, _ = load_read_model(
        folder, vision_tower="open_clip:ovseg-ViT-Ti-8", selector=SasPSelector(t_pos=0.5)
    )
    assert chosen.selector.t_pos == 0.5 and chosen.selector.down_sample == 2
    # a config file's nested selector arrives built (TASKS.build): it is written all the same
    built = READTask(
        "reasoning", **_settings(tokenizer_dir, selector=POINT_SELECTORS.build(selector))
    )
    assert built.read_config()["ovseg_sasp_selector"] == selector
    with pytest.raises(ConfigError, match="cannot be written"):
        READTask("reasoning", **_settings(tokenizer_dir, selector=lambda grid, placement: None))
    plain = READTask("reasoning", **_settings(tokenizer_dir))
    # READ's own config stays READ's
    assert "mm_vision_tiles" not in plain.read_config()
    assert "ovseg_sasp_selector" not in plain.read_config()
