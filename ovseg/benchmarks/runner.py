"""Timing: warm-up, interleaved repeats (median) of the baseline and ovseg, agreement check."""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import open_clip
import torch

from ovseg.benchmarks.baseline import NaiveSlidingSegmenter, compare_outputs
from ovseg.benchmarks.inputs import (
    DEFAULT_SIZES,
    benchmark_config,
    parse_size,
    synthetic_images,
    vocabulary_names,
)
from ovseg.benchmarks.machine import benchmark_device, machine_info, peak_rss_mb
from ovseg.errors import ConfigError
from ovseg.inference.resize import rescale_size
from ovseg.inference.sliding import sliding_windows
from ovseg.models.backbones.templates import resolve_templates
from ovseg.settings import check_known_keys
from ovseg.vocab import Vocabulary


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, float]:
    """``(wall seconds, CPU seconds of this process)`` of one call of ``fn``.

    CPU seconds count every thread of the process (worker threads included) and are steadier
    than wall time on a machine shared with other jobs.
    """
    _sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - start, time.process_time() - cpu_start


def _memory_mark(device: torch.device) -> dict[str, float | None]:
    mark: dict[str, float | None] = {"peak_rss_mb": peak_rss_mb()}
    if device.type == "cuda":
        mark["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        torch.cuda.reset_peak_memory_stats(device)
    return mark


@dataclass(frozen=True)
class BenchmarkSettings:
    """What one benchmark run measures (see :func:`run_benchmark` for the meaning of each)."""

    model_name: str = "ViT-B-16"
    dense_mode: str = "sclip"
    num_images: int = 8
    sizes: tuple[tuple[int, int], ...] = tuple(parse_size(s) for s in DEFAULT_SIZES)
    short_side: int = 336
    max_long_side: int | None = 2048
    crop: int = 224
    stride: int = 112
    batch_size: int = 16
    num_classes: int = 21
    templates: str = "photo"
    logit_scale: float = 40.0
    device: str = "cpu"
    repeats: int = 3
    warmup: int = 1
    seed: int = 0
    threads: int | None = None
    score_tol: float = 1e-4
    precision: str = "fp32"

    def validate(self) -> None:
        if self.repeats <= 0 or self.warmup < 0:
            raise ConfigError(
                f"repeats must be positive and warmup >= 0 (got {self.repeats}, {self.warmup})."
            )
        for name in ("num_images", "batch_size", "num_classes", "crop", "stride"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}.")
        if not self.sizes:
            raise ConfigError("Give at least one image size.")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["sizes"] = [f"{h}x{w}" for h, w in self.sizes]
        return data


def run_benchmark(
    model_name: str = "ViT-B-16",
    dense_mode: str = "sclip",
    *,
    sizes: Sequence[tuple[int, int]] | Sequence[str] = DEFAULT_SIZES,
    log: Callable[[str], None] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Time ovseg's ``predict_batch`` against :class:`NaiveSlidingSegmenter` on the same images.

    Args:
        model_name: open_clip ViT architecture, built with random (seeded) weights.
        dense_mode: last-block variant (``sclip``, ``naclip`` ...).
        sizes: image sizes ``(H, W)`` or ``"HxW"``, used in turn for the synthetic images.
        log: called with progress messages.
        **settings: the other fields of :class:`BenchmarkSettings`: ``num_images``,
            ``short_side``, ``max_long_side``, ``crop``, ``stride``, ``batch_size`` (ovseg's
            windows per backbone call), ``num_classes``, ``templates``, ``logit_scale``,
            ``device``, ``repeats`` (timed runs; the median is reported), ``warmup``, ``seed``,
            ``threads`` (torch CPU threads during the run), ``score_tol`` (largest allowed cosine
            score difference).

    Both use one open_clip model object in fp32 (TF32 off on GPUs). Order: build; text
    features (not timed); ``warmup`` baseline passes, then the process's peak RSS is read (model
    + baseline); ``warmup`` ovseg passes, peak RSS again (the larger of the two); ``repeats``
    timed passes of each, interleaved (baseline first on even repeats, ovseg first on odd ones)
    so that load from other processes hits both alike; then a checking pass
    (:func:`check_agreement`).

    Returns a JSON-ready dict: ``settings``, ``machine``, ``baseline`` and ``ovseg`` (median and
    all times in seconds, images/s, memory, text-feature seconds), ``speedup`` (ovseg images/s
    / baseline images/s) and ``check``.

    Raises:
        AssertionError: the two disagree (score maps beyond ``score_tol``, or labels that differ
            where no float tie explains it).
        ConfigError: bad settings (non-positive counts, sizes, a non-ViT model).
    """
    check_known_keys(settings, BenchmarkSettings.__dataclass_fields__, "benchmark settings")
    cfg = BenchmarkSettings(
        model_name=model_name,
        dense_mode=dense_mode,
        sizes=tuple(parse_size(s) if isinstance(s, str) else (int(s[0]), int(s[1])) for s in sizes),
        **settings,
    )
    cfg.validate()
    old_threads = torch.get_num_threads()
    old_tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    # "fp32" means fp32 on GPUs too: TF32 would change results between batch sizes.
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        return _run(cfg, log or (lambda message: None))
    finally:
        torch.set_num_threads(old_threads)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old_tf32


def _run(cfg: BenchmarkSettings, say: Callable[[str], None]) -> dict[str, Any]:
    from ovseg.api import create_pipeline  # deferred: ovseg.api imports every component

    device = benchmark_device(cfg.device)
    images = synthetic_images(cfg.num_images, cfg.sizes, cfg.seed)
    vocab = Vocabulary.create(vocabulary_names(cfg.num_classes))
    config = benchmark_config(
        cfg.model_name,
        cfg.dense_mode,
        short_side=cfg.short_side,
        max_long_side=cfg.max_long_side,
        crop=cfg.crop,
        stride=cfg.stride,
        batch_size=cfg.batch_size,
        templates=cfg.templates,
        logit_scale=cfg.logit_scale,
        device=str(device),
    )
    say(f"building {cfg.model_name} (random init, seed {cfg.seed}) on {device}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        pipeline = create_pipeline(config, vocabulary=vocab)
    backbone = pipeline.backbone
    if not backbone.is_vit:
        raise ConfigError(
            f"{cfg.model_name} is not a ViT; the baseline re-creates the ViT reference loop only."
        )
    say(f"text features of {len(vocab)} classes x {len(backbone.templates)} templates (twice)")
    start = time.perf_counter()
    baseline_model = backbone.model
    if cfg.precision != "fp32":  # the baseline keeps fp32 copies of the same weights
        baseline_model = copy.deepcopy(backbone.model)
        backbone.set_precision(cfg.precision)
    baseline = NaiveSlidingSegmenter(
        baseline_model,
        open_clip.get_tokenizer(cfg.model_name),
        vocab.names,
        resolve_templates(cfg.templates),
        backbone.mean.flatten().tolist(),
        backbone.std.flatten().tolist(),
        dense_mode=backbone.dense_mode,
        naclip_std=backbone.naclip_std,
        keep_residual=backbone.keep_residual,
        keep_ffn=backbone.keep_ffn,
        short_side=cfg.short_side,
        max_long_side=cfg.max_long_side,
        crop=cfg.crop,
        stride=cfg.stride,
        logit_scale=pipeline.logit_scale,
    )
    baseline_text_seconds = time.perf_counter() - start
    start = time.perf_counter()
    backbone.encode_text(vocab.queries)  # fills ovseg's text cache before any timing
    ovseg_text_seconds = time.perf_counter() - start

    def run_baseline() -> None:
        baseline.segment_all(images)

    def run_ovseg() -> None:
        pipeline.predict_batch(images, vocab)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for index in range(cfg.warmup):
        say(f"warm-up {index + 1}/{cfg.warmup}: baseline")
        run_baseline()
    memory_baseline = _memory_mark(device)
    for index in range(cfg.warmup):
        say(f"warm-up {index + 1}/{cfg.warmup}: ovseg")
        run_ovseg()
    memory_ovseg = _memory_mark(device)

    times: dict[str, list[float]] = {"baseline": [], "ovseg": []}
    cpu_times: dict[str, list[float]] = {"baseline": [], "ovseg": []}
    runners = {"baseline": run_baseline, "ovseg": run_ovseg}
    for index in range(cfg.repeats):
        order = ("baseline", "ovseg") if index % 2 == 0 else ("ovseg", "baseline")
        for name in order:
            seconds, cpu_seconds = _timed(runners[name], device)
            times[name].append(seconds)
            cpu_times[name].append(cpu_seconds)
            say(
                f"repeat {index + 1}/{cfg.repeats}: {name} {seconds:.3f} s "
                f"({cpu_seconds:.3f} CPU s)"
            )

    say("checking that both give the same scores and labels")
    check = check_agreement(
        pipeline, baseline, images, vocab, cfg.score_tol, strict=cfg.precision == "fp32"
    )

    def summary(name: str, memory: dict[str, float | None], text_seconds: float) -> dict:
        median = statistics.median(times[name])
        return {
            "seconds_median": round(median, 4),
            "seconds_all": [round(t, 4) for t in times[name]],
            "images_per_second": round(cfg.num_images / median, 4),
            "cpu_seconds_median": round(statistics.median(cpu_times[name]), 4),
            "cpu_seconds_all": [round(t, 4) for t in cpu_times[name]],
            "text_seconds": round(text_seconds, 3),
            **memory,
        }

    baseline_summary = summary("baseline", memory_baseline, baseline_text_seconds)
    ovseg_summary = summary("ovseg", memory_ovseg, ovseg_text_seconds)
    resize = (cfg.short_side, cfg.max_long_side)
    settings = cfg.to_dict()
    settings.update(
        logit_scale=pipeline.logit_scale,
        weights="random init (pretrained: null)",
        precision=cfg.precision,
        windows_total=sum(
            len(sliding_windows(*rescale_size(*img.shape[:2], *resize), cfg.crop, cfg.stride))
            for img in images
        ),
    )
    return {
        "settings": settings,
        "machine": machine_info(device),
        "baseline": {
            "description": "reference forward_slide: one window at a time, batch 1, fp32, no_grad",
            **baseline_summary,
        },
        "ovseg": {
            "description": f"create_pipeline(mapping) + predict_batch, batch_size {cfg.batch_size}",
            **ovseg_summary,
        },
        "speedup": round(
            ovseg_summary["images_per_second"] / baseline_summary["images_per_second"], 3
        ),
        "cpu_time_speedup": round(
            baseline_summary["cpu_seconds_median"] / max(ovseg_summary["cpu_seconds_median"], 1e-9),
            3,
        ),
        "check": check,
    }


def check_agreement(
    pipeline: Any,
    baseline: NaiveSlidingSegmenter,
    images: Sequence[np.ndarray],
    vocab: Vocabulary,
    score_tol: float = 1e-4,
    strict: bool = True,
) -> dict[str, Any]:
    """Compare a ``SemanticSegmenter``'s and the baseline's cosine maps and labels per image.

    Returns the largest score difference, the mismatched / unexplained pixel counts (see
    :func:`compare_outputs`), ``total_pixels`` and ``labels_equal``.

    With ``strict`` (same precision on both sides) a score difference above ``score_tol`` or
    an unexplained mismatch raises ``AssertionError``; otherwise they are only reported
    (``label_agreement``: the fraction of pixels with the same label).
    """
    # predict_batch is exactly encode_batch + predict per image; query_scores exposes the
    # cosine maps predict labels.
    features = pipeline.encode_batch(images)
    per_image = []
    for image, feats in zip(images, features):
        ours_scores = pipeline.query_scores(feats, vocab)
        ours_labels = pipeline.predict(feats, vocab).sem_seg
        base_scores, base_labels = baseline.segment(image)
        per_image.append(
            compare_outputs(base_scores, base_labels, ours_scores, torch.from_numpy(ours_labels))
        )
    result = {
        "max_abs_score_diff": max(item["max_abs_score_diff"] for item in per_image),
        "mismatched_pixels": sum(item["mismatched_pixels"] for item in per_image),
        "unexplained_mismatches": sum(item["unexplained_mismatches"] for item in per_image),
        "total_pixels": int(sum(img.shape[0] * img.shape[1] for img in images)),
    }
    result["labels_equal"] = result["mismatched_pixels"] == 0
    result["label_agreement"] = 1.0 - result["mismatched_pixels"] / result["total_pixels"]
    if not strict:
        return result
    if result["max_abs_score_diff"] > score_tol:
        raise AssertionError(
            f"score maps differ by {result['max_abs_score_diff']:.3g} > {score_tol:.3g}: the "
            "baseline and ovseg do not compute the same thing"
        )
    if result["unexplained_mismatches"]:
        raise AssertionError(
            f"{result['unexplained_mismatches']} pixels get different labels where the scores "
            "are not tied: the baseline and ovseg do not compute the same thing"
        )
    return result
