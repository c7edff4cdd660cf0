"""MDETR as an open-vocabulary detector: a released ``.pth`` checkpoint, strictly loaded.

Checkpoint: a file as ashkamath/mdetr releases it (``{"model": state_dict, "args": Namespace,
...}``), read by :func:`ovseg.weights.load_state_dict` (scanned, ``weights_only``; the saved
``argparse.Namespace`` of training arguments allowed as plain data) and mapped onto
:class:`~.mdetr_model.MdetrModel` strictly: a key missing or left over, or a shape that differs,
is refused with the keys named. One exception: ``transformers`` 4.5 (the reference's) saved
RoBERTa's ``embeddings.position_ids`` buffer, which newer versions no longer keep; it is checked
to be ``0, 1, 2, ...`` and dropped.

Images (the reference's evaluation transform): resized with PIL bilinear so the short side is
800 pixels unless the long side would pass 1333, scaled to ``[0, 1]``, normalised by ImageNet's
mean / std, zero-padded to the batch's largest size (mask True on padding).

Queries (``caption="joint"``, the default, as the demo grounds phrases of one caption): the
phrases of one call are joined by ``". "`` into one caption (one query: the query itself, as a
referring expression); each phrase's token positions (:func:`~.mdetr_postprocess.positive_map`)
form its positive map. Per box, its ``1 - p(no object)`` is the reference ``PostProcess`` score;
the box belongs to the phrase with the most probability mass on its tokens (``token_reduce``:
``sum``, or ``max`` as ``PostProcessFlickr``). ``score="object"`` (default) gives the box's best
phrase the reference score and each other phrase that score times its mass relative to the best
phrase's; ``score="mass"`` gives each phrase its probability mass. The heads point at token
positions below 255, so a caption holds at most 255 tokens (``<s>`` and ``</s>`` included);
queries that do not fit are split over several captions (each a model call with boxes of its
own); a query alone longer is refused, never cut.

``caption="separate"``: one caption per query, its score ``1 - p(no object)`` (the reference's
LVIS evaluation, ``scripts/eval_lvis.py``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ovseg.errors import CheckpointError, ConfigError, VocabularyError, WeightsNotFoundError
from ovseg.model_zoo.mdetr_release import (
    MDETR_RELEASES,
    MDETR_TOKENIZER,
    release_candidates,
    release_url,
)
from ovseg.models.detectors.base import OpenVocabularyDetector
from ovseg.models.detectors.hf_folder import import_transformers
from ovseg.models.detectors.mdetr_model import MdetrArchitecture, MdetrModel
from ovseg.models.detectors.mdetr_postprocess import (
    TOKEN_REDUCTIONS,
    object_scores,
    phrase_probabilities,
    pixel_boxes,
    positive_map,
)
from ovseg.registry import DETECTORS
from ovseg.weights import load_state_dict

__all__ = [
    "MdetrDetector",
    "build_mdetr_model",
    "joint_caption",
    "load_mdetr_checkpoint",
    "resize_for_mdetr",
]

CAPTION_MODES = ("joint", "separate")
SCORE_MODES = ("object", "mass")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LEGACY_BUFFERS = ("transformer.text_encoder.embeddings.position_ids",)
TOKENIZER_FILES = ("vocab.json", "merges.txt")


def joint_caption(queries: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """Phrases joined by ``". "`` and each phrase's character span ``[start, end)``."""
    spans, position = [], 0
    for query in queries:
        spans.append((position, position + len(query)))
        position += len(query) + 2
    return ". ".join(queries), spans


def resize_for_mdetr(image: np.ndarray, size: int = 800, max_size: int = 1333) -> np.ndarray:
    """The reference's ``RandomResize([size], max_size)`` at evaluation: ``(h, w)`` as its
    ``get_size_with_aspect_ratio`` computes it, PIL bilinear. ``(H, W, 3)`` uint8 in and out."""
    from PIL import Image

    height, width = image.shape[:2]
    small, large = float(min(height, width)), float(max(height, width))
    if large / small * size > max_size:
        size = int(round(max_size * small / large))
    if (width <= height and width == size) or (height <= width and height == size):
        return image
    if width < height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_h, new_w = size, int(size * width / height)
    resized = Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR)
    return np.asarray(resized)


def build_mdetr_model(architecture: MdetrArchitecture | dict[str, Any] | None = None) -> MdetrModel:
    """A random-init :class:`MdetrModel` (``architecture``: overrides of the release shape)."""
    if isinstance(architecture, MdetrArchitecture):
        arch = architecture
    else:
        fields = {f.name for f in dataclasses.fields(MdetrArchitecture)}
        unknown = sorted(set(architecture or {}) - fields)
        if unknown:
            raise ConfigError(
                f"Unknown MDETR architecture fields {unknown}; known: {sorted(fields)}."
            )
        arch = MdetrArchitecture(**(architecture or {}))
    return MdetrModel(arch).eval()


def load_mdetr_checkpoint(model: MdetrModel, path: str | os.PathLike) -> MdetrModel:
    """Fill ``model`` from a released checkpoint, strictly (see the module docstring).

    Raises:
        WeightsNotFoundError: no such file.
        UnsafeCheckpointError: the pickle names anything but tensors and plain data.
        CheckpointError: the keys or shapes differ from the architecture.
    """
    state = load_state_dict(path, allow=("argparse.Namespace",))
    for key in LEGACY_BUFFERS:
        if key in state:
            value = state.pop(key)
            if not torch.equal(value.flatten().long(), torch.arange(value.numel())):
                raise CheckpointError(f"{path}: {key} is not 0, 1, 2, ...; not an MDETR release.")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        parts = [
            f"{label} ({len(keys)}): {keys[:5]}"
            for label, keys in (
                ("missing", missing), ("unexpected", unexpected), ("mismatched", mismatched)
            )
            if keys
        ]  # fmt: skip
        raise CheckpointError(
            f"{path} does not fit the MDETR architecture {model.arch.backbone} "
            f"({'; '.join(parts)}); use the checkpoint released for this model name."
        )
    model.load_state_dict(state, strict=True)
    return model


def _release_checkpoint(name: str) -> Path:
    candidates = release_candidates(name)
    for path in candidates:
        if path.is_file():
            return path
    raise WeightsNotFoundError(
        f"MDETR checkpoint {MDETR_RELEASES[name]['file']} ({name}) is not in {candidates[0].parent}."
        f" Download it from {release_url(name)} into that folder, or set the detector's "
        "checkpoint to its path (pipelines.detection.detector.checkpoint=PATH)."
    )


def _load_tokenizer(tokenizer: str | os.PathLike) -> Any:
    transformers = import_transformers()
    path = Path(tokenizer).expanduser()
    if not path.is_dir():
        path = _cached_tokenizer(str(tokenizer))
    missing = [name for name in TOKENIZER_FILES if not (path / name).is_file()]
    if missing:
        raise WeightsNotFoundError(f"Tokenizer folder {path} lacks {', '.join(missing)}.")
    return transformers.RobertaTokenizerFast.from_pretrained(path, local_files_only=True)


def _cached_tokenizer(repo_id: str) -> Path:
    from huggingface_hub import try_to_load_from_cache

    from ovseg.hub import download_hf_file, is_offline

    repos = [repo_id, f"FacebookAI/{repo_id}"] if "/" not in repo_id else [repo_id]
    for repo in repos:
        found = try_to_load_from_cache(repo, "merges.txt")
        if isinstance(found, str) and (Path(found).parent / "vocab.json").is_file():
            return Path(found).parent
    if not is_offline():
        try:
            download_hf_file(repos[-1], ["vocab.json"])
            return download_hf_file(repos[-1], ["merges.txt"]).parent
        except WeightsNotFoundError:
            pass
    raise WeightsNotFoundError(
        f"MDETR's tokenizer {repo_id!r} (vocab.json, merges.txt) is not in the Hugging Face "
        f"cache. On a machine with network: `hf download {repos[-1]} vocab.json merges.txt`; "
        "or set the detector's tokenizer to a folder holding them."
    )


@DETECTORS.register(aliases=("mdetr",))
class MdetrDetector(OpenVocabularyDetector):
    """MDETR (see the module docstring).

    Args:
        model: a release name of :data:`~ovseg.model_zoo.mdetr_release.MDETR_RELEASES`
            (``mdetr_resnet101``, ``mdetr_resnet101_refcocog`` ...): its architecture, and its
            file in torch hub's checkpoint folder unless ``checkpoint`` is given.
        checkpoint: the ``.pth`` file (released layout).
        tokenizer: the RoBERTa tokenizer: a folder with ``vocab.json`` / ``merges.txt`` or a
            Hub repository id in the Hugging Face cache (default ``roberta-base``).
        architecture: overrides of the architecture fields (tests use a tiny one).
        device: where the model runs (default CPU).
        box_threshold: default ``box_threshold`` of :meth:`detect` (0.7: the reference demo).
        caption: ``joint`` or ``separate`` (see the module docstring).
        token_reduce: ``sum`` (probability mass) or ``max`` over a phrase's tokens.
        score: ``object`` or ``mass`` (see the module docstring).
        min_size, max_size: the resize (800 / 1333).
        batch_size, clip_boxes, max_detections: as the other detectors.
    """

    boxes_depend_on_text = True

    def __init__(
        self,
        model: str = "mdetr_resnet101",
        checkpoint: str | os.PathLike | None = None,
        tokenizer: str | os.PathLike = MDETR_TOKENIZER,
        architecture: dict[str, Any] | None = None,
        device: str | torch.device | None = None,
        box_threshold: float = 0.7,
        caption: str = "joint",
        token_reduce: str = "sum",
        score: str = "object",
        min_size: int = 800,
        max_size: int = 1333,
        batch_size: int = 1,
        clip_boxes: bool = True,
        max_detections: int | None = None,
    ) -> None:
        super().__init__()
        import_transformers()
        for value, allowed, name in (
            (caption, CAPTION_MODES, "caption"),
            (token_reduce, TOKEN_REDUCTIONS, "token_reduce"),
            (score, SCORE_MODES, "score"),
        ):
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {allowed}, not {value!r}.")
        if model not in MDETR_RELEASES:
            raise ConfigError(
                f"Unknown MDETR model {model!r}; the releases are {sorted(MDETR_RELEASES)}."
            )
        overrides = {"backbone": MDETR_RELEASES[model]["backbone"], **(architecture or {})}
        path = Path(checkpoint).expanduser() if checkpoint else _release_checkpoint(model)
        self.tokenizer = _load_tokenizer(tokenizer)
        self.model = load_mdetr_checkpoint(build_mdetr_model(overrides), path)
        if device is not None:
            self.model.to(device)
        self.release = model
        self.default_box_threshold = float(box_threshold)
        self.caption = caption
        self.token_reduce = token_reduce
        self.score = score
        self.min_size, self.max_size = int(min_size), int(max_size)
        self.batch_size = int(batch_size)
        self.clip_boxes = bool(clip_boxes)
        self.max_detections = max_detections

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def text_length(self) -> int:
        """Tokens per caption (``<s>`` and ``</s>`` included) the heads can point at."""
        return self.model.max_text_positions

    def _caption_length(self, queries: Sequence[str]) -> int:
        return len(self.tokenizer(joint_caption(queries)[0])["input_ids"])

    def query_chunks(self, queries: Sequence[str]) -> list[list[int]]:
        for query in queries:
            if self._caption_length([query]) > self.text_length:
                raise VocabularyError(
                    f"Query {query!r} alone is longer than MDETR's caption ({self.text_length} "
                    "tokens); shorten it (it is never cut)."
                )
        if self.caption == "separate":
            return [[index] for index in range(len(queries))]
        chunks: list[list[int]] = []
        current: list[int] = []
        for index, query in enumerate(queries):
            trial = [queries[i] for i in current] + [query]
            if current and self._caption_length(trial) > self.text_length:
                chunks.append(current)
                current = []
            current.append(index)
        chunks.append(current)
        return chunks

    def _pixels(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised, zero-padded ``(B, 3, H, W)`` and the padding mask ``(B, H, W)``."""
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        tensors = [
            (torch.from_numpy(resize_for_mdetr(im, self.min_size, self.max_size).copy())
             .permute(2, 0, 1).float() / 255 - mean) / std
            for im in images
        ]  # fmt: skip
        height = max(t.shape[1] for t in tensors)
        width = max(t.shape[2] for t in tensors)
        batch = torch.zeros(len(tensors), 3, height, width)
        mask = torch.ones(len(tensors), height, width, dtype=torch.bool)
        for index, tensor in enumerate(tensors):
            batch[index, :, : tensor.shape[1], : tensor.shape[2]] = tensor
            mask[index, : tensor.shape[1], : tensor.shape[2]] = False
        return batch, mask

    def predict(
        self, images: Sequence[np.ndarray], caption: str
    ) -> tuple[dict[str, torch.Tensor], Any]:
        """The model's raw outputs for ``images`` with one ``caption``, and its encoding."""
        encoding = self.tokenizer(caption, return_tensors="pt")
        count = len(images)
        pixels, mask = self._pixels(images)
        outputs = self.model(
            pixels.to(self.device),
            mask.to(self.device),
            encoding["input_ids"].repeat(count, 1).to(self.device),
            encoding["attention_mask"].repeat(count, 1).to(self.device),
        )
        return {k: v.float().cpu() for k, v in outputs.items()}, encoding

    def score_chunk(
        self, images: Sequence[np.ndarray], queries: Sequence[str]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        caption, spans = joint_caption(queries)
        outputs, encoding = self.predict(images, caption)
        logits = outputs["pred_logits"]  # (B, Q, K + 1)
        objectness = object_scores(logits).double()  # (B, Q)
        if self.caption == "separate":
            scores = objectness[..., None]
        else:
            phrase_map = positive_map(encoding, spans, logits.shape[-1])
            mass = phrase_probabilities(logits.double(), phrase_map, self.token_reduce)
            if self.score == "mass":
                scores = mass
            else:
                best = mass.max(dim=-1, keepdim=True).values.clamp_min(1e-300)
                scores = objectness[..., None] * mass / best
        scores = scores.clamp(1e-300, 1.0)
        results = []
        for index, image in enumerate(images):
            height, width = image.shape[:2]
            boxes = pixel_boxes(outputs["pred_boxes"][index], height, width)
            logit = (scores[index].log() - torch.log1p(-scores[index])).float()
            results.append((boxes, logit))
        return results
