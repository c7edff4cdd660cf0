"""Decode heads over backbone feature pyramids (registered in ``NECKS``).

Every entry takes ``in_channels`` (one per level, finest first) and ``text_dim`` and is called
as ``head(features, text) -> logits``: ``features`` a list of ``(B, C_i, H_i, W_i)`` maps,
``text`` ``(B, K, D)`` class embeddings, logits ``(B, K, H_0, W_0)``. The classifier is
vocabulary-agnostic (:class:`TextClassifier`), so one trained head serves any class list.
"""

from ovseg.models.necks.fpn import FPN, FPNHead, SemanticFPN
from ovseg.models.necks.text_classifier import TextClassifier
from ovseg.models.necks.uper import PyramidPooling, UPerNet

__all__ = ["FPN", "FPNHead", "PyramidPooling", "SemanticFPN", "TextClassifier", "UPerNet"]
