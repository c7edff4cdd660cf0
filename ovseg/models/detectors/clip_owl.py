"""``ClipOwlDetector``: OWL-ViT-style detection with ovseg's own open_clip CLIPs.

The image side is :class:`~ovseg.models.detectors.owl_heads.OwlClipModel` (a CLIP image tower
fine-tuned with OWL's box and class heads, trained by the ``OwlDetection`` task); the text side
is the same CLIP's frozen text tower (:class:`~ovseg.models.backbones.clip.ClipBackbone`'s
prompt-ensembled, L2-normalised embeddings), so any vocabulary can be queried. Every patch token
gives one box and one logit per query (score = ``sigmoid(logit)``), as OWL-ViT; the
:class:`~ovseg.models.detectors.base.OpenVocabularyDetector` base thresholds, labels and
suppresses them.

Input frame, as OWLv2's processor (:func:`~ovseg.models.detectors.owl_heads.owl_input`): the
image is padded at the bottom and right to a square of side ``max(H, W)``, resized to the
model's ``image_size``; a normalised box is scaled by ``max(H, W)`` on both axes (boxes reaching
into the padding are clipped to the image unless ``clip_boxes=False``).

Weights: ``pretrained`` names a packaged detector (``ovseg/model_zoo/embedded.py``, key
``("owl-" + model_name, tag)``), or ``checkpoint`` a trained ``OwlClipModel`` state dict (the
``OwlDetection`` task's ``model_final.safetensors``); ``clip_pretrained`` is the CLIP whose text
tower encodes the queries (the one the detector was trained from).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence

import numpy as np
import torch

from ovseg.errors import ConfigError, VocabularyError, WeightsNotFoundError
from ovseg.model_zoo.embedded import embedded_checkpoint
from ovseg.models.detectors.base import OpenVocabularyDetector
from ovseg.models.detectors.owl_heads import OwlClipModel, owl_input
from ovseg.registry import DETECTORS

__all__ = ["ClipOwlDetector", "detector_weights_key"]


def detector_weights_key(model_name: str, tag: str) -> tuple[str, str]:
    """The ``EMBEDDED_WEIGHTS`` key of the packaged detector ``tag`` on CLIP ``model_name``."""
    return f"owl-{model_name}", tag


@DETECTORS.register(aliases=("clip_owl",))
class ClipOwlDetector(OpenVocabularyDetector):
    """OWL-style detector on an open_clip CLIP (see the module docstring).

    Args:
        model_name: the open_clip architecture (e.g. ``ovseg-ViT-Ti-8``).
        pretrained: packaged detector tag (e.g. ``shapes``); or give ``checkpoint``.
        checkpoint: a trained ``OwlClipModel`` state dict file (overrides ``pretrained``).
        clip_pretrained: the CLIP weight tag (or file, ``clip_checkpoint``) of the text tower.
        image_size: the model's square input side (as trained).
        merge_class_token: as trained (see :class:`OwlClipModel`).
        templates: prompt templates of the queries (as trained; ``photo``).
        box_threshold: default ``box_threshold`` of :meth:`detect`.
        batch_size: images per model call.
        max_queries_per_call: queries per model call.
        clip_boxes: clip boxes to the image.
        max_detections: default cut per image (None: all).
        device: where the model runs.
    """

    default_box_threshold = 0.1

    def __init__(
        self,
        model_name: str = "ovseg-ViT-Ti-8",
        pretrained: str | None = "shapes",
        checkpoint: str | os.PathLike | None = None,
        clip_pretrained: str | None = "shapes",
        clip_checkpoint: str | os.PathLike | None = None,
        image_size: int = 64,
        merge_class_token: bool = False,
        templates: str | Sequence[str] = "photo",
        box_threshold: float = 0.1,
        batch_size: int = 8,
        max_queries_per_call: int = 256,
        clip_boxes: bool = True,
        max_detections: int | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__()
        from ovseg.models.backbones.clip import ClipBackbone
        from ovseg.weights import load_state_dict

        weights = checkpoint
        if weights is None:
            if not pretrained:
                raise WeightsNotFoundError(
                    "ClipOwlDetector needs its trained weights: pretrained=<packaged tag> (e.g. "
                    "shapes) or checkpoint=<OwlDetection model_final.safetensors>."
                )
            weights = embedded_checkpoint(*detector_weights_key(model_name, pretrained))
            if weights is None:
                raise WeightsNotFoundError(
                    f"No packaged OWL detector {pretrained!r} for {model_name}; train one with "
                    "the OwlDetection task (configs/detection/shapes_tiny_owl.yaml) and pass "
                    "checkpoint=<its model_final.safetensors>."
                )
        target = torch.device(device or "cpu")
        self.clip = ClipBackbone(
            model_name,
            pretrained=clip_pretrained,
            checkpoint=clip_checkpoint,
            templates=templates,
            device=target,
        )
        visual = copy.deepcopy(self.clip.model.visual).float()
        self.model = OwlClipModel(visual, self.clip.embed_dim, image_size, merge_class_token)
        state = load_state_dict(weights)
        expected = self.model.state_dict()
        state = {
            k: v.to(expected[k].dtype) if k in expected and v.is_floating_point() else v
            for k, v in state.items()
        }
        try:
            result = self.model.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            raise ConfigError(
                f"{weights} does not fit this detector ({model_name}, image_size {image_size}): "
                f"{str(exc).splitlines()[-1].strip()}"
            ) from exc
        if result.missing_keys or result.unexpected_keys:
            raise ConfigError(
                f"{weights} does not fit this detector: missing {result.missing_keys[:4]}, "
                f"unexpected {result.unexpected_keys[:4]}; check model_name and "
                "merge_class_token."
            )
        self.model.to(target).eval().requires_grad_(False)
        self.clip.model.visual = None  # the text tower alone is used from the CLIP
        self.default_box_threshold = float(box_threshold)
        self.batch_size = int(batch_size)
        self.max_queries_per_call = max(1, int(max_queries_per_call))
        self.clip_boxes = bool(clip_boxes)
        self.max_detections = max_detections

    @property
    def device(self) -> torch.device:
        return self.clip.device

    @property
    def text_length(self) -> int:
        """Tokens the text tower reads per prompt (start and end tokens included)."""
        return int(self.clip.model.context_length)

    def query_chunks(self, queries: Sequence[str]) -> list[list[int]]:
        encode = getattr(self.clip.tokenizer, "encode", None)
        if encode is not None:
            for query in queries:
                for template in self.clip.templates:
                    count = len(encode(template(query))) + 2
                    if count > self.text_length:
                        raise VocabularyError(
                            f"Query {query!r} is {count} tokens long with its prompt template but "
                            f"this CLIP reads at most {self.text_length} (start and end "
                            "included); shorten it (it is never cut)."
                        )
        step = self.max_queries_per_call
        return [list(range(i, min(i + step, len(queries)))) for i in range(0, len(queries), step)]

    def score_chunk(
        self, images: Sequence[np.ndarray], queries: Sequence[str]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        inputs, sides = [], []
        mean = self.clip.mean.flatten().tolist()
        std = self.clip.std.flatten().tolist()
        for image in images:
            pixels, side = owl_input(image, self.model.image_size, mean, std)
            inputs.append(pixels)
            sides.append(side)
        text = self.clip.encode_text(list(queries))
        logits, boxes = self.model(torch.stack(inputs).to(self.device), text)
        cx, cy, w, h = boxes.float().cpu().unbind(-1)
        corners = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)
        logits = logits.float().cpu()
        return [(corners[i] * sides[i], logits[i]) for i in range(len(images))]
