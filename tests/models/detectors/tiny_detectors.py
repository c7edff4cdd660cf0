"""Tiny random OWL-ViT / OWLv2 / Grounding DINO folders in the released layout (test helper).

Each writer saves ``config.json``, ``model.safetensors`` and the processor files with
transformers' ``save_pretrained``, from a seeded random initialisation whose box and class heads
are spread out (the untrained heads put every box at one spot).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = ["cat", "dog", "red", "car", "the", "a", "remote", "control", "blue", "star"]


def _spread(module: torch.nn.Module, std: float, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * std)


def write_tiny_owl(folder: Path, version: int = 2, seed: int = 0) -> Path:
    """A 1-layer OWL-ViT (``version=1``) or OWLv2 on 64 px images (16 px patches: 16 boxes)."""
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"!": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}
    for char in "abcdefghijklmnopqrstuvwxyz":
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16
    )
    prefix = "Owlv2" if version == 2 else "OwlViT"
    config = getattr(transformers, f"{prefix}Config")(
        text_config=dict(
            vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
            num_attention_heads=2, max_position_embeddings=16, bos_token_id=1, eos_token_id=2,
            pad_token_id=0,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            image_size=64, patch_size=16,
        ),
        projection_dim=32,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = getattr(transformers, f"{prefix}ForObjectDetection")(config).eval()
    _spread(model.box_head, 0.3, seed)
    _spread(model.class_head, 0.05, seed + 1)
    model.save_pretrained(folder)
    image_processor = getattr(transformers, f"{prefix}ImageProcessor")(
        size={"height": 64, "width": 64}, crop_size={"height": 64, "width": 64}
    )
    processor = getattr(transformers, f"{prefix}Processor")(
        image_processor=image_processor, tokenizer=tokenizer
    )
    processor.save_pretrained(folder)
    return folder


def write_tiny_grounding_dino(folder: Path, max_text_len: int = 16, seed: int = 0) -> Path:
    """A tiny Grounding DINO (Swin 2 stages, BERT 1 layer, 20 queries) on 48-64 px images."""
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = transformers.BertTokenizer(str(folder / "vocab.txt"))
    config = transformers.GroundingDinoConfig(
        backbone_config=transformers.SwinConfig(
            image_size=64, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2],
            window_size=4, out_indices=[1, 2],
        ),
        text_config=transformers.BertConfig(
            vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=64,
        ),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        encoder_attention_heads=2, decoder_attention_heads=2, num_queries=20,
        num_feature_levels=2, encoder_n_points=2, decoder_n_points=2, max_text_len=max_text_len,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = transformers.GroundingDinoForObjectDetection(config).eval()
    model.save_pretrained(folder)
    image_processor = transformers.GroundingDinoImageProcessor(
        size={"shortest_edge": 48, "longest_edge": 64}
    )
    transformers.GroundingDinoProcessor(
        image_processor=image_processor, tokenizer=tokenizer
    ).save_pretrained(folder)
    return folder
