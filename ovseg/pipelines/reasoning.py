"""``ReasoningSegmenter``: a question about an image -> a generated answer and its masks (READ).

Flow for one image (HWC uint8 RGB, input-image pixels) and one question:

1. :meth:`encode` prepares the image once (the vision tower's centre crop, SAM's padded input)
   and, on first use, caches SAM's image embedding, so several questions about one image pay
   for SAM's encoder once;
2. the question becomes LLaVA v1's prompt (``<image>\\n{question}``, ``USER:`` /
   ``ASSISTANT:``; :mod:`ovseg.models.multimodal.conversation`), too long a question being cut
   with a warning;
3. :meth:`ReadModel.generate <ovseg.models.multimodal.read.ReadModel.generate>` answers greedily;
   each ``[SEG]`` of the answer becomes a mask through its SasP points and SAM;
4. the result (:class:`~ovseg.structures.ReasoningResult`) holds the answer, the masks
   (``(K, H, W)``, none when the answer has no ``[SEG]``), SAM's scores and the points.

Built from a released folder (``weights`` or the Hugging Face cache's ``hf_repo``, see
:mod:`ovseg.models.multimodal.release`) or from a ready ``model`` and ``tokenizer``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ovseg.errors import ConfigError, PromptError
from ovseg.models.multimodal.processing import ReadImage
from ovseg.pipelines.base import EncodedImage, PromptablePipeline, decode_image
from ovseg.registry import PIPELINES, POINT_SELECTORS
from ovseg.structures import ReasoningResult

__all__ = ["ReasoningImage", "ReasoningSegmenter"]

PRECISIONS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@dataclass(frozen=True, eq=False)
class ReasoningImage(EncodedImage):
    """An image prepared for READ: ``prepared`` holds the tower crop and SAM's input."""

    prepared: ReadImage | None = None


@PIPELINES.register()
class ReasoningSegmenter(PromptablePipeline):
    """Reasoning segmentation with READ (see the module docstring).

    Args:
        weights: local READ folder (None: the Hugging Face cache's snapshot of ``hf_repo``).
        hf_repo: the model's Hugging Face repository, where to look and what to name when the
            folder is missing.
        vision_tower: local CLIP folder, ``"open_clip:MODEL@TAG"``, or None for the cache's
            snapshot of ``vision_tower_repo``.
        vision_tower_repo: the tower's repository (READ: openai/clip-vit-large-patch14-336).
        sam_architecture: SAM's architecture (default: from the weights).
        selector: SasP selector or its config (default: the folder's ``ovseg_sasp_selector``,
            the one the model was trained with; without it READ's ``SasPSelector(compat="read")``).
        max_new_tokens: longest answer (a per-call setting).
        max_length: longest prompt in text tokens, the image placeholder counting one (READ's
            ``model_max_length``: 512); longer questions are cut with a warning.
        precision: ``fp32``, ``bf16`` or ``fp16``.
        device: where the model runs.
        model, tokenizer: a ready :class:`~ovseg.models.multimodal.read.ReadModel` and its
            tokenizer instead of a folder.
    """

    encoded_type = ReasoningImage
    query_name = "question"

    def __init__(
        self,
        weights: str | None = None,
        hf_repo: str | None = None,
        vision_tower: str | None = None,
        vision_tower_repo: str | None = None,
        sam_architecture: Any = None,
        selector: Any = None,
        max_new_tokens: int = 512,
        max_length: int | None = 512,
        precision: str = "fp32",
        device: str | None = None,
        model: Any = None,
        tokenizer: Any = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {sorted(PRECISIONS)}, not {precision!r}.")
        if int(max_new_tokens) < 1:
            raise ConfigError(f"max_new_tokens must be at least 1, got {max_new_tokens}.")
        if (model is None) != (tokenizer is None):
            raise ConfigError("Give both model and tokenizer, or neither (to load weights).")
        import torch

        dtype = getattr(torch, PRECISIONS[precision])
        if model is None:
            model, tokenizer = self._load(
                weights, hf_repo, vision_tower, vision_tower_repo, sam_architecture, device, dtype
            )
        self.model = model.to(device=device or model.device, dtype=dtype).eval()
        self.tokenizer = tokenizer
        if selector is not None:
            self.model.selector = POINT_SELECTORS.build_or_pass(selector, "point selector")
        self.max_new_tokens = int(max_new_tokens)
        self.max_length = None if max_length is None else int(max_length)
        self.meta: dict[str, Any] = {}
        self.config: Any = None

    @staticmethod
    def _load(weights, hf_repo, vision_tower, vision_tower_repo, sam_architecture, device, dtype):
        import json

        from ovseg.errors import WeightsNotFoundError
        from ovseg.models.multimodal.checkpoint import load_read_model
        from ovseg.models.multimodal.release import resolve_folder

        folder = resolve_folder(
            weights, hf_repo, "READ model folder", "pipelines.reasoning.weights"
        )
        tower = vision_tower
        if tower is None or not str(tower).startswith("open_clip:"):
            try:
                tower = resolve_folder(
                    vision_tower,
                    vision_tower_repo,
                    "CLIP vision tower folder",
                    "pipelines.reasoning.vision_tower",
                )
            except WeightsNotFoundError:
                # a folder holding the tower's weights and its vision_config needs no CLIP folder
                config = json.loads((folder / "config.json").read_text())
                has_own = any(k.startswith("model.vision_tower.") for k in _weight_names(folder))
                if not (has_own and isinstance(config.get("vision_config"), dict)):
                    raise
                tower = None
        return load_read_model(
            folder,
            vision_tower=tower,
            sam_architecture=sam_architecture,
            device=device or "cpu",
            dtype=dtype,
        )

    @property
    def call_settings(self) -> Mapping[str, Any]:
        return {"max_new_tokens": self.max_new_tokens}

    def encode(self, image: Any) -> ReasoningImage:
        """Decode ``image`` and prepare it for the model (any size: it is resized)."""
        rgb = decode_image(image)
        return ReasoningImage(rgb, prepared=self.model.prepare_image(rgb))

    def _sam_embedding(self, encoded: ReasoningImage) -> Any:
        return encoded.cached(
            "sam_embedding",
            lambda: self.model.sam_image_embeddings(encoded.prepared.sam_pixels[None]),
        )

    def _predict(
        self, encoded: ReasoningImage, question: Any, settings: Mapping[str, Any]
    ) -> ReasoningResult:
        from ovseg.models.multimodal.conversation import encode_prompt

        if not isinstance(question, str) or not question.strip():
            raise PromptError(
                "Give a question, e.g. predict(encoded, 'Which object holds the food? Please "
                "output segmentation mask.')."
            )
        ids = encode_prompt(
            question,
            self.tokenizer,
            use_im_start_end=self.model.use_im_start_end,
            max_length=self.max_length,
        )
        out = self.model.generate(
            encoded.prepared,
            ids,
            int(settings["max_new_tokens"]),
            tokenizer=self.tokenizer,
            image_embedding=self._sam_embedding(encoded),
        )
        height, width = encoded.size
        masks = (
            np.stack([s.mask for s in out.segments])
            if out.segments
            else np.zeros((0, height, width), dtype=bool)
        )
        return ReasoningResult(
            question=question,
            answer=out.text or "",
            masks=masks,
            scores=np.array([s.score for s in out.segments], dtype=np.float32),
            points=[s.points for s in out.segments],
            similarity=[s.similarity for s in out.segments],
            meta={
                **self.meta,
                "stopped_at_eos": out.stopped_at_eos,
                "num_generated_tokens": len(out.output_ids),
            },
        )


def _weight_names(folder: Any) -> list[str]:
    """Tensor names of a READ folder, read from its index or safetensors header (no tensors)."""
    import json
    from pathlib import Path

    folder = Path(folder)
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index).is_file():
            return list(json.loads((folder / index).read_text()).get("weight_map", {}))
    if (folder / "model.safetensors").is_file():
        from safetensors import safe_open

        with safe_open(str(folder / "model.safetensors"), "pt") as f:
            return list(f.keys())
    return []  # a single .bin: only loading tells; the tower is then looked for separately
