"""Tiny READ models, tokenizers and released-layout folders for CPU tests (shared test helper).

The tokenizer is a word-level ``tokenizers`` model that knows the LLaVA v1 template words; the
language model is LLaMA with 2 layers of width 32; the vision tower is a 2-layer CLIP ViT on
32 px images (4 x 4 patches); SAM is the tiny test SAM (prompt dimension 32).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from ovseg.models.multimodal.checkpoint import build_read_model, read_layout_state_dict
from ovseg.models.multimodal.conversation import LLAVA_V1_SYSTEM
from ovseg.models.multimodal.vision import HFClipVisionTower
from tests.models.decoders.sam_tiny import TINY_SAM

WORDS = sorted(
    set(
        (
            LLAVA_V1_SYSTEM
            + " USER ASSISTANT : . , ? ' Sure it is the a an and no There object largest red star "
            "Please segment What which where output mask It"
        )
        .replace(".", " . ")
        .replace(",", " , ")
        .replace("'", " ' ")
        .split()
    )
)
SPECIALS = ["<unk>", "<s>", "</s>"]
ADDED = ["[SEG]", "<im_start>", "<im_end>"]
TINY_CLIP = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
}


def tiny_tokenizer():
    """A fast word-level tokenizer with BOS / EOS / UNK and READ's added tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", vocab["<s>"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<unk>",
    )
    tokenizer.add_tokens(["[SEG]"])
    tokenizer.add_tokens(["<im_start>", "<im_end>"], special_tokens=True)
    return tokenizer


def tiny_config(tokenizer, vision_folder: str | Path | None = None) -> dict:
    """A READ-style ``config.json`` for the tiny model."""
    return {
        "architectures": ["READForCausalLM"],
        "model_type": "llava",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-6,
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "tie_word_embeddings": False,
        "mm_vision_tower": str(vision_folder) if vision_folder else None,
        "mm_hidden_size": 32,
        "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_use_im_start_end": True,
        "out_dim": 32,
        "train_mask_decoder": True,
        "torch_dtype": "float32",
    }


def tiny_tower() -> HFClipVisionTower:
    from transformers import CLIPVisionConfig

    return HFClipVisionTower.from_config(CLIPVisionConfig(**TINY_CLIP))


def tiny_read_model(seed: int = 0, tokenizer=None):
    """A random tiny ReadModel and its tokenizer (``attn_implementation="eager"``)."""
    tokenizer = tokenizer or tiny_tokenizer()
    torch.manual_seed(seed)
    model = build_read_model(
        tiny_config(tokenizer),
        tokenizer.convert_tokens_to_ids("[SEG]"),
        vision_tower=tiny_tower(),
        sam_architecture=TINY_SAM,
        eos_token_id=tokenizer.eos_token_id,
        attn_implementation="eager",
    )
    with torch.no_grad():  # mask logits of a few units, as tests/models/decoders/sam_tiny.py
        for mlp in model.visual_model.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(300.0)
    return model.eval(), tokenizer


def write_clip_folder(folder: Path, tower: HFClipVisionTower) -> Path:
    """An HF CLIP folder (config + safetensors with ``vision_model.*`` and a text tower key)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_type": "clip_vision_model", **TINY_CLIP}
    (folder / "config.json").write_text(json.dumps(config))
    state = {
        (k if k.startswith("vision_model.") else f"vision_model.{k}"): v.contiguous()
        for k, v in tower.vision_tower.state_dict().items()
    }
    state["text_model.embeddings.token_embedding.weight"] = torch.zeros(4, 8)
    state["logit_scale"] = torch.tensor(4.6)
    save_file(state, str(folder / "model.safetensors"))
    return folder


def write_read_folder(
    folder: Path,
    model,
    tokenizer,
    vision_folder: Path,
    layout: str = "safetensors",
    include_tower: bool = False,
    extra: dict | None = None,
    extra_config: dict | None = None,
) -> Path:
    """A released-READ folder: config, tokenizer, weights in READ's key layout.

    ``layout``: ``"safetensors"`` (one file) or ``"bin-sharded"`` (two ``pytorch_model-*.bin``
    shards and ``pytorch_model.bin.index.json``). The vision tower is left out, as READ's
    release script does, unless ``include_tower``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    config = {**tiny_config(tokenizer, vision_folder), **(extra_config or {})}
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(str(folder))
    state = {
        k: v.detach().clone().contiguous()
        for k, v in read_layout_state_dict(model).items()
        if include_tower or not k.startswith("model.vision_tower.")
    }
    state.update(extra or {})
    if layout == "safetensors":
        save_file(state, str(folder / "model.safetensors"))
    elif layout == "bin-sharded":
        keys = sorted(state)
        halves = {"pytorch_model-00001-of-00002.bin": keys[::2]}
        halves["pytorch_model-00002-of-00002.bin"] = keys[1::2]
        weight_map = {}
        for name, part in halves.items():
            torch.save({k: state[k] for k in part}, folder / name)
            weight_map.update(dict.fromkeys(part, name))
        index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
        (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    else:
        raise ValueError(layout)
    return folder


def script_language_model(model, tokenizer, successor: dict[str, str]) -> None:
    """Make greedy decoding a fixed chain: after token ``x`` comes ``successor[x]``.

    The decoder layers' output projections are zeroed, so each position's final hidden state
    is the normalised embedding of its own token; the scripted tokens get orthonormal
    embeddings (the first basis vectors, other tokens live in the remaining dimensions), and
    ``lm_head`` maps each to its successor.
    """
    lm = model.mllm.language_model
    hidden = lm.config.hidden_size
    names = sorted(set(successor) | set(successor.values()))
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in names}
    with torch.no_grad():
        for layer in lm.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        lm.model.norm.weight.fill_(1.0)
        embed = lm.model.embed_tokens.weight
        embed[:, : len(names)] = 0.0
        for i, name in enumerate(names):
            embed[ids[name]] = 0.0
            embed[ids[name], i] = 1.0
        head = lm.lm_head.weight
        head.zero_()
        scale = float(np.sqrt(hidden))
        for source, target in successor.items():
            head[ids[target], names.index(source)] = 10.0 / scale


ANSWER_WITH_MASK = {":": "Sure", "Sure": "[SEG]", "[SEG]": ".", ".": "</s>"}  # "Sure [SEG] ."


def write_tiny_release(root: Path, successor: dict[str, str] | None = None) -> dict[str, Path]:
    """A scripted tiny READ folder, its CLIP folder and a config YAML for ``task="reasoning"``.

    Greedy decoding answers ``"Sure [SEG] ."`` by default (``successor``: see
    :func:`script_language_model`).
    """
    model, tok = tiny_read_model(seed=0)
    script_language_model(model, tok, successor or ANSWER_WITH_MASK)
    clip = write_clip_folder(root / "clip", model.mllm.vision_tower)
    folder = write_read_folder(root / "read", model, tok, clip)
    sam = ", ".join(f"{k}: {json.dumps(v)}" for k, v in TINY_SAM.items())
    config = root / "read_tiny.yaml"
    config.write_text(
        "pipelines:\n"
        "  reasoning:\n"
        "    type: ReasoningSegmenter\n"
        f"    weights: {folder}\n"
        f"    vision_tower: {clip}\n"
        f"    sam_architecture: {{{sam}}}\n"
        "    max_new_tokens: 8\n"
    )
    return {"folder": folder, "clip": clip, "config": config}
