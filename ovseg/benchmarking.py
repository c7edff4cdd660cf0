"""Throughput of the semantic pipeline against a naive re-creation of the reference inference loop.

Two ways to segment the same images with the same open_clip model object and the same text
features:

* **naive baseline** (:class:`NaiveSlidingSegmenter`): what the reference code of SCLIP /
  ClearCLIP / NACLIP does in ``forward_slide``. Per image: resize, normalise, then one window at
  a time (a batch of 1, fp32, under ``torch.no_grad``): run the ViT with the modified last block,
  normalise the tokens, cosine with the text features, reshape to the token grid, upsample to the
  crop, zero-pad to the image and add into a sum map while a count map records the overlap; then
  divide, upsample to the original size, scale, softmax and argmax. Text features are computed
  once up front, one class at a time over all templates, as the reference does at init.
* **ovseg**: :func:`ovseg.create_pipeline` with a mapping config and
  :meth:`SemanticSegmenter.predict_batch` over the whole image list (windows of many images share
  backbone batches).

:func:`run_benchmark` warms both up, times ``repeats`` interleaved runs over all images (median),
then checks that both give the same labels: the score maps (cosine, ``(Q, H, W)`` at input size)
must agree to ``score_tol``, and a pixel may only get a different label where the two classes'
baseline scores are within twice the measured score difference (a float tie). The result is a
JSON-ready dict; :func:`format_markdown` renders it for humans; :func:`main` is the command line
(``tools/benchmark.py``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from ovseg.errors import ConfigError, OVSegError
from ovseg.fileio import atomic_write_text
from ovseg.inference.resize import rescale_size
from ovseg.inference.sliding import sliding_windows
from ovseg.models.backbones.dense_vit import vit_dense_tokens
from ovseg.models.backbones.templates import resolve_templates
from ovseg.vocab import Vocabulary
from ovseg.vocab.vocabulary import load_class_file

__all__ = [
    "DEFAULT_SIZES",
    "BenchmarkSettings",
    "NaiveSlidingSegmenter",
    "benchmark_config",
    "build_parser",
    "check_agreement",
    "compare_outputs",
    "format_markdown",
    "machine_info",
    "main",
    "parse_size",
    "peak_rss_mb",
    "run_benchmark",
    "synthetic_images",
    "vocabulary_names",
    "write_json",
]

# Image sizes (H x W) cycled over the synthetic images: mostly the common 480x640, plus sizes
# that resize to other window layouts (375x500 -> 336x448, 640x427 -> 504x336).
DEFAULT_SIZES = ("480x640", "375x500", "480x640", "640x427")


# --------------------------------------------------------------------------- inputs
def parse_size(text: str) -> tuple[int, int]:
    """``"480x640"`` -> ``(480, 640)`` (height, width)."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"Image size {text!r} is not HEIGHTxWIDTH (e.g. 480x640).") from None
    if height <= 0 or width <= 0:
        raise ConfigError(f"Image size {text!r} must have positive sides.")
    return height, width


def synthetic_images(
    num_images: int, sizes: Sequence[tuple[int, int]], seed: int = 0
) -> list[np.ndarray]:
    """Seeded ``(H, W, 3)`` uint8 RGB images; sizes are taken from ``sizes`` in turn.

    Each image is a smooth colour field (random 32-pixel cells, bilinearly upsampled) with a
    little pixel noise, so score maps have regions and edges rather than pure noise.
    """
    if num_images <= 0:
        raise ConfigError(f"--images must be positive, got {num_images}.")
    if not sizes:
        raise ConfigError("Give at least one image size.")
    generator = torch.Generator().manual_seed(seed)
    images = []
    for index in range(num_images):
        height, width = sizes[index % len(sizes)]
        cells = torch.rand(1, 3, height // 32 + 2, width // 32 + 2, generator=generator)
        field = F.interpolate(cells, size=(height, width), mode="bilinear", align_corners=False)
        noise = torch.rand(1, 3, height, width, generator=generator) * 0.1
        pixels = ((field * 0.9 + noise).clamp(0, 1) * 255).round().to(torch.uint8)
        images.append(pixels[0].permute(1, 2, 0).contiguous().numpy())
    return images


def vocabulary_names(num_classes: int) -> list[str]:
    """``num_classes`` distinct class names: ADE20K's display names, then ``class <i>``."""
    if num_classes <= 0:
        raise ConfigError(f"--classes must be positive, got {num_classes}.")
    names = list(dict.fromkeys(names[0] for names in load_class_file("ade.txt")))
    names += [f"class {i}" for i in range(len(names), num_classes)]
    return names[:num_classes]


def benchmark_config(
    model_name: str,
    dense_mode: str,
    *,
    short_side: int,
    max_long_side: int | None,
    crop: int,
    stride: int,
    batch_size: int,
    templates: str,
    logit_scale: float,
    device: str,
    precision: str = "fp32",
) -> dict[str, Any]:
    """The mapping given to :func:`ovseg.create_pipeline`: random-init fp32 weights, slide mode,
    no PAMR and no thresholds (plain argmax, as the baseline)."""
    return {
        "pipeline": {
            "type": "SemanticSegmenter",
            "backbone": {
                "type": "ClipBackbone",
                "model_name": model_name,
                "pretrained": None,
                "dense_mode": dense_mode,
                "templates": templates,
                "precision": precision,
                "device": device,
            },
            "logit_scale": logit_scale,
            "inference": {
                "short_side": short_side,
                "max_long_side": max_long_side,
                "mode": "slide",
                "crop_size": crop,
                "stride": stride,
                "batch_size": batch_size,
            },
            "postprocess": {
                "prob_threshold": 0.0,
                "area_threshold": 0.0,
                "background_index": None,
                "pamr": None,
            },
        }
    }


# --------------------------------------------------------------------------- baseline
class NaiveSlidingSegmenter:
    """The reference ``forward_slide`` loop: one window of one image at a time, fp32.

    Args:
        model: the open_clip CLIP model (a ViT image tower), fp32, in eval mode.
        tokenizer: its open_clip tokenizer.
        class_names: one name per class (no synonyms).
        templates: prompt templates (callables ``name -> prompt``).
        mean, std: per-channel normalisation of RGB in [0, 1] (3 floats each).
        dense_mode, naclip_std, keep_residual, keep_ffn: the last-block variant
            (see :mod:`ovseg.models.backbones.dense_vit`).
        short_side, max_long_side, crop, stride: test-time resize and window geometry.
        logit_scale: multiplier of the cosine scores before the softmax.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Callable[[list[str]], torch.Tensor],
        class_names: Sequence[str],
        templates: Sequence[Callable[[str], str]],
        mean: Sequence[float],
        std: Sequence[float],
        *,
        dense_mode: str,
        naclip_std: float = 5.0,
        keep_residual: bool | None = None,
        keep_ffn: bool | None = None,
        short_side: int | None,
        max_long_side: int | None,
        crop: int,
        stride: int,
        logit_scale: float,
    ) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.dense_mode = dense_mode
        self.naclip_std = naclip_std
        self.keep_residual = keep_residual
        self.keep_ffn = keep_ffn
        self.short_side = short_side
        self.max_long_side = max_long_side
        self.crop = crop
        self.stride = stride
        self.logit_scale = logit_scale
        self.mean = torch.tensor(list(mean), device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(list(std), device=self.device).view(1, 3, 1, 1)
        self.text_features = self._text_features(tokenizer, class_names, templates)

    @torch.no_grad()
    def _text_features(self, tokenizer, class_names, templates) -> torch.Tensor:
        """``(Q, D)`` fp32: per class, all templates encoded, normalised, averaged, renormalised."""
        features = []
        for name in class_names:
            tokens = tokenizer([template(name) for template in templates]).to(self.device)
            embeds = self.model.encode_text(tokens).float()
            embeds = embeds / embeds.norm(dim=-1, keepdim=True)
            mean = embeds.mean(dim=0)
            features.append(mean / mean.norm())
        return torch.stack(features)

    def _window_logits(self, crop: torch.Tensor) -> torch.Tensor:
        """Normalised crop ``(1, 3, h, w)`` -> cosine scores ``(1, Q, h, w)`` upsampled to it."""
        _, dense = vit_dense_tokens(
            self.model.visual,
            crop,
            self.dense_mode,
            self.naclip_std,
            self.keep_residual,
            self.keep_ffn,
        )
        batch, dim, grid_h, grid_w = dense.shape
        tokens = dense.flatten(2).transpose(1, 2)  # (1, h*w, D), as the reference's patch tokens
        tokens = tokens / tokens.norm(dim=-1, keepdim=True)
        logits = tokens @ self.text_features.T
        logits = logits.permute(0, 2, 1).reshape(batch, -1, grid_h, grid_w)
        return F.interpolate(logits, size=crop.shape[-2:], mode="bilinear", align_corners=False)

    @torch.no_grad()
    def segment(self, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """HWC uint8 RGB -> ``(scores (Q, H, W) float32 cosine, labels (H, W) int64)``.

        ``scores`` are before the logit scale, at input size, on the model's device; ``labels``
        are on the CPU.
        """
        pixels = torch.from_numpy(image).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        height, width = pixels.shape[-2:]
        size = rescale_size(height, width, self.short_side, self.max_long_side)
        if size != (height, width):
            pixels = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False)
        img = (pixels - self.mean) / self.std

        h_img, w_img = size
        num_queries = self.text_features.shape[0]
        preds = img.new_zeros((1, num_queries, h_img, w_img))
        count = img.new_zeros((1, 1, h_img, w_img))
        rows = max(h_img - self.crop + self.stride - 1, 0) // self.stride + 1
        cols = max(w_img - self.crop + self.stride - 1, 0) // self.stride + 1
        for row in range(rows):
            for col in range(cols):
                y2 = min(row * self.stride + self.crop, h_img)
                x2 = min(col * self.stride + self.crop, w_img)
                y1, x1 = max(y2 - self.crop, 0), max(x2 - self.crop, 0)
                logits = self._window_logits(img[:, :, y1:y2, x1:x2])
                preds += F.pad(logits, (x1, w_img - x2, y1, h_img - y2))
                count[:, :, y1:y2, x1:x2] += 1
        preds = preds / count
        scores = F.interpolate(preds, size=(height, width), mode="bilinear", align_corners=False)
        probs = torch.softmax(scores[0] * self.logit_scale, dim=0)
        labels = probs.argmax(dim=0)
        return scores[0], labels.cpu()

    def segment_all(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Label maps ``(H, W)`` int64 of every image, one image after the other."""
        return [self.segment(image)[1].numpy() for image in images]


# --------------------------------------------------------------------------- checks
def compare_outputs(
    baseline_scores: torch.Tensor,
    baseline_labels: torch.Tensor,
    ovseg_scores: torch.Tensor,
    ovseg_labels: torch.Tensor,
) -> dict[str, float | int]:
    """Agreement of one image's outputs.

    Args:
        baseline_scores, ovseg_scores: ``(Q, H, W)`` float cosine scores at input size.
        baseline_labels, ovseg_labels: ``(H, W)`` integer labels in ``[0, Q)``.

    Returns ``max_abs_score_diff``; ``mismatched_pixels``; ``unexplained_mismatches``: pixels
    whose labels differ although the baseline's scores of the two labels differ by more than
    ``2 * max_abs_score_diff + 1e-6`` (a float tie cannot explain them).
    """
    baseline_scores = baseline_scores.float().cpu()
    ovseg_scores = ovseg_scores.float().cpu()
    if baseline_scores.shape != ovseg_scores.shape:
        raise AssertionError(
            f"score maps differ in shape: {tuple(baseline_scores.shape)} vs "
            f"{tuple(ovseg_scores.shape)}"
        )
    diff = float((baseline_scores - ovseg_scores).abs().max())
    base = torch.as_tensor(baseline_labels).long().cpu()
    ours = torch.as_tensor(ovseg_labels).long().cpu()
    mismatch = base != ours
    unexplained = 0
    if bool(mismatch.any()):
        base_pick = baseline_scores.gather(0, base[None])[0]
        ours_pick = baseline_scores.gather(0, ours[None])[0]
        gap = (base_pick - ours_pick).abs()
        # Scores that moved by at most `diff` can swap only classes within 2 * diff of each
        # other; 1e-6 covers rounding in the scaled softmax that picks the label.
        unexplained = int((mismatch & (gap > 2 * diff + 1e-6)).sum())
    return {
        "max_abs_score_diff": diff,
        "mismatched_pixels": int(mismatch.sum()),
        "unexplained_mismatches": unexplained,
    }


# --------------------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far, in MiB (None where unavailable)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def machine_info(device: torch.device) -> dict[str, Any]:
    """CPU model and cores, torch version and threads, the device (and its name on CUDA)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "open_clip": getattr(open_clip, "__version__", "unknown"),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# --------------------------------------------------------------------------- runner
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


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
    templates: str = "imagenet80"
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
    unknown = sorted(set(settings) - set(BenchmarkSettings.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"Unknown benchmark settings {unknown}.")
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

    device = torch.device(cfg.device)
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
    runners = {"baseline": run_baseline, "ovseg": run_ovseg}
    for index in range(cfg.repeats):
        order = ("baseline", "ovseg") if index % 2 == 0 else ("ovseg", "baseline")
        for name in order:
            seconds = _timed(runners[name], device)
            times[name].append(seconds)
            say(f"repeat {index + 1}/{cfg.repeats}: {name} {seconds:.3f} s")

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


# --------------------------------------------------------------------------- reporting
def format_markdown(result: dict[str, Any]) -> str:
    """A markdown report of :func:`run_benchmark`'s result: the table, the check, the machine."""
    settings, machine, check = result["settings"], result["machine"], result["check"]

    def memory(part: dict[str, Any]) -> str:
        text = "n/a" if part.get("peak_rss_mb") is None else f"{part['peak_rss_mb']:.0f}"
        if part.get("peak_cuda_mb") is not None:
            text += f" (CUDA {part['peak_cuda_mb']:.0f})"
        return text

    lines = [
        f"### {settings['model_name']} ({settings['dense_mode']}), {settings['num_images']} images "
        f"({', '.join(sorted(set(settings['sizes'])))}), short side {settings['short_side']}, "
        f"windows {settings['crop']} / stride {settings['stride']} "
        f"({settings['windows_total']} in all), {settings['num_classes']} classes",
        "",
        "| pipeline | images/s | median s (all images) | runs (s) | peak RSS MiB |",
        "|---|---:|---:|---|---:|",
    ]
    for key, label in (
        ("baseline", "naive baseline (one window at a time, batch 1, fp32)"),
        ("ovseg", f"ovseg predict_batch (batch {settings['batch_size']}, {settings['precision']})"),
    ):
        part = result[key]
        runs = ", ".join(f"{t:.3f}" for t in part["seconds_all"])
        lines.append(
            f"| {label} | {part['images_per_second']:.3f} | {part['seconds_median']:.3f} | "
            f"{runs} | {memory(part)} |"
        )
    lines += [
        "",
        f"**ovseg / baseline: {result['speedup']:.2f}x** images/s.",
        "",
        f"Check: max |score difference| {check['max_abs_score_diff']:.2e} (cosine); labels "
        + (
            "identical on every pixel."
            if check["labels_equal"]
            else f"differ on {check['mismatched_pixels']} of {check['total_pixels']} pixels, "
            + (
                "all float ties."
                if settings["precision"] == "fp32"
                else f"agreement {100 * check['label_agreement']:.2f}% "
                f"({settings['precision']} against fp32)."
            )
        ),
        "Peak RSS is the process peak after the baseline warm-up (baseline row) and after the "
        "ovseg warm-up (ovseg row; it includes the baseline's peak).",
        "",
        f"Machine: {machine['cpu']}, {machine['cpu_usable']} usable of {machine['cpu_count']} "
        f"CPUs, torch {machine['torch']} (threads: {machine['torch_threads']}), open_clip "
        f"{machine['open_clip']}, device {machine['device']}"
        + (f" ({machine['gpu']})" if machine.get("gpu") else "")
        + ".",
    ]
    if result.get("command"):
        lines.append(f"Command: `{result['command']}`")
    return "\n".join(lines) + "\n"


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically (temporary name, then rename)."""
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")


# --------------------------------------------------------------------------- command line
def build_parser(prog: str = "tools/benchmark.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Images per second of ovseg's semantic pipeline against a naive baseline "
        "(the reference forward_slide loop: one window, one image at a time, fp32), measured in "
        "the same run on the same random-init open_clip model; also checks both give the same "
        "labels.",
    )
    parser.add_argument("--model", default="ViT-B-16", help="open_clip ViT architecture")
    parser.add_argument(
        "--mode",
        default="sclip",
        choices=["vanilla", "maskclip", "sclip", "clearclip", "naclip"],
        help="dense mode of the last block",
    )
    parser.add_argument("--images", type=int, default=8, help="number of synthetic images")
    parser.add_argument(
        "--sizes",
        default=",".join(DEFAULT_SIZES),
        help="image sizes HEIGHTxWIDTH, comma separated, used in turn",
    )
    parser.add_argument("--short-side", type=int, default=336)
    parser.add_argument("--max-long-side", type=int, default=2048)
    parser.add_argument("--crop", type=int, default=224, help="window size (pixels)")
    parser.add_argument("--stride", type=int, default=112, help="window stride (pixels)")
    parser.add_argument("--batch-size", type=int, default=16, help="ovseg windows per batch")
    parser.add_argument("--classes", type=int, default=21, help="vocabulary size")
    parser.add_argument("--templates", default="imagenet80", help="prompt template set")
    parser.add_argument("--logit-scale", type=float, default=40.0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and images")
    parser.add_argument(
        "--score-tol", type=float, default=1e-4, help="largest allowed cosine score difference"
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "fp16"],
        help="ovseg's backbone precision (the baseline stays fp32; labels are then compared, "
        "not required to match)",
    )
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "tools/benchmark.py") -> int:
    """Run the benchmark from the command line; prints a markdown table, writes ``--out``."""
    args = build_parser(prog).parse_args(argv)
    shown = list(sys.argv[1:] if argv is None else argv)
    command = shlex.join(["python", prog, *shown])

    def log(message: str) -> None:
        if not args.quiet:
            print(f"[benchmark] {message}", file=sys.stderr, flush=True)

    try:
        result = run_benchmark(
            args.model,
            args.mode,
            num_images=args.images,
            sizes=[parse_size(part) for part in args.sizes.split(",") if part.strip()],
            short_side=args.short_side,
            max_long_side=args.max_long_side,
            crop=args.crop,
            stride=args.stride,
            batch_size=args.batch_size,
            num_classes=args.classes,
            templates=args.templates,
            logit_scale=args.logit_scale,
            device=args.device,
            repeats=args.repeats,
            warmup=args.warmup,
            seed=args.seed,
            threads=args.threads,
            score_tol=args.score_tol,
            precision=args.precision,
            log=log,
        )
    except OVSegError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result["command"] = command
    print(format_markdown(result))
    if args.out:
        write_json(args.out, result)
        log(f"wrote {args.out}")
    return 0
