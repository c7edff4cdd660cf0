"""Vocabulary-free semantic segmentation: CaSED finds the names, dense CLIP segments with them.

Two routes, both wrapping a :class:`~ovseg.pipelines.semantic.SemanticSegmenter` and a
:class:`~ovseg.cased.search.CasedSearch` that share one CLIP backbone:

* ``fast`` (default): the whole image and the crops of ``fast_grids`` are searched; every view
  contributes its ``names_per_view`` best names scoring at least ``min_score``; the union (best
  score first, at most ``max_names``) is the vocabulary of an ordinary segmentation.
* ``dense`` (DenseCaSED): for every grid ``n`` in ``grids`` (2, 4, 8) the image is cut into
  ``n x n`` crops moved by half a crop, i.e. ``(2n - 1)^2`` overlapping crops; each crop is
  searched and its candidates' scores are added to every pixel it covers (then divided by the
  number of crops covering the pixel). The vocabulary is the union of every crop's best names;
  the segmenter's per-pixel probabilities over it are multiplied by the accumulated scores
  (``combine="product"``), or the accumulated scores alone decide (``combine="crops"``).

Crop accumulation lives on a cell grid of ``lcm(2n)`` cells per side (16 for 2, 4, 8), on
which every crop boundary falls, and is upsampled bilinearly to the image.

Results are :class:`~ovseg.structures.OVSegResult` with the chosen names as ``class_names``,
exactly as with a user vocabulary; ``meta["vocab_free"]`` lists the names and their scores.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ovseg.cased.search import CasedSearch, SearchResult
from ovseg.errors import ConfigError
from ovseg.inference.labels import nearest_resize
from ovseg.pipelines.base import PromptablePipeline, SemanticImage
from ovseg.registry import PIPELINES
from ovseg.structures import OVSegResult
from ovseg.vocab import Vocabulary

MODES = ("fast", "dense")
COMBINES = ("product", "crops")


def grid_cells(n: int, cells: int) -> list[tuple[int, int, int, int]]:
    """Cell ranges ``(row0, row1, col0, col1)`` of the ``(2n - 1)^2`` half-overlapping crops of
    an ``n x n`` grid on a ``cells x cells`` grid (``cells`` a multiple of ``2n``)."""
    if n < 1 or cells % (2 * n):
        raise ConfigError(f"grid {n} does not divide {cells} cells; use positive grid sizes.")
    step, size = cells // (2 * n), cells // n
    starts = range(0, cells - size + 1, step)
    return [(r, r + size, c, c + size) for r in starts for c in starts]


def cells_to_box(cell: tuple[int, int, int, int], cells: int, height: int, width: int) -> list:
    """Cell range -> XYXY pixel box of a ``height x width`` image."""
    r0, r1, c0, c1 = cell
    return [
        round(c0 * width / cells), round(r0 * height / cells),
        round(c1 * width / cells), round(r1 * height / cells),
    ]  # fmt: skip


def grid_boxes(height: int, width: int, n: int) -> np.ndarray:
    """``(M, 4)`` XYXY pixel boxes of the half-overlapping crops of an ``n x n`` grid."""
    cells = 2 * n
    return np.asarray(
        [cells_to_box(cell, cells, height, width) for cell in grid_cells(n, cells)],
        dtype=np.float64,
    )


def _unique_names(pairs: Iterable[tuple[str, float]], limit: int) -> list[tuple[str, float]]:
    """Best score per name (case-insensitive), best first, at most ``limit``."""
    best: dict[str, tuple[str, float]] = {}
    for name, score in pairs:
        key = name.lower()
        if key not in best or score > best[key][1]:
            best[key] = (name, float(score))
    return sorted(best.values(), key=lambda item: -item[1])[:limit]


def _as_vocabulary(names: Sequence[str]) -> Vocabulary:
    """One class per found name, taken literally (a comma in a name is no synonym separator)."""
    return Vocabulary(tuple((name,) for name in names))


@PIPELINES.register()
class VocabFreeSegmenter(PromptablePipeline):
    """Semantic segmentation without a vocabulary (names from a text database).

    Args:
        segmenter: a :class:`SemanticSegmenter` (or its config mapping).
        search: a :class:`CasedSearch`, or its keyword arguments (``database`` or ``path``,
            ``k``, ``alpha`` ...) to build one on the segmenter's backbone.
        mode: ``fast`` or ``dense`` (see the module docstring).
        grids: DenseCaSED's grid sizes (crops per side).
        fast_grids: grids searched by the fast route besides the whole image.
        names_per_view: best names each view (crop) may contribute.
        min_score: CaSED score a name needs to enter the vocabulary.
        max_names: largest vocabulary.
        combine: dense route: ``product`` (segmenter probabilities x crop scores) or ``crops``.

    :meth:`encode` is the segmenter's (a :class:`SemanticImage`); the names found for an
    encoded image are kept with it. A vocabulary given to :meth:`predict` skips the search.
    """

    encoded_type = SemanticImage

    def __init__(
        self,
        segmenter: Any,
        search: CasedSearch | Mapping[str, Any],
        *,
        mode: str = "fast",
        grids: Sequence[int] = (2, 4, 8),
        fast_grids: Sequence[int] = (2,),
        names_per_view: int = 3,
        min_score: float = 0.1,
        max_names: int = 20,
        combine: str = "product",
    ) -> None:
        if isinstance(segmenter, Mapping):
            segmenter = PIPELINES.build(segmenter)
        if not hasattr(segmenter, "query_scores") or not hasattr(segmenter, "backbone"):
            raise ConfigError("segmenter must be a SemanticSegmenter (or its config).")
        self.segmenter = segmenter
        if isinstance(search, Mapping):
            options = dict(search)
            database = options.pop("database", None) or options.pop("path", None)
            if database is None:
                raise ConfigError("search needs a database: {database: DIR, ...}.")
            search = CasedSearch(segmenter.backbone, database, **options)
        self.search = search
        if mode not in MODES or combine not in COMBINES:
            raise ConfigError(
                f"mode must be one of {MODES} and combine one of {COMBINES}; got {mode!r}, "
                f"{combine!r}."
            )
        if not grids or any(int(n) < 1 for n in grids) or any(int(n) < 1 for n in fast_grids):
            raise ConfigError("grids must list positive crop counts per side, e.g. [2, 4, 8].")
        self.mode = mode
        self.grids = tuple(int(n) for n in grids)
        self.fast_grids = tuple(int(n) for n in fast_grids)
        self.names_per_view = max(1, int(names_per_view))
        self.min_score = float(min_score)
        self.max_names = max(1, int(max_names))
        self.combine = combine
        self.meta: dict[str, Any] = {}
        self.config: Any = None

    @property
    def backbone(self):
        return self.segmenter.backbone

    # ----------------------------------------------------------------- naming
    def name_regions(self, embeddings: torch.Tensor | np.ndarray) -> list[SearchResult]:
        """Ranked names for region / mask embeddings ``(M, D)`` (see CasedSearch.name_regions)."""
        return self.search.name_regions(embeddings)

    def _pick(self, results: Sequence[SearchResult]) -> list[tuple[str, float]]:
        pairs = [
            (name, score)
            for result in results
            for name, score in result.top(self.names_per_view)
            if score >= self.min_score
        ]
        if not pairs:  # nothing is confident: the best name of the first view
            pairs = results[0].top(1)
        return _unique_names(pairs, self.max_names)

    def discover(self, image: np.ndarray) -> list[tuple[str, float]]:
        """Fast route's vocabulary for an HWC uint8 image: ``[(name, score), ...]``, best first."""
        height, width = image.shape[:2]
        boxes = [np.asarray([[0, 0, width, height]], dtype=np.float64)]
        boxes += [grid_boxes(height, width, n) for n in self.fast_grids if n > 1]
        embeddings = self.search.embed_regions(image, boxes=np.concatenate(boxes))
        return self._pick(self.search.search_embeddings(embeddings))

    # ----------------------------------------------------------------- routes
    def _fast(self, encoded: SemanticImage) -> OVSegResult:
        chosen = encoded.cached(f"vocab_free:{id(self)}", lambda: self.discover(encoded.image))
        vocab = _as_vocabulary([name for name, _ in chosen])
        result = self.segmenter.predict(encoded, vocab)
        result.meta["vocab_free"] = self._meta(chosen)
        return result

    def _dense(self, encoded: SemanticImage) -> OVSegResult:
        image = encoded.image
        height, width = image.shape[:2]
        cells = math.lcm(*(2 * n for n in self.grids))
        crop_cells = [cell for n in self.grids for cell in grid_cells(n, cells)]
        boxes = np.asarray([cells_to_box(c, cells, height, width) for c in crop_cells], float)
        results = self.search.search_embeddings(self.search.embed_regions(image, boxes=boxes))
        chosen = self._pick(results)
        names = [name for name, _ in chosen]
        position = {name.lower(): i for i, name in enumerate(names)}
        accumulated = np.zeros((len(names), cells, cells), dtype=np.float64)
        coverage = np.zeros((cells, cells), dtype=np.float64)
        for (r0, r1, c0, c1), result in zip(crop_cells, results):
            coverage[r0:r1, c0:c1] += 1
            for name, score in zip(result.names, result.scores):
                if name.lower() in position:
                    accumulated[position[name.lower()], r0:r1, c0:c1] += float(score)
        work = self.segmenter.working_size(encoded)
        prior = torch.from_numpy(accumulated / np.maximum(coverage, 1)).float()
        prior = F.interpolate(prior[None], size=work, mode="bilinear",
                              align_corners=False)[0].clamp_min(0)  # fmt: skip
        prior = prior / prior.sum(0, keepdim=True).clamp_min(1e-12)
        vocab = _as_vocabulary(names)
        if self.combine == "product":
            scores = self.segmenter.query_scores(encoded, vocab.queries, work).cpu()
            probs = torch.softmax(self.segmenter.logit_scale * scores, dim=0) * prior
            probs = probs / probs.sum(0, keepdim=True).clamp_min(1e-12)
        else:
            probs = prior
        top, labels = probs.max(0)
        result = OVSegResult(
            sem_seg=nearest_resize(labels.numpy().astype(np.int64), (height, width)),
            class_names=vocab.names,
            probs=probs.numpy().astype(np.float32),
            meta=dict(self.segmenter.meta),
            label_scores=nearest_resize(top.numpy().astype(np.float32), (height, width)),
        )
        result.meta["vocab_free"] = self._meta(chosen)
        return result

    def _meta(self, chosen: Sequence[tuple[str, float]]) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "database": str(self.search.database.path),
            "pos_filter": self.search.pos_filter,
            "names": [{"name": name, "score": round(score, 6)} for name, score in chosen],
        }

    # ----------------------------------------------------------------- pipeline API
    def encode(self, image: Any) -> SemanticImage:
        """The segmenter's encoding of ``image`` (path, bytes, PIL, HWC uint8 array)."""
        return self.segmenter.encode(image)

    def encode_batch(self, images: Sequence[Any]) -> list[SemanticImage]:
        return self.segmenter.encode_batch(images)

    def _predict(
        self, encoded: SemanticImage, vocabulary: Any, settings: Mapping[str, Any]
    ) -> OVSegResult:
        """Segment ``encoded`` with the names found for it; a ``vocabulary`` skips the search."""
        if vocabulary is not None:
            return self.segmenter.predict(encoded, vocabulary)
        result = self._fast(encoded) if self.mode == "fast" else self._dense(encoded)
        result.meta.update({k: v for k, v in self.meta.items() if k not in result.meta})
        return result
