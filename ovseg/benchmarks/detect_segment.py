"""Seconds per image of detector boxes segmented by SAM, with random weights (speed only).

The pipeline is :class:`~ovseg.pipelines.instance.InstanceSegmenter` with ``proposals:
detector``: an OWLv2 detector (:class:`~ovseg.models.detectors.owl.Owlv2Detector` around a
random-init transformers ``Owlv2ForObjectDetection``) finds and names boxes, and every box is one
SAM box prompt (:class:`~ovseg.models.decoders.sam.SamDecoder`). Sizes (:data:`DETECT_SIZES`):
``b16`` is OWLv2-B/16 at 960 px (3,600 boxes per image) with SAM ViT-H; ``tiny`` a one-layer
OWLv2 on 64 px with the packaged tiny SAM architecture, for CPU checks.

Random heads give arbitrary scores, so the number of boxes is fixed instead:
``box_threshold`` 0 and ``max_detections = boxes_per_image`` keep the best ``boxes_per_image``
boxes of every image (SAM decodes exactly that many prompts). The text side is a character
vocabulary tokenizer (the real CLIP tokenizer gives other ids, not another amount of work: every
query is padded to the text model's 16 positions).

Timed per repeat, over all images: the whole ``predict_batch`` and, separately, the detector
alone (``detect``, image by image) and SAM's image encoder alone (``embed_batch``).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ovseg.benchmarks.inputs import synthetic_images
from ovseg.benchmarks.machine import benchmark_device, machine_info, peak_rss_mb
from ovseg.errors import ConfigError

#: OWLv2-B/16 (``google/owlv2-base-patch16-ensemble``'s architecture): CLIP ViT-B/16 at 960 px
#: and CLIP's 12-layer text model (16 positions).
OWLV2_B16 = {
    "vision_config": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "image_size": 960,
        "patch_size": 16,
    },
    "text_config": {
        "hidden_size": 512,
        "intermediate_size": 2048,
        "num_hidden_layers": 12,
        "num_attention_heads": 8,
        "max_position_embeddings": 16,
        "vocab_size": 49408,
    },
    "projection_dim": 512,
}
OWLV2_TINY = {
    "vision_config": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 64,
        "patch_size": 16,
    },
    "text_config": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": 16,
        "vocab_size": 64,
    },
    "projection_dim": 32,
}
#: size -> (OWLv2 config, SAM architecture)
DETECT_SIZES = {"b16": (OWLV2_B16, "vit_h"), "tiny": (OWLV2_TINY, "ovseg-sam-tiny")}
DEFAULT_CLASSES = ["cat", "dog", "car", "person", "tree", "cup", "chair", "bird"]
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def char_tokenizer(folder: Path, max_length: int = 16) -> Any:
    """A CLIP tokenizer over single letters (written to ``folder``): ids 0-2 are ``!``, start
    and end of text, then every letter with and without the end-of-word mark."""
    import transformers

    vocab = {"!": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}
    for char in "abcdefghijklmnopqrstuvwxyz":
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return transformers.CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length
    )


def class_names(count: int) -> list[str]:
    """``count`` distinct lower-case names (:data:`DEFAULT_CLASSES`, then ``objecta``,
    ``objectb`` ...): letters only, as :func:`char_tokenizer` spells them."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    extra = [f"object{letters[i % 26] * (1 + i // 26)}" for i in range(count)]
    return (DEFAULT_CLASSES + extra)[:count]


def build_random_owlv2(
    size: str, device: torch.device, dtype: torch.dtype, box_threshold: float = 0.0, **kwargs: Any
) -> Any:
    """An :class:`Owlv2Detector` around a random-init ``Owlv2ForObjectDetection`` of ``size``,
    created on ``device`` in ``dtype``; ``kwargs`` go to ``Owlv2Detector.from_model``."""
    import transformers

    from ovseg.models.detectors.owl import Owlv2Detector

    config_fields = DETECT_SIZES[size][0]
    config = transformers.Owlv2Config(
        text_config={**config_fields["text_config"], "bos_token_id": 1, "eos_token_id": 2,
                     "pad_token_id": 0},
        vision_config=config_fields["vision_config"],
        projection_dim=config_fields["projection_dim"],
    )  # fmt: skip
    side = int(config_fields["vision_config"]["image_size"])
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = transformers.Owlv2ForObjectDetection(config)
    finally:
        torch.set_default_dtype(previous)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = char_tokenizer(Path(folder))
    image_processor = transformers.Owlv2ImageProcessor(size={"height": side, "width": side})
    processor = transformers.Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer)
    return Owlv2Detector.from_model(model, processor, box_threshold=box_threshold, **kwargs)


def run_detect_segment_benchmark(
    size: str = "b16",
    *,
    device: str = "cpu",
    precision: str = "bf16",
    num_images: int = 8,
    sizes: tuple[tuple[int, int], ...] = ((480, 640),),
    num_classes: int = 8,
    boxes_per_image: int = 10,
    attention: str = "native",
    repeats: int = 3,
    warmup: int = 1,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Seconds per image of OWLv2 boxes -> SAM masks (see the module docstring).

    Args:
        size: ``b16`` (OWLv2-B/16 + SAM ViT-H) or ``tiny``.
        device, precision: where the models run; ``precision`` is the detector's dtype and SAM's
            ``precision`` setting (autocast of its encoder and mask decoder).
        num_images, sizes: synthetic RGB images of these ``(H, W)`` sizes in turn.
        num_classes: vocabulary size (:func:`class_names`).
        boxes_per_image: boxes kept per image, each one SAM prompt.
        attention: SAM's image-encoder attention, ``native`` or ``sdpa`` (fused).
        repeats, warmup: timed passes over all images (median reported), untimed ones first.

    Returns a JSON-ready dict: ``settings``, ``machine``, ``build_seconds``, per stage
    (``pipeline``, ``detector``, ``sam_encoder``) the median and all seconds per pass and the
    milliseconds per image, ``instances_per_image`` and memory.
    """
    from ovseg.models.decoders.sam import SamDecoder
    from ovseg.models.decoders.sam_build import build_sam
    from ovseg.pipelines.instance import InstanceSegmenter
    from ovseg.vocab import Vocabulary

    say = log or (lambda message: None)
    if size not in DETECT_SIZES:
        raise ConfigError(f"Unknown size {size!r}; choose one of {', '.join(DETECT_SIZES)}.")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    for name, value, least in (
        ("num_images", num_images, 1), ("num_classes", num_classes, 1),
        ("boxes_per_image", boxes_per_image, 1), ("repeats", repeats, 1), ("warmup", warmup, 0),
    ):  # fmt: skip
        if value < least:
            raise ConfigError(f"{name} must be at least {least}, got {value}.")
    target = benchmark_device(device)
    say(f"building a random OWLv2 ({size}) and SAM on {target} ({precision})")
    _sync(target)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[target] if target.type == "cuda" else []):
        torch.manual_seed(seed)
        detector = build_random_owlv2(
            size,
            target,
            PRECISIONS[precision],
            max_detections=boxes_per_image,
            preprocess_on_device=target.type == "cuda",
        )
        with torch.device(target):
            sam = build_sam(DETECT_SIZES[size][1], device=target)
    decoder = SamDecoder.from_model(
        sam, multimask=False, precision=precision, image_batch_size=1, attention=attention
    )
    pipeline = InstanceSegmenter(
        None,
        decoder=decoder,
        proposals="detector",
        detector=detector,
        postprocess={"box_threshold": 0.0, "score_threshold": 0.0, "nms_threshold": 1.0},
    )
    _sync(target)
    build_seconds = time.perf_counter() - start
    vocab = Vocabulary.create(class_names(num_classes))
    images = synthetic_images(num_images, sizes, seed)

    stages: dict[str, Callable[[], Any]] = {
        "pipeline": lambda: pipeline.predict_batch(images, vocab),
        "detector": lambda: [detector.detect(image, vocab, box_threshold=0.0) for image in images],
        "sam_encoder": lambda: decoder.embed_batch(images),
    }
    if target.type == "cuda":
        torch.cuda.reset_peak_memory_stats(target)
    for index in range(warmup):
        say(f"warm-up {index + 1}/{warmup}")
        for run in stages.values():
            run()
    seconds: dict[str, list[float]] = {name: [] for name in stages}
    results = None
    for index in range(repeats):
        for name, run in stages.items():
            _sync(target)
            begin = time.perf_counter()
            out = run()
            _sync(target)
            seconds[name].append(time.perf_counter() - begin)
            if name == "pipeline":
                results = out
        say(
            f"repeat {index + 1}/{repeats}: "
            + ", ".join(f"{name} {values[-1]:.3f} s" for name, values in seconds.items())
        )
    assert results is not None
    counts = [len(result.scores) for result in results]
    if max(counts) > boxes_per_image or min(counts) < 1:
        raise AssertionError(f"instances per image {counts}: expected 1 to {boxes_per_image}")
    memory: dict[str, float | None] = {"peak_rss_mb": peak_rss_mb()}
    if target.type == "cuda":
        memory["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(target) / 2**20, 1)

    def summary(values: list[float]) -> dict[str, Any]:
        median = statistics.median(values)
        return {
            "seconds_median": round(median, 4),
            "seconds_all": [round(v, 4) for v in values],
            "ms_per_image": round(1000.0 * median / num_images, 2),
        }

    return {
        "settings": {
            "size": size,
            "detector": "OWLv2-B/16, 960 px" if size == "b16" else "tiny OWLv2, 64 px",
            "sam": DETECT_SIZES[size][1],
            "detector_preprocessing": "on the device" if target.type == "cuda" else "CPU",
            "precision": precision,
            "device": str(target),
            "num_images": num_images,
            "sizes": [f"{h}x{w}" for h, w in sizes],
            "num_classes": num_classes,
            "boxes_per_image": boxes_per_image,
            "attention": attention,
            "repeats": repeats,
            "warmup": warmup,
            "seed": seed,
            "weights": "random init (speed only)",
        },
        "machine": machine_info(target),
        "build_seconds": round(build_seconds, 3),
        "stages": {name: summary(values) for name, values in seconds.items()},
        "ms_per_image": summary(seconds["pipeline"])["ms_per_image"],
        "instances_per_image": counts,
        **memory,
    }
