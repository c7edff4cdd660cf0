"""Point prompts from similarity maps: READ's similarity as points, top-k peaks.

A selector is called as ``selector(similarity (h, w), placement: GridPlacement) ->
PointPrompts``; both are registered in ``POINT_SELECTORS``.
"""

from ovseg.models.prompts.peaks import TopKPeakSelector
from ovseg.models.prompts.sasp import SasPSelector
from ovseg.models.prompts.similarity import (
    GridPlacement,
    encode_phrase,
    min_max_normalize,
    query_similarity,
    tokens_to_grid,
)

__all__ = [
    "GridPlacement",
    "SasPSelector",
    "TopKPeakSelector",
    "encode_phrase",
    "min_max_normalize",
    "query_similarity",
    "tokens_to_grid",
]
