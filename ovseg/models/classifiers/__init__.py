"""Mask classifiers (mask pooling of dense tokens, masked crops) and class-wise NMS.

A classifier is called as ``classifier.embed(masks (M, H, W) bool, MaskContext) -> (M, D)``;
both are registered in ``MASK_CLASSIFIERS``.
"""

from ovseg.models.classifiers.mask_pooling import (
    MaskPoolingClassifier,
    mask_area_weights,
    pool_tokens,
)
from ovseg.models.classifiers.masked_crop import (
    MaskedCropClassifier,
    build_crop_classifier,
    crop_masks,
    embed_box_crops,
)
from ovseg.models.classifiers.nms import (
    box_iou,
    box_masks,
    boxes_from_masks,
    check_cross_class_iou,
    class_wise_nms,
    cross_class_nms,
    mask_iou,
    matched_mask_iou,
    merge_parts,
)
from ovseg.models.classifiers.scoring import (
    MaskContext,
    class_probabilities,
    ensemble_probabilities,
    query_probabilities,
    with_background_classes,
)

__all__ = [
    "MaskContext",
    "MaskPoolingClassifier",
    "MaskedCropClassifier",
    "box_iou",
    "box_masks",
    "boxes_from_masks",
    "build_crop_classifier",
    "check_cross_class_iou",
    "class_probabilities",
    "class_wise_nms",
    "crop_masks",
    "cross_class_nms",
    "embed_box_crops",
    "ensemble_probabilities",
    "mask_area_weights",
    "mask_iou",
    "matched_mask_iou",
    "merge_parts",
    "pool_tokens",
    "query_probabilities",
    "with_background_classes",
]
