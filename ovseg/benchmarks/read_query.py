"""Seconds per reasoning query of a READ-shaped model with random weights (speed only).

The model is :class:`~ovseg.models.multimodal.read.ReadModel` at READ-7B's shapes
(:data:`READ_7B_CONFIG`: LLaMA-7B, a CLIP ViT-L/14 at 336 px as the vision tower, SAM ViT-H),
built directly on the target device in the target dtype (random init: a 7B model is never
materialised in float32 or on the CPU), or at the tiny shapes of :data:`TINY_READ_CONFIG` for
CPU checks. One query is one call of :meth:`ReadModel.generate` on one image: the vision tower,
the language model's prefill over the prompt with the image tokens spliced in, greedy decoding
of the answer with the KV cache, and for the answer's ``[SEG]`` the SasP points, SAM's image
encoder and its mask decoder.

Random weights answer nonsense of arbitrary length, so the answer is fixed: a forward hook on
the language model's ``lm_head`` replaces the logits of the last position, after they are
computed, by a one-hot of the next scripted token (``answer_tokens - 2`` filler tokens, then
``[SEG]``, then end-of-sequence). Every step therefore does the full computation of a real
answer of that length, one ``[SEG]`` included. The prompt is ``prompt_tokens`` random text ids
around ``<im_start><image><im_end>`` (LISA / READ's prompt is about 60 text tokens).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ovseg.benchmarks.machine import benchmark_device, machine_info, peak_rss_mb
from ovseg.errors import ConfigError
from ovseg.models.multimodal.constants import IMAGE_TOKEN_INDEX

#: Text ids above the specials of the scripted vocabulary: 0 pad/unk, 1 BOS, 2 EOS; READ's
#: tokenizer adds [SEG], <im_start>, <im_end> after LLaMA's 32000 ids.
_BOS, _EOS = 1, 2

#: READ-7B / LISA-7B's shapes: LLaMA-7B, CLIP ViT-L/14-336 (second-to-last layer, patch tokens:
#: 24 x 24 = 576 image tokens), a linear projector, SAM ViT-H, 256-d [SEG] prompt.
READ_7B_CONFIG: dict[str, Any] = {
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "vocab_size": 32003,
    "bos_token_id": _BOS,
    "eos_token_id": _EOS,
    "pad_token_id": 0,
    "tie_word_embeddings": False,
    "mm_vision_tower": "openai/clip-vit-large-patch14-336",
    "vision_config": {
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "image_size": 336,
        "patch_size": 14,
        "projection_dim": 768,
        "hidden_act": "quick_gelu",
    },
    "mm_hidden_size": 1024,
    "mm_projector_type": "linear",
    "mm_vision_select_layer": -2,
    "mm_vision_select_feature": "patch",
    "mm_use_im_start_end": True,
    "out_dim": 256,
    "ovseg_sam_architecture": "vit_h",
}

#: The same structure at CPU-test size (2 LLaMA layers of width 64, a 2-layer CLIP on 32 px
#: images, the packaged tiny SAM).
TINY_READ_CONFIG: dict[str, Any] = {
    **READ_7B_CONFIG,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "vocab_size": 259,
    "vision_config": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    },
    "mm_hidden_size": 32,
    "out_dim": 64,
    "ovseg_sam_architecture": "ovseg-sam-tiny",
}

READ_SIZES = {"7b": READ_7B_CONFIG, "tiny": TINY_READ_CONFIG}
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def special_ids(config: dict[str, Any]) -> dict[str, int]:
    """READ's added tokens at the end of the vocabulary: ``seg``, ``im_start``, ``im_end``."""
    vocab = int(config["vocab_size"])
    return {"seg": vocab - 3, "im_start": vocab - 2, "im_end": vocab - 1}


def build_random_read(size: str, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """A random-init :class:`ReadModel` of ``size`` (``7b`` or ``tiny``), created on ``device``
    in ``dtype`` (SAM's normalisation and point-encoding constants stay float32), eval mode."""
    from ovseg.models.multimodal.checkpoint import build_read_model

    if size not in READ_SIZES:
        raise ConfigError(f"Unknown READ size {size!r}; choose one of {', '.join(READ_SIZES)}.")
    config = copy.deepcopy(READ_SIZES[size])
    with torch.device(device):
        model = build_read_model(
            config,
            special_ids(config)["seg"],
            eos_token_id=_EOS,
            dtype=dtype,
            attn_implementation="sdpa",
        )
    return model.eval()


def scripted_prompt(config: dict[str, Any], prompt_tokens: int, seed: int) -> torch.Tensor:
    """``(L,)`` ids: BOS, random text, ``<im_start><image><im_end>``, more random text."""
    ids = special_ids(config)
    generator = torch.Generator().manual_seed(seed)
    text = torch.randint(3, ids["seg"], (max(prompt_tokens - 1, 2),), generator=generator)
    half = len(text) // 2
    image = torch.tensor([ids["im_start"], IMAGE_TOKEN_INDEX, ids["im_end"]])
    return torch.cat([torch.tensor([_BOS]), text[:half], image, text[half:]])


class ScriptedAnswer:
    """A forward hook for ``lm_head`` that makes greedy decoding follow ``tokens``.

    Call :meth:`reset` before each query. The logits of the last position of every call are
    replaced (after being computed) by 0 for the scripted token and the dtype's lowest value
    elsewhere.
    """

    def __init__(self, tokens: list[int]) -> None:
        self.tokens = list(tokens)
        self.step = 0

    def reset(self) -> None:
        self.step = 0

    def __call__(self, module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        token = self.tokens[min(self.step, len(self.tokens) - 1)]
        self.step += 1
        output = output.clone()
        output[:, -1].fill_(torch.finfo(output.dtype).min)
        output[:, -1, token] = 0
        return output


def run_read_query_benchmark(
    size: str = "7b",
    *,
    device: str = "cpu",
    precision: str = "bf16",
    prompt_tokens: int = 64,
    answer_tokens: int = 16,
    image_size: tuple[int, int] = (480, 640),
    repeats: int = 5,
    warmup: int = 1,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Seconds per query of a random READ model (see the module docstring).

    Args:
        size: ``7b`` (READ-7B's shapes) or ``tiny``.
        device, precision: where and in what dtype the model is built (``fp32``/``bf16``/``fp16``).
        prompt_tokens: text tokens of the prompt (the image adds the tower's patch count).
        answer_tokens: tokens of the scripted answer, ``[SEG]`` and end-of-sequence included
            (at least 2).
        image_size: ``(H, W)`` of the random RGB image.
        repeats, warmup: timed queries (median reported) and untimed ones before them.

    Returns a JSON-ready dict: ``settings``, ``machine``, ``build_seconds``, ``seconds_median``,
    ``seconds_all``, ``queries_per_second``, ``answer`` (generated token count, ``[SEG]`` masks)
    and memory (``peak_rss_mb``; ``peak_cuda_mb`` on a GPU).
    """
    say = log or (lambda message: None)
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    if answer_tokens < 2 or prompt_tokens < 3 or repeats < 1 or warmup < 0:
        raise ConfigError(
            "answer_tokens must be >= 2, prompt_tokens >= 3, repeats >= 1 and warmup >= 0."
        )
    target = benchmark_device(device)
    config = READ_SIZES.get(size)
    if config is None:
        raise ConfigError(f"Unknown READ size {size!r}; choose one of {', '.join(READ_SIZES)}.")
    say(f"building a random READ ({size}) on {target} in {precision}")
    _sync(target)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[target] if target.type == "cuda" else []):
        torch.manual_seed(seed)
        model = build_random_read(size, target, PRECISIONS[precision])
    _sync(target)
    build_seconds = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    say(f"built {params / 1e9:.2f} B parameters in {build_seconds:.1f} s")

    ids = special_ids(config)
    filler = [3 + (i % 100) for i in range(answer_tokens - 2)]
    script = ScriptedAnswer([*filler, ids["seg"], _EOS])
    hook = model.mllm.language_model.lm_head.register_forward_hook(script)
    prompt = scripted_prompt(config, prompt_tokens, seed)
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (*image_size, 3), dtype=np.uint8)

    def query() -> Any:
        script.reset()
        return model.generate(image, prompt, max_new_tokens=answer_tokens + 4)

    try:
        if target.type == "cuda":
            torch.cuda.reset_peak_memory_stats(target)
        for index in range(warmup):
            say(f"warm-up {index + 1}/{warmup}")
            query()
        seconds = []
        answer = None
        for index in range(repeats):
            _sync(target)
            begin = time.perf_counter()
            answer = query()
            _sync(target)
            seconds.append(time.perf_counter() - begin)
            say(f"query {index + 1}/{repeats}: {seconds[-1]:.3f} s")
    finally:
        hook.remove()
    assert answer is not None
    if len(answer.segments) != 1 or not answer.stopped_at_eos:
        raise AssertionError(
            f"the scripted answer did not run as planned ({len(answer.output_ids)} tokens, "
            f"{len(answer.segments)} masks, stopped={answer.stopped_at_eos})"
        )
    median = statistics.median(seconds)
    memory: dict[str, float | None] = {"peak_rss_mb": peak_rss_mb()}
    if target.type == "cuda":
        memory["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(target) / 2**20, 1)
    return {
        "settings": {
            "size": size,
            "precision": precision,
            "device": str(target),
            "prompt_tokens": int(len(prompt)) - 1 + model.mllm.num_image_tokens,
            "text_prompt_tokens": int(len(prompt)) - 1,
            "image_tokens": model.mllm.num_image_tokens,
            "answer_tokens": answer_tokens,
            "image_size": list(image_size),
            "repeats": repeats,
            "warmup": warmup,
            "seed": seed,
            "weights": "random init (speed only)",
            "parameters": params,
        },
        "machine": machine_info(target),
        "build_seconds": round(build_seconds, 3),
        "seconds_median": round(median, 4),
        "seconds_all": [round(s, 4) for s in seconds],
        "queries_per_second": round(1.0 / median, 3),
        "answer": {
            "generated_tokens": len(answer.output_ids),
            "masks": len(answer.segments),
            "mask_shape": list(answer.segments[0].mask.shape),
        },
        **memory,
    }
