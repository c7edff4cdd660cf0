"""A tiny MDETR (ResNet-18, 1-layer RoBERTa) and its checkpoint in the released layout (test
helper; ``tools/mdetr_reference_outputs.py`` uses it too).

The weights do not come from the modules' own initialisation: :func:`fill_weights` draws every
tensor from a generator seeded by the seed and the tensor's name, so they stay the same whatever
order the modules are built in (the stored reference outputs depend on them).
"""

from __future__ import annotations

import argparse
import json
import zlib
from pathlib import Path
from typing import Any

import torch

#: 31 token classes (+ no object), 10 queries, width 32 (the released models: 255, 100, 256)
TINY_ARCHITECTURE: dict[str, Any] = {
    "backbone": "resnet18",
    "hidden_dim": 32,
    "nheads": 2,
    "enc_layers": 1,
    "dec_layers": 2,
    "dim_feedforward": 64,
    "num_queries": 10,
    "num_classes": 31,
    "contrastive_hdim": 8,
}
SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (byte-level BPE's alphabet)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


def write_tiny_tokenizer(folder: Path) -> Path:
    """A byte-level BPE RoBERTa tokenizer without merges: one token per byte (space: ``Ġ``)."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {token: index for index, token in enumerate(SPECIALS)}
    for char in _bytes_to_unicode().values():
        vocab[char] = len(vocab)
    vocab["<mask>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder


def tiny_text_config(vocab_size: int = 261) -> dict[str, Any]:
    return {
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "hidden_act": "gelu",
        "max_position_embeddings": 130,
        "type_vocab_size": 1,
        "layer_norm_eps": 1e-5,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
    }


def tiny_architecture() -> dict[str, Any]:
    return {**TINY_ARCHITECTURE, "text_config": tiny_text_config()}


def fill_weights(state: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values for every tensor of ``state``, from ``seed`` and the tensor's name."""
    filled = {}
    for name, tensor in state.items():
        generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
        noise = torch.randn(tensor.shape, generator=generator)
        if not tensor.is_floating_point():
            filled[name] = tensor.clone()
        elif name.endswith("running_var"):
            filled[name] = noise.abs() * 0.5 + 0.5
        elif name.endswith("running_mean"):
            filled[name] = noise * 0.1
        elif tensor.ndim == 1 and ("norm" in name.lower() or "bn" in name or ".weight" in name):
            filled[name] = 1.0 + 0.1 * noise if name.endswith("weight") else 0.1 * noise
        elif tensor.ndim == 1:
            filled[name] = 0.1 * noise
        else:
            fan_in = max(1, tensor[0].numel())
            filled[name] = noise / fan_in**0.5
    return filled


def tiny_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """The filled state dict of the tiny architecture (as ovseg names it)."""
    from ovseg.models.detectors.mdetr import build_mdetr_model

    model = build_mdetr_model(tiny_architecture())
    return fill_weights(model.state_dict(), seed)


def write_tiny_checkpoint(path: Path, seed: int = 0, state: dict | None = None) -> Path:
    """A ``.pth`` in the released layout: ``{"model", "model_ema", "optimizer", "epoch",
    "args"}`` with transformers 4.5's ``position_ids`` buffer, as ``main.py`` saved it."""
    state = dict(tiny_state_dict(seed) if state is None else state)
    positions = tiny_text_config()["max_position_embeddings"]
    state["transformer.text_encoder.embeddings.position_ids"] = torch.arange(positions)[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "model": state,
            "model_ema": None,
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
            "epoch": 0,
            "args": argparse.Namespace(backbone="resnet18", num_queries=10, lr=1e-4),
        },
        path,
    )
    return path
