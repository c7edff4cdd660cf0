"""Automatic mask proposals: SAM prompted with a grid of points, filtered and de-duplicated.

The procedure and its numbers are those of ``segment_anything.SamAutomaticMaskGenerator``:

1. Crops: the whole image, then for crop layer ``i = 1..n`` a ``2^i x 2^i`` grid of overlapping
   crops (overlap ``int(ratio * short_side * 2 / 2^i)``); every crop is embedded on its own.
2. In each crop a regular grid of ``points_per_side`` points (``/ downscale^i`` in layer i), at
   cell centres, is fed ``points_per_batch`` at a time as single foreground points with
   multimask output: 3 candidate masks per point, as logits in crop pixels.
3. Per batch: keep predicted IoU ``> pred_iou_thresh``; stability score = area of
   ``logits > +offset`` / area of ``logits > -offset``, keep ``>= stability_score_thresh``;
   binarise at 0; box of each mask; drop masks whose box lies within 20 px of a crop edge that
   is not an image edge.
4. Per crop: box NMS (``box_nms_thresh``) ranked by predicted IoU; with several crops, NMS
   across crops (``crop_nms_thresh``) preferring smaller crops.
5. With ``min_mask_region_area > 0``: fill holes, then remove islands, smaller than that area
   (8-connected; if every island is small the largest stays); changed masks rank below
   unchanged ones in a last box NMS at ``max(box_nms_thresh, crop_nms_thresh)``.

NMS runs on SAM's boxes (inclusive last pixel); the returned boxes use pixel edges (exclusive
``x2, y2``), i.e. SAM's box + ``[0, 0, 1, 1]``. Thresholds 0 switch a filter off, as in SAM.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from itertools import product
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy import ndimage
from torchvision.ops import batched_nms

from ovseg.errors import ConfigError
from ovseg.models.decoders.prompted import ImageEmbedding, PromptedMaskDecoder
from ovseg.settings import check_known_keys

if TYPE_CHECKING:
    from ovseg.models.decoders.sam import SamDecoder

MASK_BATCH_BYTES = 512 * 2**20
CROP_EDGE_TOLERANCE = 20.0  # pixels, as SAM's is_box_near_crop_edge
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass
class MaskProposals:
    """M proposed masks of one image, best first within each NMS stage.

    Attributes:
        masks: ``(M, H, W)`` bool, in input-image pixels.
        iou_scores: ``(M,)`` float32, predicted IoU.
        stability_scores: ``(M,)`` float32.
        boxes: ``(M, 4)`` float32 XYXY pixel edges (x2, y2 exclusive); zeros for an empty mask.
        point_coords: ``(M, 2)`` float32 ``(x, y)`` input pixels of the prompt point.
        crop_boxes: ``(M, 4)`` float32 XYXY of the crop the mask was predicted in.
    """

    masks: torch.Tensor
    iou_scores: torch.Tensor
    stability_scores: torch.Tensor
    boxes: torch.Tensor
    point_coords: torch.Tensor
    crop_boxes: torch.Tensor

    def __len__(self) -> int:
        return int(self.iou_scores.shape[0])


@dataclass(frozen=True)
class AutomaticMaskSettings:
    """The knobs of :func:`generate_proposals` (defaults: SamAutomaticMaskGenerator's)."""

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    min_mask_region_area: int = 0

    @classmethod
    def create(cls, **kwargs: Any) -> AutomaticMaskSettings:
        check_known_keys(
            kwargs, (f.name for f in dataclasses.fields(cls)), "automatic mask settings"
        )
        settings = cls(**kwargs)
        if settings.points_per_side < 1 or settings.points_per_batch < 1:
            raise ConfigError("points_per_side and points_per_batch must be at least 1.")
        if settings.crop_n_layers < 0 or settings.crop_n_points_downscale_factor < 1:
            raise ConfigError("crop_n_layers must be >= 0 and the downscale factor >= 1.")
        if settings.min_mask_region_area < 0:
            raise ConfigError("min_mask_region_area must be >= 0.")
        return settings


# ---------------------------------------------------------------------------- geometry
def point_grid(points_per_side: int) -> np.ndarray:
    """``(n*n, 2)`` float64 ``(x, y)`` in [0, 1]: cell centres, x varying fastest."""
    offset = 1.0 / (2 * points_per_side)
    side = np.linspace(offset, 1 - offset, points_per_side)
    xs, ys = np.meshgrid(side, side, indexing="xy")
    return np.stack([xs.ravel(), ys.ravel()], axis=-1)


def crop_boxes(
    height: int, width: int, n_layers: int, overlap_ratio: float
) -> list[tuple[tuple[int, int, int, int], int]]:
    """``[((x0, y0, x1, y1), layer), ...]``: the image, then each layer's overlapping crops."""
    boxes = [((0, 0, width, height), 0)]
    short_side = min(height, width)
    for layer in range(1, n_layers + 1):
        per_side = 2**layer
        overlap = int(overlap_ratio * short_side * (2 / per_side))
        crop_w = math.ceil((overlap * (per_side - 1) + width) / per_side)
        crop_h = math.ceil((overlap * (per_side - 1) + height) / per_side)
        starts_x = [int((crop_w - overlap) * i) for i in range(per_side)]
        starts_y = [int((crop_h - overlap) * i) for i in range(per_side)]
        for x0, y0 in product(starts_x, starts_y):
            boxes.append(((x0, y0, min(x0 + crop_w, width), min(y0 + crop_h, height)), layer))
    return boxes


def mask_boxes_inclusive(masks: torch.Tensor) -> torch.Tensor:
    """``(M, H, W)`` bool -> ``(M, 4)`` XYXY of the first and last mask pixel (zeros if empty)."""
    if masks.shape[0] == 0:
        return torch.zeros((0, 4), dtype=torch.int64, device=masks.device)
    height, width = masks.shape[-2:]
    rows, cols = masks.any(dim=2), masks.any(dim=1)  # (M, H), (M, W)
    top = rows.to(torch.uint8).argmax(dim=1)
    bottom = height - 1 - rows.flip(1).to(torch.uint8).argmax(dim=1)
    left = cols.to(torch.uint8).argmax(dim=1)
    right = width - 1 - cols.flip(1).to(torch.uint8).argmax(dim=1)
    boxes = torch.stack([left, top, right, bottom], dim=1)
    return boxes * rows.any(dim=1, keepdim=True)


def stability_scores(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU of the masks at ``threshold + offset`` and ``threshold - offset`` (the first lies
    inside the second), per mask of ``(M, H, W)`` logits; NaN where both are empty."""
    inner = (logits > threshold + offset).sum(dim=(-1, -2))
    outer = (logits > threshold - offset).sum(dim=(-1, -2))
    return inner.float() / outer.float()


def near_crop_edge(
    boxes: torch.Tensor, crop: tuple[int, int, int, int], image: tuple[int, int, int, int]
) -> torch.Tensor:
    """``(M,)`` True where a box (image frame) touches a crop edge that is not an image edge."""
    crop_t = torch.tensor(crop, dtype=torch.float32, device=boxes.device)
    image_t = torch.tensor(image, dtype=torch.float32, device=boxes.device)
    boxes = boxes.float()
    at_crop = (boxes - crop_t).abs() <= CROP_EDGE_TOLERANCE
    at_image = (boxes - image_t).abs() <= CROP_EDGE_TOLERANCE
    return (at_crop & ~at_image).any(dim=1)


def _nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    categories = torch.zeros(len(boxes), dtype=torch.int64, device=boxes.device)
    return batched_nms(boxes.float(), scores.float(), categories, iou_threshold=threshold)


# ---------------------------------------------------------------------------- small regions
def remove_small_regions(mask: np.ndarray, min_area: int, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes (``mode="holes"``) or drop islands (``"islands"``) of < ``min_area`` pixels.

    Components are 8-connected. Holes are the components of the background (the outer
    background counts as well, as in SAM). When every island is small, the largest stays.
    Returns ``(mask, changed)``.
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', not {mode!r}")
    fill_holes = mode == "holes"
    regions, count = ndimage.label(mask != fill_holes, structure=_EIGHT_CONNECTED)
    sizes = np.bincount(regions.ravel(), minlength=count + 1)[1:]
    small = sizes < min_area
    if not small.any():
        return mask, False
    if fill_holes:
        keep = np.concatenate([[True], small])  # label 0 is the mask itself
    else:
        keep = np.concatenate([[False], ~small])
        if not keep.any():
            keep[int(np.argmax(sizes)) + 1] = True
    return keep[regions], True


def _clean_small_regions(
    proposals: dict[str, torch.Tensor], min_area: int, nms_thresh: float
) -> dict[str, torch.Tensor]:
    if len(proposals["iou_scores"]) == 0:
        return proposals
    masks = proposals["masks"]
    cleaned, unchanged = [], []
    for mask in masks.cpu().numpy():
        mask, holes_changed = remove_small_regions(mask, min_area, "holes")
        mask, islands_changed = remove_small_regions(mask, min_area, "islands")
        cleaned.append(torch.from_numpy(mask))
        unchanged.append(not (holes_changed or islands_changed))
    new_masks = torch.stack(cleaned).to(masks.device)
    new_boxes = mask_boxes_inclusive(new_masks)
    scores = torch.tensor(unchanged, dtype=torch.float32, device=new_boxes.device)
    keep = _nms(new_boxes, scores, nms_thresh)
    changed = ~torch.tensor(unchanged, device=masks.device)
    out = dict(proposals)
    out["masks"] = torch.where(changed[:, None, None], new_masks, masks)
    out["boxes"] = torch.where(changed[:, None], new_boxes, proposals["boxes"])
    return {k: v[keep.to(v.device)] for k, v in out.items()}


# ---------------------------------------------------------------------------- generation
def sam_grid_masks(
    decoder: SamDecoder, embedding: ImageEmbedding, points: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SAM's masks for ``(B, 2)`` float64 single foreground points in crop pixels, multimask.

    Returns ``(logits (B*K, h, w) in crop pixels, iou (B*K,), points (B*K, 2))``, the K masks
    of each point together.
    """
    # float64 prompts, as SAM's generator passes them, so the numbers match exactly
    coords = decoder.to_model_frame(points, embedding.original_size)[:, None, :]
    labels = torch.ones((len(points), 1), dtype=torch.int64)
    logits, iou, _ = decoder.decode(embedding, coords, labels, None, None, multimask=True)
    k = logits.shape[1]
    prompt_points = points.repeat_interleave(k, dim=0).to(logits.device)
    return logits.flatten(0, 1), iou.flatten(0, 1), prompt_points


GridMasks = Callable[
    [ImageEmbedding, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]
]


def _crop_proposals(
    grid_masks: GridMasks,
    threshold: float,
    embedding: ImageEmbedding,
    crop: tuple[int, int, int, int],
    grid: np.ndarray,
    image_size: tuple[int, int],
    settings: AutomaticMaskSettings,
) -> dict[str, torch.Tensor]:
    """Proposals of one crop, after the per-crop NMS, in image coordinates."""
    x0, y0, x1, y1 = crop
    crop_h, crop_w = embedding.original_size
    height, width = image_size
    points = grid * np.array([[crop_w, crop_h]], dtype=np.float64)
    parts: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("masks", "iou_scores", "stability_scores", "boxes", "point_coords")
    }
    # A batch's logits are (points x 3, H, W) float32 at the crop's size: on large images the
    # batch shrinks to stay within MASK_BATCH_BYTES (each point's masks are the same).
    batch_size = max(1, min(settings.points_per_batch, MASK_BATCH_BYTES // (12 * crop_h * crop_w)))
    for start in range(0, len(points), batch_size):
        batch = torch.from_numpy(points[start : start + batch_size])
        logits, iou, prompt_points = grid_masks(embedding, batch)
        keep = torch.ones_like(iou, dtype=torch.bool)
        if settings.pred_iou_thresh > 0:
            keep &= iou > settings.pred_iou_thresh
        logits, iou, prompt_points = logits[keep], iou[keep], prompt_points[keep]
        stability = stability_scores(logits, threshold, settings.stability_score_offset)
        if settings.stability_score_thresh > 0:
            keep = stability >= settings.stability_score_thresh
            logits, iou, prompt_points, stability = (
                logits[keep],
                iou[keep],
                prompt_points[keep],
                stability[keep],
            )
        masks = logits > threshold
        del logits
        boxes = mask_boxes_inclusive(masks)
        offset = torch.tensor([x0, y0, x0, y0], device=boxes.device)
        keep = ~near_crop_edge(boxes + offset, crop, (0, 0, width, height))
        masks, iou, prompt_points, stability, boxes = (
            masks[keep],
            iou[keep],
            prompt_points[keep],
            stability[keep],
            boxes[keep],
        )
        if crop != (0, 0, width, height):
            pad = (x0, width - x1, y0, height - y1)
            masks = torch.nn.functional.pad(masks, pad, value=False)
        parts["masks"].append(masks)
        parts["iou_scores"].append(iou)
        parts["stability_scores"].append(stability)
        parts["boxes"].append(boxes)
        parts["point_coords"].append(prompt_points)
    data = {k: torch.cat(v) for k, v in parts.items()}
    keep = _nms(data["boxes"], data["iou_scores"], settings.box_nms_thresh)
    data = {k: v[keep.to(v.device)] for k, v in data.items()}
    data["boxes"] = data["boxes"] + torch.tensor([x0, y0, x0, y0], device=data["boxes"].device)
    data["point_coords"] = data["point_coords"] + torch.tensor(
        [x0, y0], dtype=torch.float64, device=data["point_coords"].device
    )
    data["crop_boxes"] = torch.tensor([crop], device=data["boxes"].device).expand(len(keep), 4)
    return data


def generate_proposals(
    decoder: PromptedMaskDecoder,
    settings: AutomaticMaskSettings,
    grid_masks: GridMasks | None = None,
    threshold: float | None = None,
    clean_small_regions: bool = True,
    *,
    image: np.ndarray | None = None,
    embedding: ImageEmbedding | None = None,
) -> MaskProposals:
    """Automatic masks (see the module docstring) for ``image`` (HWC uint8 RGB) and its
    ``embedding`` from ``decoder.embed``, by default for the image set on ``decoder``.

    Crops other than the whole image are embedded on their own; the decoder's image state is
    left as it was. ``grid_masks`` predicts the masks of a batch of grid points (default:
    :func:`sam_grid_masks`), ``threshold`` binarises them (default: the decoder's), and
    ``clean_small_regions=False`` skips step 5 (SAM 2 fills small regions of the low-resolution
    logits instead).
    """
    if grid_masks is None:
        grid_masks = partial(sam_grid_masks, decoder)
    if threshold is None:
        threshold = decoder.mask_threshold
    image = decoder.image if image is None else image
    height, width = image.shape[:2]
    full = decoder.embedding if embedding is None else embedding
    results = []
    for crop, layer in crop_boxes(
        height, width, settings.crop_n_layers, settings.crop_overlap_ratio
    ):
        per_side = int(settings.points_per_side / settings.crop_n_points_downscale_factor**layer)
        x0, y0, x1, y1 = crop
        embedding = full if layer == 0 else decoder.embed(image[y0:y1, x0:x1, :])
        results.append(
            _crop_proposals(
                grid_masks,
                threshold,
                embedding,
                crop,
                point_grid(per_side),
                (height, width),
                settings,
            )
        )
    data = {k: torch.cat([r[k] for r in results]) for k in results[0]}
    if len(results) > 1:
        crops = data["crop_boxes"].float()
        areas = (crops[:, 2] - crops[:, 0]) * (crops[:, 3] - crops[:, 1])
        keep = _nms(data["boxes"], 1 / areas, settings.crop_nms_thresh)
        data = {k: v[keep.to(v.device)] for k, v in data.items()}
    if clean_small_regions and settings.min_mask_region_area > 0:
        data = _clean_small_regions(
            data,
            settings.min_mask_region_area,
            max(settings.box_nms_thresh, settings.crop_nms_thresh),
        )
    boxes = data["boxes"].float()
    non_empty = data["masks"].flatten(1).any(dim=1)
    edges = boxes + torch.tensor([0.0, 0.0, 1.0, 1.0], device=boxes.device) * non_empty[:, None]
    return MaskProposals(
        masks=data["masks"],
        iou_scores=data["iou_scores"].float(),
        stability_scores=data["stability_scores"].float(),
        boxes=edges,
        point_coords=data["point_coords"].float(),
        crop_boxes=data["crop_boxes"].float(),
    )
