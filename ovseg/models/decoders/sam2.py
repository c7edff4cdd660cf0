"""``Sam2Decoder``: SAM 2.1's image predictor behind the prompted-decoder interface.

Frames: the image enters as HWC uint8 RGB numpy in *input-image pixels*; points are ``(x, y)``
and boxes XYXY in the same pixels. As ``sam2.SAM2ImagePredictor`` does, the image is resized
(not padded) to a square of the model's ``image_size`` (torchvision ``Resize``, antialiased) and
normalised with ImageNet mean / std; prompts are divided by the image width / height and
multiplied by ``image_size`` in float32; boxes enter the prompt encoder as two corner points
(labels 2 and 3) before the clicks (the prompt encoder adds 0.5 in the model frame, as SAM's
does, so the integer point ``(x, y)`` is the pixel in column x, row y); low-resolution logits
(``image_size / 4``, returned clamped to [-32, 32] as the predictor returns them) are resized
bilinearly straight to the input size.

With ``max_hole_area`` / ``max_sprinkle_area`` > 0, background regions (8-connected, logits <=
``mask_threshold``) of at most that many low-resolution pixels become foreground (+10) and
foreground regions that small become background (-10) before the resize, as SAM2Transforms'
post-processing does with sam2's CUDA extension; here the regions are labelled on the CPU
(scipy), so it works without that extension.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from ovseg.errors import ConfigError
from ovseg.models.decoders.automatic import (
    AutomaticMaskSettings,
    MaskProposals,
    generate_proposals,
)
from ovseg.models.decoders.prompted import ImageEmbedding, PromptedMaskDecoder
from ovseg.models.decoders.sam2_build import build_sam2_model
from ovseg.registry import MASK_DECODERS

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
LOW_RES_CLAMP = 32.0  # SAM2ImagePredictor clamps returned low-resolution logits to +-32


def small_regions(binary: torch.Tensor, max_area: float) -> torch.Tensor:
    """``(..., h, w)`` bool -> True on the pixels of 8-connected regions of ``binary`` with at
    most ``max_area`` pixels (sam2's ``get_connected_components`` areas, compared with <=)."""
    flat = binary.detach().cpu().numpy().reshape(-1, *binary.shape[-2:])
    out = np.zeros_like(flat)
    for i, mask in enumerate(flat):
        labels, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
        if count == 0:
            continue
        areas = np.bincount(labels.ravel(), minlength=count + 1)
        small = areas <= max_area
        small[0] = False  # label 0 is outside ``binary``
        out[i] = small[labels]
    return torch.from_numpy(out).reshape(binary.shape).to(binary.device)


def fill_small_regions(
    logits: torch.Tensor, threshold: float, max_hole_area: float, max_sprinkle_area: float
) -> torch.Tensor:
    """Holes (<= ``max_hole_area``) set to ``threshold + 10``, sprinkles (<=
    ``max_sprinkle_area``) to ``threshold - 10``; both found on the input logits."""
    out = logits
    if max_hole_area > 0:
        holes = small_regions(logits <= threshold, max_hole_area)
        out = torch.where(holes, threshold + 10.0, out)
    if max_sprinkle_area > 0:
        sprinkles = small_regions(logits > threshold, max_sprinkle_area)
        out = torch.where(sprinkles, threshold - 10.0, out)
    return out


@dataclass(frozen=True)
class Sam2MaskSettings(AutomaticMaskSettings):
    """The knobs of ``Sam2Decoder.generate`` (defaults: ``SAM2AutomaticMaskGenerator``'s).

    Unlike SAM's generator: predicted IoU > 0.8 (not 0.88); masks are binarised at
    ``mask_threshold``; ``multimask_output=False`` asks one mask per point; ``use_m2m`` re-runs
    every candidate once with its own low-resolution logits as ``mask_input`` (single mask)
    before the filters; ``min_mask_region_area`` fills holes and removes sprinkles of the
    low-resolution logits (no clean-up of the final masks).
    """

    pred_iou_thresh: float = 0.8
    mask_threshold: float = 0.0
    use_m2m: bool = False
    multimask_output: bool = True


class Sam2Decoder(PromptedMaskDecoder):
    """A SAM 2.1 image model with the predictor's image state.

    Args:
        model_type: ``sam2.1_hiera_t`` / ``_s`` / ``_b+`` / ``_l`` (also ``..._tiny``,
            ``_small``, ``_base_plus``, ``_large``) or a ``.yaml`` config in sam2's layout.
        checkpoint: path of the weights (official ``sam2.1_hiera_*.pt`` or ``.safetensors``);
            default: the released file in torch hub's ``checkpoints`` folder.
        overrides: dotted config keys to change (see ``sam2_build.sam2_config``).
        device: where the model runs (default CPU).
        multimask: default of ``predict``'s ``multimask``.
        mask_threshold: logit above which a pixel is in the mask.
        max_hole_area, max_sprinkle_area: low-resolution region clean-up (see module doc).
    """

    def __init__(
        self,
        model_type: str | os.PathLike = "sam2.1_hiera_t",
        checkpoint: str | os.PathLike | None = None,
        overrides: Mapping[str, Any] | None = None,
        device: str | torch.device | None = None,
        multimask: bool = True,
        mask_threshold: float = 0.0,
        max_hole_area: float = 0.0,
        max_sprinkle_area: float = 0.0,
    ) -> None:
        super().__init__()
        model = build_sam2_model(model_type, checkpoint, overrides=overrides, device=device)
        self._setup(model, multimask, mask_threshold, max_hole_area, max_sprinkle_area)

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        multimask: bool = True,
        mask_threshold: float = 0.0,
        max_hole_area: float = 0.0,
        max_sprinkle_area: float = 0.0,
    ) -> Sam2Decoder:
        """Wrap an already built ``SAM2Base`` (its device is kept)."""
        decoder = cls.__new__(cls)
        nn.Module.__init__(decoder)
        decoder._setup(model, multimask, mask_threshold, max_hole_area, max_sprinkle_area)
        return decoder

    def _setup(
        self,
        model: nn.Module,
        multimask: bool,
        mask_threshold: float,
        max_hole_area: float,
        max_sprinkle_area: float,
    ) -> None:
        from sam2.utils.transforms import SAM2Transforms

        if max_hole_area < 0 or max_sprinkle_area < 0:
            raise ConfigError("max_hole_area and max_sprinkle_area must be >= 0.")
        self.model = model.eval()
        self.multimask = bool(multimask)
        self._mask_threshold = float(mask_threshold)
        self.max_hole_area = float(max_hole_area)
        self.max_sprinkle_area = float(max_sprinkle_area)
        # the predictor's own resize + normalisation, so the pixels match it exactly (it
        # scripts them with torch.jit, which newer torch versions flag as deprecated)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
            self.transforms = SAM2Transforms(
                resolution=self.img_size, mask_threshold=self._mask_threshold
            )
        self._reset_state()

    # ------------------------------------------------------------------ model facts
    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def img_size(self) -> int:
        """Side of the square model input (1024 for the released models)."""
        return int(self.model.image_size)

    @property
    def low_res_size(self) -> tuple[int, int]:
        return tuple(self.model.sam_prompt_encoder.mask_input_size)

    @property
    def mask_threshold(self) -> float:
        return self._mask_threshold

    @property
    def num_multimask_outputs(self) -> int:
        return int(self.model.sam_mask_decoder.num_multimask_outputs)

    # ------------------------------------------------------------------ image
    @torch.no_grad()
    def embed(self, image: np.ndarray) -> ImageEmbedding:
        """Hiera + FPN features of an HWC uint8 RGB image: the ``(1, C, s/16, s/16)``
        embedding (plus ``no_mem_embed`` as on a frame without memory) and the two finer maps."""
        pixels = self.transforms(image)[None].to(self.device)
        backbone_out = self.model.forward_image(pixels)
        _, vision_feats, _, feat_sizes = self.model._prepare_backbone_features(backbone_out)
        if self.model.directly_add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + self.model.no_mem_embed
        maps = [
            feat.permute(1, 2, 0).view(1, -1, *size)
            for feat, size in zip(vision_feats, feat_sizes, strict=True)
        ]
        return ImageEmbedding(
            features=maps[-1],
            input_size=(self.img_size, self.img_size),
            original_size=(int(image.shape[0]), int(image.shape[1])),
            high_res_features=tuple(maps[:-1]),
        )

    # ------------------------------------------------------------------ prompts
    def to_model_frame(self, xy: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """``(..., 2)`` ``(x, y)`` input pixels -> float32 model pixels (``/ W * size``)."""
        height, width = original_size
        xy = xy.float().clone()
        xy[..., 0] = xy[..., 0] / width
        xy[..., 1] = xy[..., 1] / height
        return xy * self.img_size

    def prompts_to_model_frame(
        self,
        coords: torch.Tensor | None,
        boxes: torch.Tensor | None,
        original_size: tuple[int, int],
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if coords is not None:
            coords = self.to_model_frame(coords, original_size)
        if boxes is not None:
            boxes = self.to_model_frame(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)
        return coords, boxes

    # ------------------------------------------------------------------ decoding
    @torch.no_grad()
    def decode(
        self,
        embedding: ImageEmbedding,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
        multimask: bool,
        region_threshold: float | None = None,
        max_hole_area: float | None = None,
        max_sprinkle_area: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One decoder call for N prompts in the model frame (float32).

        Returns ``(logits (N, K, H, W) in input pixels, iou (N, K), low-res logits (N, K, h, w)
        clamped to +-32)``. The region clean-up uses the decoder's settings unless given.
        """
        device = self.device
        points = None
        if coords is not None:
            points = (coords.to(device), labels.to(device=device, dtype=torch.int32))
        if boxes is not None:
            corners = boxes.to(device).reshape(-1, 2, 2)
            corner_labels = torch.tensor([[2, 3]], dtype=torch.int32, device=device)
            corner_labels = corner_labels.repeat(corners.shape[0], 1)
            if points is None:
                points = (corners, corner_labels)
            else:  # the box corners go first, as SAM2ImagePredictor concatenates them
                points = (
                    torch.cat([corners, points[0]], dim=1),
                    torch.cat([corner_labels, points[1]], dim=1),
                )
        sparse, dense = self.model.sam_prompt_encoder(
            points=points,
            boxes=None,
            masks=masks.to(device) if masks is not None else None,
        )
        low_res, iou, _, _ = self.model.sam_mask_decoder(
            image_embeddings=embedding.features,
            image_pe=self.model.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            # one image for N prompts; with N = 1 this is a copy of the same numbers
            repeat_image=True,
            high_res_features=list(embedding.high_res_features),
        )
        low_res = low_res.float()
        filled = fill_small_regions(
            low_res,
            self._mask_threshold if region_threshold is None else region_threshold,
            self.max_hole_area if max_hole_area is None else max_hole_area,
            self.max_sprinkle_area if max_sprinkle_area is None else max_sprinkle_area,
        )
        logits = F.interpolate(
            filled, embedding.original_size, mode="bilinear", align_corners=False
        )
        return logits, iou, low_res.clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP)

    # ------------------------------------------------------------------ automatic masks
    def _grid_masks(
        self, settings: Sam2MaskSettings, embedding: ImageEmbedding, points: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``SAM2AutomaticMaskGenerator._process_batch`` up to the filters: logits
        ``(B*K, h, w)``, iou ``(B*K,)`` and float32 points ``(B*K, 2)`` in crop pixels."""
        points = points.float()
        # the generator's predictor is built with mask_threshold 0 and the region clean-up of
        # min_mask_region_area, whatever the generator's own mask_threshold
        regions = {
            "region_threshold": 0.0,
            "max_hole_area": float(settings.min_mask_region_area),
            "max_sprinkle_area": float(settings.min_mask_region_area),
        }
        frame = embedding.original_size
        coords = self.to_model_frame(points, frame)[:, None, :]
        labels = torch.ones((len(points), 1), dtype=torch.int32)
        logits, iou, low_res = self.decode(
            embedding, coords, labels, None, None, settings.multimask_output, **regions
        )
        k = logits.shape[1]
        logits, iou, low_res = logits.flatten(0, 1), iou.flatten(0, 1), low_res.flatten(0, 1)
        points = points.repeat_interleave(k, dim=0)
        if settings.use_m2m:
            refined, refined_iou = [], []
            coords = self.to_model_frame(points, frame)[:, None, :]
            for start in range(0, len(points), settings.points_per_batch):
                part = slice(start, start + settings.points_per_batch)
                out, out_iou, _ = self.decode(
                    embedding,
                    coords[part],
                    torch.ones((coords[part].shape[0], 1), dtype=torch.int32),
                    None,
                    low_res[part, None],
                    False,
                    **regions,
                )
                refined.append(out[:, 0])
                refined_iou.append(out_iou[:, 0])
            logits, iou = torch.cat(refined), torch.cat(refined_iou)
        return logits, iou, points.to(logits.device)

    def _generate(
        self, image: np.ndarray, embedding: ImageEmbedding, **kwargs: Any
    ) -> MaskProposals:
        """Automatic mask proposals, as ``SAM2AutomaticMaskGenerator`` (binary masks).

        Keyword arguments are :class:`Sam2MaskSettings` fields (defaults: 32 points per side, batches
        of 64, predicted IoU > 0.8, stability >= 0.95, box NMS 0.7, multimask, no m2m, no
        crops, no region clean-up).
        """
        settings = Sam2MaskSettings.create(**kwargs)
        return generate_proposals(
            self,
            settings,
            grid_masks=partial(self._grid_masks, settings),
            threshold=settings.mask_threshold,
            clean_small_regions=False,
            image=image,
            embedding=embedding,
        )


MASK_DECODERS.register("Sam2Decoder")(Sam2Decoder)
