"""SAM benchmarks in one run: image encoder, automatic proposals, referring and instance pipelines.

Each section times ovseg against a reference on the same weights and images, interleaving the
two in every repeat (median reported), and checks that they agree:

* **encoder**: ``SamDecoder.embed_batch`` (``image_batch_size`` images per call, ``precision``)
  against ``segment_anything.SamPredictor.set_image``, one image at a time, float32;
  agreement: the largest feature difference relative to the largest feature.
* **proposals**: ``SamDecoder.generate`` against ``SamAutomaticMaskGenerator.generate``
  (both embed the image); agreement: identical masks, in order.
* **referring**: ``ReferringSegmenter.predict_batch`` against the same pipeline run image by
  image with segment-anything's ``SamPredictor`` for SAM (its CLIP stages are ovseg's, as
  the reference has none); agreement: IoU of the masks.
* **instance**: ``InstanceSegmenter.predict_batch`` against, per image,
  ``SamAutomaticMaskGenerator.generate`` and the pipeline's naming of those masks
  (``name_masks``); agreement: identical instances (masks and labels).

The default is the embedded ``shapes-tiny`` preset's packaged tiny CLIP and SAM on synthetic
scenes (minutes on two CPU cores); ``--model vit_h --pretrained none`` builds a random-init
official SAM and ``--clip-model ViT-B-16`` a random-init CLIP, for timing at real sizes.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from ovseg.benchmarks.inputs import synthetic_images
from ovseg.benchmarks.machine import benchmark_device, machine_info, peak_rss_mb
from ovseg.errors import ConfigError

SECTIONS = ("encoder", "proposals", "referring", "instance")
PHRASE = "the red circle"
VOCABULARY = ["red circle", "blue square", "green triangle", "yellow star", "sand", "grass"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def scenes(count: int, size: int, seed: int) -> list[np.ndarray]:
    """``count`` synthetic shape scenes ``(size, size, 3)`` uint8 (what the tiny SAM knows)."""
    from ovseg.data.synthetic import SyntheticSceneDataset

    data = SyntheticSceneDataset(num=count, seed=seed, split="val", image_size=size)
    return [sample["image"] for sample in data]


class PredictorDecoder:
    """segment-anything's ``SamPredictor`` and ``SamAutomaticMaskGenerator`` behind the calls
    ovseg's SAM + CLIP pipelines make of their decoder (for the reference loops).

    Images are embedded one at a time (``set_image``); ``predict`` prompts the last set image,
    so the reference runs image by image.
    """

    def __init__(self, sam: torch.nn.Module, multimask: bool = True) -> None:
        from segment_anything import SamPredictor

        self.model = sam
        self.multimask = multimask
        self.predictor = SamPredictor(sam)
        self.image_batch_size = 1

    def embed_batch(self, images: Sequence[np.ndarray]) -> list[Any]:
        from ovseg.models.decoders.prompted import ImageEmbedding

        embeddings = []
        for image in images:
            self.predictor.set_image(image)
            embeddings.append(
                ImageEmbedding(
                    features=self.predictor.features,
                    input_size=tuple(self.predictor.input_size),
                    original_size=tuple(self.predictor.original_size),
                )
            )
        return embeddings

    def predict(self, point_coords, point_labels, multimask=None, embedding=None, **_: Any):
        from ovseg.models.decoders.prompted import MaskPrediction

        if point_coords is None or len(point_coords) != 1:
            raise ConfigError("the reference decoder takes one prompt of points at a time")
        masks, iou, low_res = self.predictor.predict(
            np.asarray(point_coords[0]),
            np.asarray(point_labels[0]),
            multimask_output=self.multimask if multimask is None else bool(multimask),
        )
        return MaskPrediction(
            masks=torch.from_numpy(masks)[None],
            iou_scores=torch.from_numpy(iou)[None],
            low_res_logits=torch.from_numpy(low_res)[None],
        )

    def generate(self, image: np.ndarray, embedding: Any = None, **settings: Any):
        """Proposals of ``SamAutomaticMaskGenerator`` (binary masks) as ``masks`` ``(M, H, W)``
        bool and ``iou_scores`` ``(M,)``; it embeds the image itself."""
        from segment_anything import SamAutomaticMaskGenerator

        generator = SamAutomaticMaskGenerator(self.model, output_mode="binary_mask", **settings)
        found = generator.generate(image)
        height, width = image.shape[:2]
        masks = (
            torch.from_numpy(np.stack([item["segmentation"] for item in found]))
            if found
            else torch.zeros((0, height, width), dtype=torch.bool)
        )
        ious = torch.tensor([float(item["predicted_iou"]) for item in found], dtype=torch.float32)
        return SimpleNamespace(masks=masks, iou_scores=ious)


def _timed_pair(
    name: str,
    reference: Callable[[], Any],
    ours: Callable[[], Any],
    repeats: int,
    warmup: int,
    device: torch.device,
    say: Callable[[str], None],
) -> tuple[dict[str, Any], Any, Any]:
    """Warm both up, then ``repeats`` interleaved timed runs; returns the times and the last
    outputs of each."""
    outputs: dict[str, Any] = {}
    runners = {"reference": reference, "ovseg": ours}
    for index in range(warmup):
        for key, fn in runners.items():
            say(f"{name}: warm-up {index + 1}/{warmup} {key}")
            outputs[key] = fn()
    times: dict[str, list[float]] = {"reference": [], "ovseg": []}
    for index in range(repeats):
        order = ("reference", "ovseg") if index % 2 == 0 else ("ovseg", "reference")
        for key in order:
            _sync(device)
            start = time.perf_counter()
            outputs[key] = runners[key]()
            _sync(device)
            seconds = time.perf_counter() - start
            times[key].append(seconds)
            say(f"{name}: repeat {index + 1}/{repeats} {key} {seconds:.3f} s")
    ref_s, ours_s = statistics.median(times["reference"]), statistics.median(times["ovseg"])
    timing = {
        "reference_seconds": round(ref_s, 4),
        "ovseg_seconds": round(ours_s, 4),
        "reference_seconds_all": [round(t, 4) for t in times["reference"]],
        "ovseg_seconds_all": [round(t, 4) for t in times["ovseg"]],
        "speedup": round(ref_s / ours_s, 3),
    }
    return timing, outputs["reference"], outputs["ovseg"]


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _build(
    model: str,
    pretrained: str | None,
    clip_model: str | None,
    device: torch.device,
    precision: str,
    image_batch_size: int,
    compile_encoder: bool,
    attention: str,
    proposals: dict[str, Any],
    seed: int,
) -> SimpleNamespace:
    """The SAM model, ovseg's decoder on it and the two pipelines (the preset's stages)."""
    from ovseg.api import build_pipeline_config
    from ovseg.config import to_container
    from ovseg.models.decoders.sam import SamDecoder
    from ovseg.models.decoders.sam_build import build_sam
    from ovseg.models.decoders.sam_weights import resolve_sam_checkpoint
    from ovseg.registry import PIPELINES

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if pretrained is None:
            sam = build_sam(model, device=device)
        else:
            sam = build_sam(model, resolve_sam_checkpoint(model, None, pretrained), device=device)
    decoder = SamDecoder.from_model(
        sam,
        precision=precision,
        image_batch_size=image_batch_size,
        compile=compile_encoder,
        attention=attention,
    )
    raw = to_container(build_pipeline_config("shapes-tiny", task="instance"))["pipelines"]
    raw["instance"] = raw.get("instance_sam", raw["instance"])  # SAM's automatic proposals
    raw["referring"] = raw.get("referring_sasp", raw["referring"])  # similarity points
    sections = {}
    for task in ("referring", "instance"):
        section = copy.deepcopy(raw[task])
        section["decoder"] = decoder
        section["backbone"]["device"] = str(device)
        if clip_model is not None:
            section["backbone"].update(model_name=clip_model, pretrained=None)
        if task == "instance":
            section["proposals"] = {**section["proposals"], **proposals}
        sections[task] = section
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        referring = PIPELINES.build(sections["referring"])
        sections["instance"]["backbone"] = referring.backbone  # one CLIP for both
        instance = PIPELINES.build(sections["instance"])
    return SimpleNamespace(sam=sam, decoder=decoder, referring=referring, instance=instance)


def run_sam_benchmark(
    model: str = "ovseg-sam-tiny",
    pretrained: str | None = "shapes",
    *,
    clip_model: str | None = None,
    sections: Sequence[str] = SECTIONS,
    num_images: int = 4,
    image_size: int = 128,
    sizes: Sequence[tuple[int, int]] | None = None,
    points_per_side: int = 32,
    points_per_batch: int = 64,
    pred_iou_thresh: float = 0.5,
    stability_score_thresh: float = 0.2,
    device: str = "cpu",
    precision: str = "fp32",
    image_batch_size: int = 2,
    compile_encoder: bool = False,
    attention: str = "native",
    repeats: int = 3,
    warmup: int = 1,
    threads: int | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the chosen ``sections`` (see the module docstring); a JSON-ready dict with one entry
    per section (times, ``speedup``, agreement) and ``speedup`` by section.

    Raises:
        ConfigError: an unknown section, a bad count, or a device this machine lacks.
    """
    say = log or (lambda message: None)
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown or not sections:
        raise ConfigError(
            f"sections are {', '.join(SECTIONS)}; got {', '.join(unknown) or 'none'}."
        )
    if num_images < 1 or repeats < 1 or warmup < 0:
        raise ConfigError("images and repeats must be positive, warmup >= 0.")
    dev = benchmark_device(device)
    if threads:
        torch.set_num_threads(int(threads))
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    images = (
        synthetic_images(num_images, sizes, seed) if sizes else scenes(num_images, image_size, seed)
    )
    proposals = {
        "points_per_side": points_per_side,
        "points_per_batch": points_per_batch,
        "pred_iou_thresh": pred_iou_thresh,
        "stability_score_thresh": stability_score_thresh,
    }
    say(f"building SAM {model} ({pretrained or 'random init'}) and the pipelines on {dev}")
    built = _build(
        model, pretrained, clip_model, dev, precision, image_batch_size, compile_encoder,
        attention, proposals, seed,
    )  # fmt: skip
    reference = PredictorDecoder(built.sam)
    results: dict[str, Any] = {}
    strict = precision == "fp32" and attention == "native"

    with torch.inference_mode():
        if "encoder" in sections:
            timing, ref, ours = _timed_pair(
                "encoder",
                lambda: reference.embed_batch(images),
                lambda: built.decoder.embed_batch(images),
                repeats, warmup, dev, say,
            )  # fmt: skip
            diff = max(float((a.features - b.features).abs().max()) for a, b in zip(ref, ours))
            scale = max(float(a.features.abs().max()) for a in ref)
            results["encoder"] = {
                **timing,
                "reference": "segment_anything.SamPredictor.set_image, one image at a time, fp32",
                "ovseg": (
                    f"SamDecoder.embed_batch ({image_batch_size} per call, {precision}, "
                    f"{attention} attention)"
                ),
                "max_feature_diff_relative": diff / max(scale, 1e-12),
            }
        if "proposals" in sections:
            timing, ref, ours = _timed_pair(
                "proposals",
                lambda: [reference.generate(image, **proposals) for image in images],
                lambda: [built.decoder.generate(image, **proposals) for image in images],
                repeats, warmup, dev, say,
            )  # fmt: skip
            same = total = 0
            for theirs, mine in zip(ref, ours, strict=True):
                total += max(len(theirs.masks), len(mine.masks))
                if len(theirs.masks) == len(mine.masks):
                    same += int(
                        sum(torch.equal(a.cpu(), b.cpu()) for a, b in zip(theirs.masks, mine.masks))
                    )
            results["proposals"] = {
                **timing,
                "reference": "segment_anything.SamAutomaticMaskGenerator.generate",
                "ovseg": "SamDecoder.generate",
                "masks": total,
                "identical_masks": same,
            }
        if "referring" in sections:
            ref_pipeline = copy.copy(built.referring)
            ref_pipeline.decoder = reference
            timing, ref, ours = _timed_pair(
                "referring",
                lambda: [ref_pipeline(image, PHRASE) for image in images],
                lambda: built.referring.predict_batch(images, PHRASE),
                repeats, warmup, dev, say,
            )  # fmt: skip
            ious = [_mask_iou(a.mask, b.mask) for a, b in zip(ref, ours, strict=True)]
            results["referring"] = {
                **timing,
                "reference": "the pipeline image by image with segment_anything.SamPredictor",
                "ovseg": "ReferringSegmenter.predict_batch",
                "phrase": PHRASE,
                "mask_iou_min": min(ious),
                "mask_iou_mean": sum(ious) / len(ious),
                "identical_masks": sum(
                    bool(np.array_equal(a.mask, b.mask)) for a, b in zip(ref, ours)
                ),
            }
        if "instance" in sections:
            from ovseg.pipelines.base import SamClipImage
            from ovseg.vocab import Vocabulary

            vocab = Vocabulary.create(VOCABULARY)
            settings = built.instance.proposal_settings

            def reference_instances() -> list[Any]:
                found = []
                for image in images:
                    encoded = SamClipImage(image=image, embedding=None)
                    props = reference.generate(image, **settings)
                    found.append(
                        built.instance.name_masks(encoded, props.masks, props.iou_scores, vocab)
                    )
                return found

            timing, ref, ours = _timed_pair(
                "instance",
                reference_instances,
                lambda: built.instance.predict_batch(images, vocab),
                repeats, warmup, dev, say,
            )  # fmt: skip
            total = sum(max(len(a), len(b)) for a, b in zip(ref, ours))
            same = sum(
                int(np.array_equal(a.labels, b.labels))
                * sum(bool(np.array_equal(x, y)) for x, y in zip(a.masks, b.masks))
                for a, b in zip(ref, ours)
                if len(a) == len(b)
            )
            results["instance"] = {
                **timing,
                "reference": "per image: SamAutomaticMaskGenerator.generate + name_masks",
                "ovseg": "InstanceSegmenter.predict_batch",
                "instances": total,
                "identical_instances": same,
            }
    for name, part in results.items():
        part["agreement_required"] = strict and name != "encoder"
    return {
        "settings": {
            "model": model,
            "pretrained": pretrained,
            "clip_model": clip_model or "ovseg-ViT-Ti-8 (shapes)",
            "num_images": num_images,
            "image_sizes": sorted({f"{im.shape[0]}x{im.shape[1]}" for im in images}),
            "precision": precision,
            "image_batch_size": image_batch_size,
            "attention": attention,
            "compile": compile_encoder,
            "repeats": repeats,
            "warmup": warmup,
            **proposals,
        },
        "sections": results,
        "speedup": {name: part["speedup"] for name, part in results.items()},
        "peak_rss_mb": peak_rss_mb(),
        "machine": machine_info(dev),
    }


def format_markdown(result: dict[str, Any]) -> str:
    """One table row per section: reference and ovseg seconds (all images), ratio, agreement."""
    settings = result["settings"]
    lines = [
        f"### SAM {settings['model']} ({settings['pretrained'] or 'random init'}), "
        f"{settings['num_images']} images ({', '.join(settings['image_sizes'])}), "
        f"{settings['precision']}, image batch {settings['image_batch_size']}",
        "",
        "| section | reference | reference s | ovseg s | ratio | agreement |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for name, part in result["sections"].items():
        if name == "encoder":
            agree = f"features within {part['max_feature_diff_relative']:.1e} (relative)"
        elif name == "proposals":
            agree = f"{part['identical_masks']} of {part['masks']} masks identical"
        elif name == "referring":
            agree = f"{part['identical_masks']} masks identical, IoU min {part['mask_iou_min']:.4f}"
        else:
            agree = f"{part['identical_instances']} of {part['instances']} instances identical"
        lines.append(
            f"| {name} | {part['reference']} | {part['reference_seconds']:.3f} | "
            f"{part['ovseg_seconds']:.3f} | {part['speedup']:.2f}x | {agree} |"
        )
    machine = result["machine"]
    lines.append(
        f"\nMachine: {machine['cpu']}, torch {machine['torch']} ({machine['torch_threads']} "
        f"threads), device {machine['device']}"
        + (f" ({machine['gpu']})" if machine.get("gpu") else "")
    )
    if result.get("command"):
        lines.append(f"Command: `{result['command']}`")
    return "\n".join(lines) + "\n"
