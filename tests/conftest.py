"""Shared fixtures: tiny random-init open_clip architectures registered at run time."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch

TINY_TEXT = {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
TINY_CONFIGS = {
    "ovseg-test-vit": {
        "embed_dim": 32,
        "vision_cfg": {
            "image_size": 32,
            "layers": 2,
            "width": 64,
            "patch_size": 8,
            "head_width": 16,
        },
        "text_cfg": TINY_TEXT,
    },
    "ovseg-test-rn": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8},
        "text_cfg": TINY_TEXT,
    },
}


TINY_CONFIGS["ovseg-test-vit-avg"] = {
    **TINY_CONFIGS["ovseg-test-vit"],
    "vision_cfg": {**TINY_CONFIGS["ovseg-test-vit"]["vision_cfg"], "pool_type": "avg"},
}
# six blocks: enough for methods that read intermediate blocks (SC-CLIP)
TINY_CONFIGS["ovseg-test-vit-deep"] = {
    **TINY_CONFIGS["ovseg-test-vit"],
    "vision_cfg": {**TINY_CONFIGS["ovseg-test-vit"]["vision_cfg"], "layers": 6},
}


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread: tiny models on a shared, busy CPU only get slower with more."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_model_names(tmp_path_factory) -> dict[str, str]:
    """Register the tiny configs with open_clip; returns {'vit', 'vit_avg', 'vit_deep', 'rn'} -> name."""
    folder = tmp_path_factory.mktemp("model_configs")
    for name, cfg in TINY_CONFIGS.items():
        (folder / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)
    return {
        "vit": "ovseg-test-vit",
        "vit_avg": "ovseg-test-vit-avg",
        "vit_deep": "ovseg-test-vit-deep",
        "rn": "ovseg-test-rn",
    }


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter non-trivial random values (layer norms included), reproducibly."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(
                torch.randn(param.shape, generator=generator) * 0.2 + (param.ndim == 1) * 0.5
            )
    return model


@pytest.fixture
def tmp_checkpoint_dir(tmp_path) -> Path:
    return tmp_path


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request) -> torch.device:
    """The devices a model test runs on: the CPU always, CUDA where this machine has a GPU
    (``pytest -m cuda`` selects the CUDA runs; tools/gpu_check.sh runs them)."""
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine")
    return torch.device(request.param)
