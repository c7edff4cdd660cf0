"""SAM 2's video memory as a streaming tracker with a bounded memory bank.

:class:`Sam2MemoryTracker` runs the modules of an (ovseg-loaded) ``SAM2Base`` the way
``sam2.SAM2VideoPredictor`` does for mask prompts and forward propagation, one frame at a time:

* frames: HWC uint8 RGB resized to ``image_size`` squared with PIL's default (bicubic) filter,
  scaled to [0, 1] and normalised with ImageNet mean / std, as ``sam2.utils.misc.load_video_frames``
  does; the image encoder runs once per frame for all objects;
* a new object: its ``(H, W)`` bool mask (input pixels) is resized to ``image_size`` (bilinear,
  antialiased, >= 0.5) and given to ``track_step`` as the mask prompt of an initial conditioning
  frame; its memory is then encoded from the low-resolution prediction resized back to
  ``image_size`` (bilinear), as ``propagate_in_video_preflight`` does;
* later frames: ``track_step`` with the object's own memory (one memory bank per object, as
  the predictor keeps per-object output dicts), holes of at most ``fill_hole_area``
  low-resolution pixels filled (score 0.1) before the memory is kept, the low-resolution logits
  resized bilinearly to the input size (``> 0`` is the mask), and the object present when SAM 2's
  object score logit is > 0;
* bounded memory: the predictor keeps every frame's output; here a frame's output is dropped once
  no later frame can read it: SAM 2 reads the last ``num_maskmem - 1`` memory frames (every
  ``memory_temporal_stride_for_eval``-th) and object pointers of the last
  ``max_obj_ptrs_in_encoder - 1`` frames, so an object holds at most
  :attr:`Sam2MemoryTracker.horizon` non-conditioning frames plus its conditioning frame(s).

Stored memory features are cast to bfloat16, as the predictor stores them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ovseg.errors import ConfigError
from ovseg.models.decoders.sam2 import small_regions

__all__ = ["Sam2FrameFeatures", "Sam2MemoryTracker"]

_MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
_STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]


@dataclass(frozen=True)
class Sam2FrameFeatures:
    """One frame through SAM 2's image encoder (batch 1): ``vision_feats`` / ``pos_embeds`` are
    ``(HW, 1, C)`` per level, ``feat_sizes`` their ``(h, w)``; ``size`` the input ``(H, W)``."""

    index: int
    vision_feats: list
    pos_embeds: list
    feat_sizes: list
    size: tuple[int, int]


@dataclass
class _ObjectMemory:
    cond: dict[int, dict[str, Any]] = field(default_factory=dict)
    non_cond: dict[int, dict[str, Any]] = field(default_factory=dict)


def fill_holes(logits: torch.Tensor, max_area: float) -> torch.Tensor:
    """Background regions (``<= 0``) of at most ``max_area`` pixels set to 0.1, as sam2's
    ``fill_holes_in_mask_scores`` (8-connected components, on the CPU)."""
    if max_area <= 0:
        return logits
    holes = small_regions(logits <= 0, max_area)
    return torch.where(holes, torch.full_like(logits, 0.1), logits)


class Sam2MemoryTracker:
    """Per-object SAM 2 memory, fed one frame at a time (see the module docstring).

    Args:
        model: a ``SAM2Base`` (from :func:`~ovseg.models.decoders.sam2_build.build_sam2_model`
            or a :class:`~ovseg.models.decoders.sam2.Sam2Decoder`'s ``model``).
        fill_hole_area: hole filling of the predictor (``build_sam2_video_predictor`` sets 8).
        num_frames: the video's length when known (SAM 2 caps the object pointers it reads at
            it); None: a stream of unknown length.
    """

    def __init__(
        self, model: nn.Module, fill_hole_area: float = 8.0, num_frames: int | None = None
    ) -> None:
        if not hasattr(model, "track_step") or not hasattr(model, "memory_attention"):
            raise ConfigError(
                "propagation 'sam2' needs a SAM 2 model (SAM2Base with its memory modules); "
                f"got {type(model).__name__}."
            )
        if int(model.num_maskmem) < 1:
            raise ConfigError("This SAM 2 model has no memory (num_maskmem 0); it cannot track.")
        self.model = model.eval()
        self.fill_hole_area = float(fill_hole_area)
        self.num_frames = num_frames
        self.objects: dict[int, _ObjectMemory] = {}
        self._pos_enc: list | None = None

    # ------------------------------------------------------------------ facts
    @property
    def image_size(self) -> int:
        return int(self.model.image_size)

    @property
    def horizon(self) -> int:
        """How many frames back a non-conditioning memory can still be read."""
        stride = int(self.model.memory_temporal_stride_for_eval)
        memory = 1 + stride * max(0, int(self.model.num_maskmem) - 2)
        pointers = (
            int(self.model.max_obj_ptrs_in_encoder) - 1 if self.model.use_obj_ptrs_in_encoder else 0
        )
        return max(memory + stride, pointers, 1)

    def _num_frames(self, frame_index: int) -> int:
        if self.num_frames is not None:
            return int(self.num_frames)
        # unknown length: large enough that SAM 2 reads its full pointer window
        return max(frame_index + 1, int(self.model.max_obj_ptrs_in_encoder))

    # ------------------------------------------------------------------ frames
    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """``(H, W, 3)`` uint8 RGB -> ``(1, 3, S, S)`` float normalised model input."""
        from PIL import Image

        size = self.image_size
        resized = np.asarray(Image.fromarray(image).convert("RGB").resize((size, size)))
        pixels = torch.from_numpy(resized / 255.0).permute(2, 0, 1).float()
        return ((pixels - _MEAN) / _STD)[None].to(self.model.device)

    @torch.inference_mode()
    def encode_frame(self, index: int, image: np.ndarray) -> Sam2FrameFeatures:
        """SAM 2's image encoder on one frame (shared by every object)."""
        backbone_out = self.model.forward_image(self.preprocess(image))
        _, feats, pos, sizes = self.model._prepare_backbone_features(backbone_out)
        return Sam2FrameFeatures(int(index), feats, pos, sizes, (image.shape[0], image.shape[1]))

    # ------------------------------------------------------------------ objects
    def _compact(self, out: dict[str, Any], pred_masks: torch.Tensor) -> dict[str, Any]:
        """What the predictor keeps of a frame's output (bfloat16 memory, one pos-enc copy)."""
        features = out["maskmem_features"]
        if out["maskmem_pos_enc"] is not None and self._pos_enc is None:
            self._pos_enc = [x[0:1].clone() for x in out["maskmem_pos_enc"]]
        return {
            "maskmem_features": None if features is None else features.to(torch.bfloat16),
            "maskmem_pos_enc": self._pos_enc if out["maskmem_pos_enc"] is not None else None,
            "pred_masks": pred_masks,
            "obj_ptr": out["obj_ptr"],
            "object_score_logits": out["object_score_logits"],
        }

    def _to_input_size(self, low_res: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(low_res.float(), size=size, mode="bilinear", align_corners=False)[0, 0]

    @torch.inference_mode()
    def add_object(
        self, object_id: int, frame: Sam2FrameFeatures, mask: np.ndarray
    ) -> torch.Tensor:
        """Start tracking ``object_id`` from its ``(H, W)`` bool mask on ``frame``; returns the
        ``(H, W)`` logits SAM 2 makes of the mask prompt."""
        if object_id in self.objects:
            raise ConfigError(f"Object {object_id} is tracked already.")
        size = self.image_size
        prompt = torch.as_tensor(np.asarray(mask, dtype=bool))[None, None].float()
        prompt = prompt.to(self.model.device)
        if prompt.shape[-2:] != (size, size):
            prompt = F.interpolate(
                prompt, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )
            prompt = (prompt >= 0.5).float()
        memory = _ObjectMemory()
        out = self.model.track_step(
            frame_idx=frame.index,
            is_init_cond_frame=True,
            current_vision_feats=frame.vision_feats,
            current_vision_pos_embeds=frame.pos_embeds,
            feat_sizes=frame.feat_sizes,
            point_inputs=None,
            mask_inputs=prompt,
            output_dict={"cond_frame_outputs": {}, "non_cond_frame_outputs": {}},
            num_frames=self._num_frames(frame.index),
            track_in_reverse=False,
            run_mem_encoder=False,
        )
        pred = fill_holes(out["pred_masks"], self.fill_hole_area)
        high_res = F.interpolate(pred, size=(size, size), mode="bilinear", align_corners=False)
        # build_sam2_video_predictor binarises prompted masks for the memory encoder; the
        # flag is read only there, so setting it around the call leaves image use unchanged
        flag = self.model.binarize_mask_from_pts_for_mem_enc
        self.model.binarize_mask_from_pts_for_mem_enc = True
        try:
            features, pos_enc = self.model._encode_new_memory(
                current_vision_feats=frame.vision_feats,
                feat_sizes=frame.feat_sizes,
                pred_masks_high_res=high_res,
                object_score_logits=out["object_score_logits"],
                is_mask_from_pts=True,  # the predictor encodes prompted frames this way
            )
        finally:
            self.model.binarize_mask_from_pts_for_mem_enc = flag
        out["maskmem_features"], out["maskmem_pos_enc"] = features, pos_enc
        memory.cond[frame.index] = self._compact(out, pred)
        self.objects[int(object_id)] = memory
        return self._to_input_size(pred, frame.size)

    def remove_object(self, object_id: int) -> None:
        self.objects.pop(int(object_id), None)

    @torch.inference_mode()
    def propagate(self, frame: Sam2FrameFeatures) -> dict[int, tuple[torch.Tensor, float]]:
        """Every tracked object on ``frame``: ``id -> ((H, W) logits, object score logit)``.

        Objects whose conditioning frame is ``frame`` return their prompt output."""
        results = {}
        for object_id, memory in self.objects.items():
            if frame.index in memory.cond:
                out = memory.cond[frame.index]
                results[object_id] = (
                    self._to_input_size(out["pred_masks"], frame.size),
                    float(out["object_score_logits"].reshape(-1)[0]),
                )
                continue
            out = self.model.track_step(
                frame_idx=frame.index,
                is_init_cond_frame=False,
                current_vision_feats=frame.vision_feats,
                current_vision_pos_embeds=frame.pos_embeds,
                feat_sizes=frame.feat_sizes,
                point_inputs=None,
                mask_inputs=None,
                output_dict={
                    "cond_frame_outputs": memory.cond,
                    "non_cond_frame_outputs": memory.non_cond,
                },
                num_frames=self._num_frames(frame.index),
                track_in_reverse=False,
                run_mem_encoder=True,
            )
            pred = fill_holes(out["pred_masks"], self.fill_hole_area)
            memory.non_cond[frame.index] = self._compact(out, pred)
            oldest = frame.index + 1 - self.horizon  # what frame index + 1 can still read
            for index in [i for i in memory.non_cond if i < oldest]:
                del memory.non_cond[index]
            results[object_id] = (
                self._to_input_size(pred, frame.size),
                float(out["object_score_logits"].reshape(-1)[0]),
            )
        return results

    def memory_frames(self) -> int:
        """Frames held in memory over all objects (conditioning and not)."""
        return sum(len(m.cond) + len(m.non_cond) for m in self.objects.values())
