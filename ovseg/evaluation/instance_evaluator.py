"""COCO instance evaluator: box and mask AP of predicted ``Instances`` through pycocotools.

Settings (the config's ``evaluation`` section)::

    evaluation:
      type: CocoInstanceEvaluator
      iou_types: [bbox, segm]
      groups: {unseen: [...]}     # mean per-category AP and AP50 of each group are added and printed

Only the images that were processed are scored (``ovseg eval --limit N`` scores the first N
images on those images alone). The result entries of all processes are put in image-id order
before COCOeval runs once, so a sharded run writes the files of a one-process run byte for byte.
Besides ``results.json`` (the metrics) it writes ``coco_results.json`` (the predictions).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ovseg.errors import ConfigError, EvaluationError
from ovseg.evaluation.coco import (
    IOU_TYPES,
    GroundTruth,
    coco_metrics_to_json,
    evaluate_coco,
    format_coco_table,
    instances_to_coco_results,
    load_ground_truth,
)
from ovseg.evaluation.evaluator import DatasetEvaluator, PerImageCocoResults
from ovseg.evaluation.groups import group_means, resolve_groups
from ovseg.evaluation.jsonio import dumps_indented
from ovseg.registry import EVALUATORS
from ovseg.structures import Instances


def as_instances(outputs: Any) -> Instances:
    """A prediction as ``Instances`` (the object itself, or a result's ``instances``)."""
    if isinstance(outputs, Instances):
        return outputs
    inner = getattr(outputs, "instances", None)
    if isinstance(inner, Instances):
        return inner
    raise TypeError(
        "The instance pipeline must return ovseg.structures.Instances, got "
        f"{type(outputs).__name__}; the config's pipelines.instance must build an "
        "instance-segmentation pipeline."
    )


@EVALUATORS.register(aliases=("coco_ap",))
class CocoInstanceEvaluator(PerImageCocoResults, DatasetEvaluator):
    """Collects predicted ``Instances`` image by image as COCO results; scores them by COCOeval.

    Args:
        gt: ground truth (pycocotools ``COCO``, e.g. a ``COCOInstances`` dataset's ``coco``, or
            an instances JSON path).
        category_ids: COCO category id of each label index; default: the ground truth's ids,
            sorted (the order of ``COCOInstances.class_names``).
        iou_types: any of "bbox", "segm" (masks are encoded only when "segm" is asked for).
        groups: optional named lists of category names; their mean per-category AP is added
            as ``metrics["groups"][iou_type][group]``, their mean per-category AP50 (the
            OV-COCO novel / base measure) as ``metrics["groups_ap50"][iou_type][group]``.

    ``process(inputs, outputs)``: ``inputs`` holds "image_id" (an image of the ground truth),
    ``outputs`` the ``Instances`` of that image (masks (N, H, W), boxes XYXY in its pixels,
    labels indexing the dataset's classes). An image without predictions counts as having no
    detection.
    """

    task = "instance"

    def __init__(
        self,
        gt: GroundTruth,
        category_ids: Sequence[int] | None = None,
        iou_types: Sequence[str] = IOU_TYPES,
        groups: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.gt = load_ground_truth(gt)
        self.category_ids = (
            [int(c) for c in category_ids] if category_ids is not None else sorted(self.gt.cats)
        )
        unknown = [c for c in self.category_ids if c not in self.gt.cats]
        if unknown:
            raise EvaluationError(
                f"category_ids {unknown} are not categories of the ground truth; pass the "
                "dataset's category_ids."
            )
        self.iou_types = [iou_types] if isinstance(iou_types, str) else list(iou_types)
        bad = [t for t in self.iou_types if t not in IOU_TYPES]
        if bad or not self.iou_types:
            raise ConfigError(f"iou_types must be some of {IOU_TYPES}, got {self.iou_types}.")
        self.groups = {str(k): list(v) for k, v in (groups or {}).items()}
        self.vocabulary = [self.gt.cats[c]["name"] for c in self.category_ids]
        self.reset()

    @classmethod
    def from_dataset(
        cls,
        dataset: Any,
        *,
        iou_types: Sequence[str] = IOU_TYPES,
        groups: Any = None,
        **settings: Any,
    ) -> CocoInstanceEvaluator:
        """The ground truth, category ids and class names of a COCO dataset (COCOInstances);
        ``settings`` go to the constructor of a subclass."""
        for attribute in ("coco", "category_ids", "class_names"):
            if not hasattr(dataset, attribute):
                raise ConfigError(
                    f"data.test ({type(dataset).__name__}) has no {attribute!r}; instance "
                    "evaluation needs a COCO dataset such as COCOInstances."
                )
        class_names = list(dataset.class_names)
        evaluator = cls(
            dataset.coco,
            dataset.category_ids,
            iou_types,
            resolve_groups(groups, dataset, class_names),
            **settings,
        )
        evaluator.vocabulary = class_names
        return evaluator

    def reset(self) -> None:
        self._per_image: list[tuple[int, list[dict[str, Any]]]] = []

    def process(self, inputs: Mapping[str, Any], outputs: Any) -> None:
        """Add the predictions for one ground-truth image.

        Raises:
            EvaluationError: the image id is not in the ground truth, the instances' class list
                does not match ``category_ids``, or the masks are not of the image's size.
            TypeError: ``outputs`` holds no ``Instances``.
        """
        instances = as_instances(outputs)
        image_id = int(inputs["image_id"])
        info = self.gt.imgs.get(image_id)
        if info is None:
            raise EvaluationError(
                f"image id {image_id} is not in the ground truth; evaluate against the "
                "annotation file of the images that were predicted."
            )
        if len(instances.class_names) != len(self.category_ids):
            raise EvaluationError(
                f"The instances name {len(instances.class_names)} classes but there are "
                f"{len(self.category_ids)} categories; predict with the dataset's class_names "
                "as vocabulary, in order."
            )
        size = (int(info["height"]), int(info["width"]))
        if "segm" in self.iou_types and len(instances) and instances.masks.shape[1:] != size:
            raise EvaluationError(
                f"Masks are {instances.masks.shape[2]}x{instances.masks.shape[1]} but image "
                f"{image_id} is {size[1]}x{size[0]}; resize the masks to the image size."
            )
        results = instances_to_coco_results(
            instances, image_id, self.category_ids, include_masks="segm" in self.iou_types
        )
        self._per_image.append((image_id, results))

    def evaluate(self) -> dict[str, Any]:
        """``evaluate_coco`` over the processed images (see its Returns), plus ``groups``.

        Raises:
            EvaluationError: nothing was processed, or an image was processed twice.
        """
        ids = [image_id for image_id, _ in self._per_image]
        if not ids:
            raise EvaluationError("No image was processed, so there is nothing to evaluate.")
        if len(set(ids)) != len(ids):
            repeated = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise EvaluationError(
                f"Images {repeated} were processed more than once; give each image to one "
                "process once (do not pad the shards)."
            )
        metrics = evaluate_coco(self.gt, self.results(), self.iou_types, img_ids=self.image_ids)
        if self.groups:
            for key, stat in (("groups", "AP"), ("groups_ap50", "AP50")):
                metrics[key] = {
                    iou_type: group_means(
                        {c["name"]: c[stat] for c in metrics[iou_type]["per_category"]},
                        self.groups,
                    )
                    for iou_type in metrics["iou_types"]
                    if iou_type in metrics
                }
        return metrics

    def format(self, results: Mapping[str, Any]) -> str:
        lines = [format_coco_table(results)]
        for key, stat in (("groups", "AP"), ("groups_ap50", "AP50")):
            for iou_type, means in results.get(key, {}).items():
                summary = ", ".join(f"{name} {value:.2f}" for name, value in means.items())
                lines.append(f"{iou_type} mean per-category {stat} by group: {summary}")
        return "\n".join(lines)

    def documents(self, results: Mapping[str, Any]) -> dict[str, str]:
        return {
            "results.json": dumps_indented(coco_metrics_to_json(results)),
            "coco_results.json": json.dumps(self.results(), allow_nan=False),
        }
