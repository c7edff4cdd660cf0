"""The prompted-decoder interface shared by the SAM family (SAM, SAM 2, HQ-SAM).

:class:`PromptedMaskDecoder` keeps one embedded image (``set_image`` once, ``predict`` many
times), checks prompts and returns :class:`MaskPrediction`; a family supplies how an image is
embedded (``embed``), how prompts reach the model frame (``prompts_to_model_frame``) and one
decoder call (``decode``). Frames: images are HWC uint8 RGB numpy in *input-image pixels*;
points are ``(x, y)`` and boxes XYXY in the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ovseg.errors import PromptError
from ovseg.io import read_image

if TYPE_CHECKING:
    from ovseg.models.decoders.automatic import MaskProposals

ArrayLike = np.ndarray | torch.Tensor


@dataclass
class MaskPrediction:
    """Masks for N prompts, K per prompt (3 with multimask output, else 1).

    Attributes:
        masks: ``(N, K, H, W)`` bool, in input-image pixels.
        iou_scores: ``(N, K)`` float32, the model's estimate of each mask's IoU.
        low_res_logits: ``(N, K, h, w)`` float32 mask logits in the padded model frame
            (``h = w = 4 * img_size / patch``: 256 for the official models); they can be fed
            back as ``mask_input``.
    """

    masks: torch.Tensor
    iou_scores: torch.Tensor
    low_res_logits: torch.Tensor

    def best(self, prompt: int = 0) -> tuple[np.ndarray, float, int]:
        """The mask of ``prompt`` with the highest predicted IoU (the first on ties):
        ``(H, W)`` bool numpy, that IoU, and its index among the ``K`` masks."""
        scores = self.iou_scores[prompt].detach().float().cpu()
        index = int(torch.argmax(scores))
        return self.masks[prompt, index].detach().cpu().numpy(), float(scores[index]), index


#: box prompts per decoder call in :func:`masks_for_boxes` (bounds the memory of one call's masks)
BOX_PROMPTS_PER_CALL = 64


def masks_for_boxes(
    decoder: Any, embedding: Any, boxes: np.ndarray, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """One mask per box prompt: ``(N, 4)`` XYXY input-pixel boxes -> ``(N, H, W)`` bool CPU
    masks and ``(N,)`` float32 predicted IoUs, one single-mask ``decoder.predict`` call per
    :data:`BOX_PROMPTS_PER_CALL` boxes on the kept ``embedding``; ``size`` is ``(H, W)``."""
    height, width = size
    masks = [torch.zeros(0, height, width, dtype=torch.bool)]
    ious = [torch.zeros(0)]
    for start in range(0, len(boxes), BOX_PROMPTS_PER_CALL):
        prediction = decoder.predict(
            boxes=boxes[start : start + BOX_PROMPTS_PER_CALL],
            multimask=False,
            embedding=embedding,
        )
        masks.append(prediction.masks[:, 0].detach().cpu().bool())
        ious.append(prediction.iou_scores[:, 0].detach().float().cpu())
    return torch.cat(masks), torch.cat(ious)


@dataclass
class ImageEmbedding:
    """One embedded image: features ``(1, C, e, e)``, the resized size before padding ``(h, w)``
    and the input-image size ``(H, W)``; SAM 2 adds its finer feature maps
    (``(1, C/8, 4e, 4e)`` and ``(1, C/4, 2e, 2e)``) as ``high_res_features``."""

    features: torch.Tensor
    input_size: tuple[int, int]
    original_size: tuple[int, int]
    high_res_features: tuple[torch.Tensor, ...] = ()


def as_rgb_image(image: Any) -> np.ndarray:
    """HWC uint8 RGB numpy as it is; anything else through ``ovseg.io.read_image``."""
    if (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and image.ndim == 3
        and image.shape[2] == 3
    ):
        return image
    return read_image(image)


def _as_tensor(value: ArrayLike) -> torch.Tensor:
    """A detached CPU tensor of numpy / tensor / nested-list input."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    return torch.as_tensor(np.asarray(value))


def _as_float64(value: ArrayLike, what: str) -> torch.Tensor:
    tensor = _as_tensor(value)
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise PromptError(f"{what} must hold real numbers, got dtype {tensor.dtype}.")
    tensor = tensor.to(torch.float64)
    if not torch.isfinite(tensor).all():
        raise PromptError(f"{what} holds NaN or infinite values; pass finite pixel coordinates.")
    return tensor


class PromptedMaskDecoder(nn.Module):
    """Image state and prompt checking of a SAM-family decoder (subclasses add the model).

    Subclasses set ``self.model`` and ``self.multimask`` (through :meth:`_reset_state`) and
    implement :meth:`embed`, :meth:`prompts_to_model_frame`, :meth:`decode`, :meth:`generate`
    and the properties ``device``, ``low_res_size``, ``mask_threshold`` and
    ``num_multimask_outputs``.
    """

    multimask: bool

    def _reset_state(self) -> None:
        self._embedding: ImageEmbedding | None = None
        self._image: np.ndarray | None = None

    # ------------------------------------------------------------------ family specifics
    @property
    def device(self) -> torch.device:
        raise NotImplementedError

    @property
    def low_res_size(self) -> tuple[int, int]:
        """``(h, w)`` of the low-resolution logits and of ``mask_input``."""
        raise NotImplementedError

    @property
    def mask_threshold(self) -> float:
        """Logit above which a pixel belongs to the mask."""
        raise NotImplementedError

    @property
    def num_multimask_outputs(self) -> int:
        """Masks per prompt with multimask output (3 for the released models)."""
        raise NotImplementedError

    def embed(self, image: np.ndarray) -> ImageEmbedding:
        """Embed an HWC uint8 RGB image without touching the decoder's image state."""
        raise NotImplementedError

    def embed_batch(
        self, images: list[np.ndarray], batch_size: int | None = None
    ) -> list[ImageEmbedding]:
        """:meth:`embed` of several images (families that can batch the encoder override it)."""
        return [self.embed(image) for image in images]

    def prompts_to_model_frame(
        self,
        coords: torch.Tensor | None,
        boxes: torch.Tensor | None,
        original_size: tuple[int, int],
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """float64 ``(N, P, 2)`` points and ``(N, 4)`` boxes in input pixels -> float32 in the
        model frame."""
        raise NotImplementedError

    def decode(
        self,
        embedding: ImageEmbedding,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
        multimask: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One decoder call for N prompts in the model frame: ``(logits (N, K, H, W) in input
        pixels, iou (N, K), low-res logits (N, K, h, w))``."""
        raise NotImplementedError

    def generate(
        self,
        image: np.ndarray | None = None,
        *,
        embedding: ImageEmbedding | None = None,
        **kwargs: Any,
    ) -> MaskProposals:
        """Automatic mask proposals over the whole image.

        ``image`` (HWC uint8 RGB) with its ``embedding`` (from :meth:`embed`) leaves the
        decoder's image state alone; ``image`` alone is set first; neither uses the set image.
        Keyword arguments are the family's automatic-mask settings.
        """
        if embedding is not None:
            if image is None:
                raise PromptError("generate(embedding=...) needs the image it was embedded from.")
            return self._generate(as_rgb_image(image), embedding, **kwargs)
        if image is not None:
            self.set_image(image)
        return self._generate(self.image, self._require_image(), **kwargs)

    def _generate(
        self, image: np.ndarray, embedding: ImageEmbedding, **kwargs: Any
    ) -> MaskProposals:
        """Proposals of ``image`` (HWC uint8 RGB) from its ``embedding``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ image state
    @property
    def is_image_set(self) -> bool:
        return self._embedding is not None

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the image given to ``set_image``."""
        return self._require_image().original_size

    @property
    def image(self) -> np.ndarray:
        """The HWC uint8 RGB image given to ``set_image``."""
        self._require_image()
        assert self._image is not None
        return self._image

    @property
    def embedding(self) -> ImageEmbedding:
        """The embedding of the set image (features and sizes)."""
        return self._require_image()

    @property
    def features(self) -> torch.Tensor:
        """The image embedding ``(1, C, e, e)`` of the set image."""
        return self._require_image().features

    def set_image(self, image: np.ndarray) -> None:
        """Embed ``image`` (HWC uint8 RGB; other forms go through ``read_image``) once."""
        array = as_rgb_image(image)
        self.reset_image()
        self._embedding = self.embed(array)
        self._image = array

    def reset_image(self) -> None:
        """Forget the set image and its embedding."""
        self._embedding = None
        self._image = None

    def _require_image(self) -> ImageEmbedding:
        if self._embedding is None:
            raise PromptError("No image is set; call set_image(image) before predicting masks.")
        return self._embedding

    # ------------------------------------------------------------------ prompts
    def _check_prompts(
        self,
        point_coords: ArrayLike | None,
        point_labels: ArrayLike | None,
        boxes: ArrayLike | None,
        mask_input: ArrayLike | None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Validated CPU tensors: coords (N, P, 2) f64, labels (N, P) int, boxes (N, 4) f64,
        masks (N, 1, h, w) f32."""
        if (point_coords is None) != (point_labels is None):
            raise PromptError("point_coords and point_labels must be given together.")
        coords = labels = box = masks = None
        sizes: dict[str, int] = {}
        if point_coords is not None:
            coords = _as_float64(point_coords, "point_coords")
            if coords.ndim != 3 or coords.shape[-1] != 2 or coords.shape[1] == 0:
                raise PromptError(
                    f"point_coords must be (N prompts, P points, 2) (x, y) pixels, got shape "
                    f"{tuple(coords.shape)}; for one prompt of P points use shape (1, P, 2)."
                )
            label_values = _as_tensor(point_labels)
            if label_values.is_floating_point() and not torch.equal(
                label_values, label_values.round()
            ):
                raise PromptError("point_labels must be integers (1, 0 or -1).")
            labels = label_values.to(torch.int64)
            if tuple(labels.shape) != tuple(coords.shape[:2]):
                raise PromptError(
                    f"point_labels must be (N, P) = {tuple(coords.shape[:2])}, got "
                    f"{tuple(labels.shape)}."
                )
            if not torch.isin(labels, torch.tensor([-1, 0, 1])).all():
                raise PromptError(
                    "point_labels may only hold 1 (foreground), 0 (background) or -1 (padding)."
                )
            sizes["point_coords"] = coords.shape[0]
        if boxes is not None:
            box = _as_float64(boxes, "boxes")
            if box.ndim == 1:
                box = box[None]
            if box.ndim != 2 or box.shape[1] != 4:
                raise PromptError(f"boxes must be (N, 4) XYXY pixels, got {tuple(box.shape)}.")
            sizes["boxes"] = box.shape[0]
        if mask_input is not None:
            masks = _as_tensor(mask_input).to(torch.float32)
            if masks.ndim == 3:
                masks = masks[:, None]
            shape = tuple(masks.shape)
            if len(shape) != 4 or shape[1] != 1 or shape[2:] != self.low_res_size:
                raise PromptError(
                    f"mask_input must be (N, 1, {self.low_res_size[0]}, {self.low_res_size[1]}) "
                    f"low-resolution logits (as predict returns), got {tuple(masks.shape)}."
                )
            sizes["mask_input"] = masks.shape[0]
        if not sizes:
            raise PromptError("Give at least one prompt: point_coords, boxes or mask_input.")
        if len(set(sizes.values())) > 1:
            raise PromptError(f"Prompt batches differ in size: {sizes}; give one row per prompt.")
        return coords, labels, box, masks

    def predict(
        self,
        point_coords: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        boxes: ArrayLike | None = None,
        mask_input: ArrayLike | None = None,
        multimask: bool | None = None,
        embedding: ImageEmbedding | None = None,
    ) -> MaskPrediction:
        """Masks for N prompts on the set image (or on ``embedding``), in one decoder call.

        Args:
            point_coords: ``(N, P, 2)`` float ``(x, y)`` in input-image pixels.
            point_labels: ``(N, P)`` int: 1 foreground, 0 background, -1 padding (not a point).
            boxes: ``(N, 4)`` XYXY in input-image pixels (``(4,)`` for one box).
            mask_input: ``(N, 1, h, w)`` low-resolution logits from an earlier prediction.
            multimask: 3 masks per prompt (default: the decoder's ``multimask``) or 1.
            embedding: an image embedded with :meth:`embed` (default: the set image's); the
                decoder's image state is not used or changed then.

        Numpy arrays and tensors are both accepted. Returns a :class:`MaskPrediction` on the
        model's device.
        """
        embedding = embedding if embedding is not None else self._require_image()
        coords, labels, box, masks = self._check_prompts(
            point_coords, point_labels, boxes, mask_input
        )
        multimask = self.multimask if multimask is None else bool(multimask)
        coords, box = self.prompts_to_model_frame(coords, box, embedding.original_size)
        count = next(t.shape[0] for t in (coords, box, masks) if t is not None)
        if count == 0:
            k = self.num_multimask_outputs if multimask else 1
            height, width = embedding.original_size
            return MaskPrediction(
                masks=torch.zeros((0, k, height, width), dtype=torch.bool, device=self.device),
                iou_scores=torch.zeros((0, k), device=self.device),
                low_res_logits=torch.zeros((0, k, *self.low_res_size), device=self.device),
            )
        logits, iou, low_res = self.decode(embedding, coords, labels, box, masks, multimask)
        return MaskPrediction(
            masks=logits > self.mask_threshold, iou_scores=iou, low_res_logits=low_res
        )
