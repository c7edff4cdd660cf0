"""``CasedSearch``: vocabulary-free naming of images and regions (CaSED, Conti et al., NeurIPS 2023).

For one query (an image, a box or mask region of an image, or a given CLIP image embedding
``x``), following the reference code (``altndrr/vic``: ``RetrievalDatabase.query``,
``RetrievalVocabulary``, ``CaSED.batch_step``, ``NearestNeighboursClassifier``):

1. retrieval: ``x / |x|`` searches the database for its ``k`` (10) nearest texts by inner
   product; the stored vectors of the hits are L2-normalised again;
2. de-duplication: hits whose vectors have cosine ``> 0.94`` (FAISS's range search, strict) are
   linked; of every connected group only the highest-ranked hit stays;
3. candidates: from the kept captions by :class:`~ovseg.cased.candidates.CandidateExtractor`,
   or the kept entries themselves for a ``concepts`` database;
4. scoring, for candidate embeddings ``c_j`` (the bare name through the text tower, normalised,
   as CaSED's ``"{}"`` prompt does), the kept texts' embeddings ``t_i`` (encoded again, raw,
   normalised; both with underscores read as spaces, as the reference's text preprocessing
   does) and the CLIP logit scale ``s = exp(logit_scale)`` of the model::

       t = normalise(mean_i t_i)
       p_img = softmax_j(s * <normalise(x), c_j>)
       p_txt = softmax_j(s * <t, c_j>)
       score_j = alpha * p_img + (1 - alpha) * p_txt        (alpha = 0.7)

The result ranks the candidates by score. Images are prepared as CLIP's own preprocessing does
(bicubic resize of the short side to the model's input size, centre crop); a mask region is cut
to its bounding box with the pixels outside the mask set to the model's mean colour.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ovseg.cased.candidates import (
    DEFAULT_POS_FILTER,
    CandidateExtractor,
    Tagger,
    concept_candidates,
)
from ovseg.cased.database import TextDatabase, encode_texts, load_database
from ovseg.errors import ConfigError
from ovseg.io import read_image
from ovseg.registry import BACKBONES, VOCAB_SOURCES

DEDUP_THRESHOLD = 0.94
DEFAULT_K = 10
DEFAULT_ALPHA = 0.7


@dataclass
class SearchResult:
    """Ranked candidate names of one query.

    Attributes:
        names: candidate names, best first.
        scores: ``(C,)`` float32 CaSED scores of ``names`` (they sum to 1).
        retrieved: the database texts kept after de-duplication, nearest first.
        similarities: their inner products with the query embedding.
        pos_filter: the part-of-speech filter the candidates went through (``wordnet``,
            ``nltk``, ``none``, ``custom``; ``concepts``: a concept database's entries are the
            candidates, no filter applies).
    """

    names: list[str]
    scores: np.ndarray
    retrieved: list[str] = field(default_factory=list)
    similarities: list[float] = field(default_factory=list)
    pos_filter: str = ""

    @property
    def best(self) -> str:
        return self.names[0]

    def top(self, n: int) -> list[tuple[str, float]]:
        return [(name, float(score)) for name, score in zip(self.names[:n], self.scores[:n])]

    def to_dict(self, top: int | None = None) -> dict[str, Any]:
        n = len(self.names) if top is None else top
        return {
            "pos_filter": self.pos_filter,
            "names": [{"name": name, "score": round(score, 6)} for name, score in self.top(n)],
            "retrieved": [
                {"text": text, "similarity": round(float(sim), 6)}
                for text, sim in zip(self.retrieved, self.similarities)
            ],
        }


# --------------------------------------------------------------------------------- formulas
def deduplicate(
    ids: np.ndarray, vectors: np.ndarray, threshold: float = DEDUP_THRESHOLD
) -> list[int]:
    """Positions of the retrieved hits to keep, in rank order.

    ``ids`` ``(K,)`` are database ids (``-1``: no hit; the list is cut there), ``vectors``
    ``(K, D)`` their stored vectors. Vectors are L2-normalised; hits with cosine ``> threshold``
    are linked, and of each connected group only the first (best-ranked) hit is kept. A hit
    whose id already appeared is dropped too.
    """
    ids = np.asarray(ids).reshape(-1)
    stop = int(np.flatnonzero(ids == -1)[0]) if (ids == -1).any() else len(ids)
    vectors = np.asarray(vectors, dtype=np.float32)[:stop]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    unit = vectors / norms
    linked = (unit @ unit.T) > np.float32(threshold)  # float32, as FAISS compares
    group = list(range(stop))  # union-find over the links

    def root(i: int) -> int:
        while group[i] != i:
            group[i] = group[group[i]]
            i = group[i]
        return i

    for i, j in zip(*np.nonzero(linked)):
        a, b = root(int(i)), root(int(j))
        if a != b:
            group[max(a, b)] = min(a, b)
    keep, seen_ids = [], set()
    for i in range(stop):
        if root(i) == i and int(ids[i]) not in seen_ids:
            keep.append(i)
        seen_ids.add(int(ids[i]))
    return keep


def cased_scores(
    image_embedding: torch.Tensor,
    text_embeddings: torch.Tensor,
    candidate_embeddings: torch.Tensor,
    logit_scale: float,
    alpha: float = DEFAULT_ALPHA,
) -> torch.Tensor:
    """CaSED's candidate scores ``(C,)`` (see the module docstring for the formula).

    Args:
        image_embedding: ``(D,)`` CLIP image embedding (any norm).
        text_embeddings: ``(T, D)`` embeddings of the retrieved (kept) texts (any norm).
        candidate_embeddings: ``(C, D)`` embeddings of the candidate names (any norm).
        logit_scale: the multiplier ``s`` (already exponentiated, 100 for OpenAI CLIP).
        alpha: weight of the image term.
    """
    image = F.normalize(image_embedding.float().reshape(1, -1), dim=-1)
    texts = F.normalize(text_embeddings.float(), dim=-1)
    text = F.normalize(texts.mean(dim=0, keepdim=True), dim=-1)
    candidates = F.normalize(candidate_embeddings.float(), dim=-1)
    image_probs = (logit_scale * image @ candidates.T).softmax(dim=-1)[0]
    text_probs = (logit_scale * text @ candidates.T).softmax(dim=-1)[0]
    return alpha * image_probs + (1.0 - alpha) * text_probs


# --------------------------------------------------------------------------------- images
def clip_preprocess(images: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, 3, H, W)`` in [0, 1] -> ``(B, 3, size, size)``: short side to ``size`` (bicubic,
    antialiased, clamped to [0, 1]), then the centre ``size x size`` crop, as CLIP prepares
    its inputs."""
    height, width = images.shape[-2:]
    new_h, new_w = (size, int(size * width / height)) if height <= width else (
        int(size * height / width), size)  # fmt: skip
    new_h, new_w = max(size, new_h), max(size, new_w)
    if (new_h, new_w) != (height, width):
        images = F.interpolate(
            images, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True
        ).clamp_(0.0, 1.0)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    return images[..., top : top + size, left : left + size]


def _to_tensor(image: Any) -> torch.Tensor:
    """HWC uint8 (or anything read_image takes) / (1, 3, H, W) float -> (1, 3, H, W) in [0, 1]."""
    if isinstance(image, torch.Tensor):
        if image.ndim != 4 or image.shape[:2] != (1, 3):
            raise ConfigError("Tensor images must be (1, 3, H, W) RGB floats in [0, 1].")
        return image.float()
    array = read_image(image)
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None].float() / 255.0


def _box_slice(box: Sequence[float], height: int, width: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = (float(v) for v in box)
    left, top = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
    right, bottom = min(width, int(np.ceil(x2))), min(height, int(np.ceil(y2)))
    if right <= left or bottom <= top:
        raise ConfigError(
            f"Box {list(box)} (XYXY pixels) covers no pixel of the {width}x{height} image."
        )
    return left, top, right, bottom


# --------------------------------------------------------------------------------- search
@VOCAB_SOURCES.register()
class CasedSearch:
    """Names images and regions by searching a text database (CaSED).

    Args:
        backbone: a ClipBackbone (or its config mapping) of the model the database was built
            with (checked against the manifest: name, tag, dimension and probe embeddings).
        database: a database folder (a bare name means a packaged one) or a loaded
            :class:`~ovseg.cased.database.TextDatabase`.
        k: texts retrieved per query.
        alpha: weight of the image term of the score.
        dedup_threshold: cosine above which retrieved texts are duplicates.
        min_count, max_ngram, pos_filter: candidate extraction (captions databases; see
            :class:`~ovseg.cased.candidates.CandidateExtractor`).
        logit_scale: the softmax multiplier; default the model's own ``exp(logit_scale)``.
        pretrained: the backbone's weight tag, for the manifest check (default: the
            backbone's ``pretrained`` attribute, if it has one).
        preset: preset name shown in rebuild hints.
        verify: check the sha256 of the database files.
        batch_size: image crops per image-encoder call.
    """

    def __init__(
        self,
        backbone: Any,
        database: TextDatabase | str | os.PathLike,
        *,
        k: int = DEFAULT_K,
        alpha: float = DEFAULT_ALPHA,
        dedup_threshold: float = DEDUP_THRESHOLD,
        min_count: int = 2,
        max_ngram: int = 1,
        pos_filter: str | Tagger | bool | None = DEFAULT_POS_FILTER,
        logit_scale: float | None = None,
        pretrained: str | None = None,
        preset: str | None = None,
        verify: bool = True,
        batch_size: int = 64,
    ) -> None:
        if isinstance(backbone, Mapping):
            pretrained = pretrained if pretrained is not None else backbone.get("pretrained")
            backbone = BACKBONES.build(backbone)
        self.backbone = backbone
        if isinstance(database, TextDatabase):
            database.check_model(backbone, pretrained, preset=preset)
        else:
            database = load_database(
                database, backbone=backbone, pretrained=pretrained, preset=preset, verify=verify
            )
        self.database = database
        if int(k) < 1 or not 0.0 <= float(alpha) <= 1.0:
            raise ConfigError(f"k must be >= 1 and alpha in [0, 1]; got k={k}, alpha={alpha}.")
        self.k = int(k)
        self.alpha = float(alpha)
        self.dedup_threshold = float(dedup_threshold)
        self.extractor = (
            CandidateExtractor(min_count=min_count, max_ngram=max_ngram, pos_filter=pos_filter)
            if database.kind == "captions"
            else None
        )
        self.pos_filter = self.extractor.pos_filter_name if self.extractor else "concepts"
        self.logit_scale = float(logit_scale if logit_scale is not None else backbone.logit_scale)
        self.batch_size = max(1, int(batch_size))
        self._text_cache: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ text side
    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts -> normalised embeddings ``(N, D)`` on the CPU (cached per text).

        As the reference prepares texts for its encoder: underscores read as spaces, no
        template (CaSED's ``"{}"`` prompt).
        """
        missing = list(dict.fromkeys(t for t in texts if t not in self._text_cache))
        if missing:
            if len(self._text_cache) > 200_000:
                self._text_cache.clear()
            prepared = [text.replace("_", " ") for text in missing]
            vectors = torch.from_numpy(encode_texts(self.backbone, prepared))
            self._text_cache.update(zip(missing, vectors))
        if not texts:
            return torch.zeros((0, self.database.dim))
        return torch.stack([self._text_cache[t] for t in texts])

    # ------------------------------------------------------------------ image side
    @torch.inference_mode()
    def embed_regions(
        self,
        image: Any,
        boxes: Sequence[Sequence[float]] | np.ndarray | None = None,
        masks: np.ndarray | None = None,
    ) -> torch.Tensor:
        """CLIP image embeddings ``(N, D)`` (not normalised) of regions of one image.

        Args:
            image: HWC uint8 RGB (or a path / PIL / anything ``read_image`` takes), or a
                ``(1, 3, H, W)`` float tensor in [0, 1].
            boxes: ``(N, 4)`` XYXY in input-image pixels; None with no masks: the whole image.
            masks: ``(N, H, W)`` bool; each is cut to its bounding box, outside pixels set to
                the model's mean colour. Give boxes or masks, not both.
        """
        tensor = _to_tensor(image)
        height, width = tensor.shape[-2:]
        if boxes is not None and masks is not None:
            raise ConfigError("Give boxes or masks, not both.")
        crops: list[torch.Tensor] = []
        if masks is not None:
            masks = np.asarray(masks, dtype=bool).reshape(-1, height, width)
            fill = self.backbone.mean.detach().cpu().float().view(3, 1, 1)
            for mask in masks:
                ys, xs = np.nonzero(mask)
                if not len(xs):
                    raise ConfigError("A mask is empty; give masks with at least one pixel.")
                top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
                inside = torch.from_numpy(mask[top:bottom, left:right])
                crop = tensor[0, :, top:bottom, left:right]
                crops.append(torch.where(inside, crop, fill))
        elif boxes is not None:
            for box in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
                left, top, right, bottom = _box_slice(box, height, width)
                crops.append(tensor[0, :, top:bottom, left:right])
        else:
            crops.append(tensor[0])
        size = int(self.backbone.image_size)
        prepared = torch.cat([clip_preprocess(crop[None], size) for crop in crops])
        out = []
        for start in range(0, len(prepared), self.batch_size):
            batch = prepared[start : start + self.batch_size].to(self.backbone.device)
            out.append(self.backbone.encode_image(self.backbone.normalize(batch)).float().cpu())
        return torch.cat(out)

    # ------------------------------------------------------------------ search
    def candidates(self, texts: Sequence[str]) -> list[str]:
        """Candidate names from the kept retrieved texts."""
        if self.extractor is None:
            return concept_candidates(texts)
        return self.extractor(texts)

    def rank(
        self, embedding: torch.Tensor, texts: Sequence[str], similarities: Sequence[float] = ()
    ) -> SearchResult:
        """Score the candidates of ``texts`` (kept retrieved texts) for one image embedding."""
        names = self.candidates(texts)
        scores = cased_scores(
            embedding.cpu(),
            self.text_embeddings(texts),
            self.text_embeddings(names),
            self.logit_scale,
            self.alpha,
        ).numpy()
        order = np.argsort(-scores, kind="stable")
        return SearchResult(
            names=[names[i] for i in order],
            scores=scores[order].astype(np.float32),
            retrieved=list(texts),
            similarities=[float(s) for s in similarities],
            pos_filter=self.pos_filter,
        )

    def search_embeddings(self, embeddings: torch.Tensor | np.ndarray) -> list[SearchResult]:
        """Name every image / region embedding ``(M, D)`` (any norm); one result per row."""
        embeddings = torch.as_tensor(np.asarray(embeddings, dtype=np.float32)).reshape(
            -1, self.database.dim
        )
        queries = F.normalize(embeddings, dim=-1).numpy()
        scores, ids, vectors = self.database.search(queries, self.k, reconstruct=True)
        results = []
        for row in range(len(queries)):
            kept = deduplicate(ids[row], vectors[row], self.dedup_threshold)
            texts = [self.database.texts[int(ids[row][i])] for i in kept]
            sims = [float(scores[row][i]) for i in kept]
            results.append(self.rank(embeddings[row], texts, sims))
        return results

    def name_regions(self, embeddings: torch.Tensor | np.ndarray) -> list[SearchResult]:
        """Ranked names for region / mask embeddings ``(M, D)`` (instance pipelines call this)."""
        return self.search_embeddings(embeddings)

    def search(
        self,
        image: Any = None,
        *,
        box: Sequence[float] | None = None,
        mask: np.ndarray | None = None,
        embedding: torch.Tensor | np.ndarray | None = None,
    ) -> SearchResult:
        """Ranked names for an image, a region of it (``box`` XYXY pixels or ``mask`` (H, W)),
        or a given image embedding ``(D,)``."""
        if embedding is None:
            if image is None:
                raise ConfigError("search() needs an image or an embedding.")
            embedding = self.embed_regions(
                image,
                boxes=None if box is None else [box],
                masks=None if mask is None else np.asarray(mask)[None],
            )
        return self.search_embeddings(embedding)[0]

    __call__ = search
