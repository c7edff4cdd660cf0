"""``SamDecoder``: prompts (points, boxes, low-resolution masks) -> masks, on one embedded image.

Frames: the image enters as HWC uint8 RGB numpy in *input-image pixels*; points are ``(x, y)`` and
boxes XYXY in the same pixels, given to SAM as they are (SAM's prompt encoder itself adds 0.5 to
reach the pixel centre, so the integer point ``(x, y)`` is the pixel in column x, row y). Inside,
the image is resized so its long side is the model's ``img_size`` (PIL bilinear, as
``segment_anything.utils.transforms.ResizeLongestSide``), normalised with the model's pixel
mean / std and zero-padded to a square, exactly as ``SamPredictor`` does; prompts are scaled by
the same factors and masks are brought back to input pixels by ``Sam.postprocess_masks``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide
from torch import nn

from ovseg.errors import PromptError
from ovseg.io import read_image
from ovseg.models.decoders.sam_build import build_sam, resolve_sam_architecture
from ovseg.models.decoders.sam_weights import resolve_sam_checkpoint
from ovseg.registry import MASK_DECODERS

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


@dataclass
class ImageEmbedding:
    """One embedded image: features ``(1, C, e, e)``, the resized size before padding ``(h, w)``
    and the input-image size ``(H, W)``."""

    features: torch.Tensor
    input_size: tuple[int, int]
    original_size: tuple[int, int]


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


class SamDecoder(nn.Module):
    """A SAM model with the predictor's image state: ``set_image`` once, ``predict`` many times.

    Args:
        model_type: ``vit_b`` / ``vit_l`` / ``vit_h``, a registered small architecture
            (``ovseg-sam-tiny``), a mapping of :class:`SamArchitecture` fields or a JSON file.
        checkpoint: path of the weights (official ``.pth`` state dict or ``.safetensors``).
        pretrained: a weight tag instead of a path: ``"sa1b"`` (official release; the default
            for the official architectures) or a packaged tag such as ``"shapes"``.
        device: where the model runs (default CPU).
        multimask: default of ``predict``'s ``multimask`` (3 masks per prompt, else 1).
    """

    def __init__(
        self,
        model_type: str | Mapping[str, Any] = "vit_b",
        checkpoint: str | os.PathLike | None = None,
        pretrained: str | None = None,
        device: str | torch.device | None = None,
        multimask: bool = True,
    ) -> None:
        super().__init__()
        name, arch = resolve_sam_architecture(model_type)
        path = resolve_sam_checkpoint(name, checkpoint, pretrained)
        self._setup(build_sam(arch, checkpoint=path, device=device), multimask)

    @classmethod
    def from_model(cls, model: Sam, multimask: bool = True) -> SamDecoder:
        """Wrap an already built ``Sam`` (its device is kept)."""
        decoder = cls.__new__(cls)
        nn.Module.__init__(decoder)
        decoder._setup(model, multimask)
        return decoder

    def _setup(self, model: Sam, multimask: bool) -> None:
        self.model = model.eval()
        self.multimask = bool(multimask)
        self.transform = ResizeLongestSide(model.image_encoder.img_size)
        self._embedding: ImageEmbedding | None = None
        self._image: np.ndarray | None = None

    # ------------------------------------------------------------------ image state
    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def img_size(self) -> int:
        """Side of the square model input (1024 for the official models)."""
        return int(self.model.image_encoder.img_size)

    @property
    def low_res_size(self) -> tuple[int, int]:
        """``(h, w)`` of the low-resolution logits and of ``mask_input``."""
        return tuple(self.model.prompt_encoder.mask_input_size)

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

    @torch.no_grad()
    def embed(self, image: np.ndarray) -> ImageEmbedding:
        """Embed an HWC uint8 RGB image without touching the decoder's image state."""
        resized = self.transform.apply_image(image)
        pixels = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
        features = self.model.image_encoder(self.model.preprocess(pixels))
        return ImageEmbedding(
            features=features,
            input_size=(int(pixels.shape[-2]), int(pixels.shape[-1])),
            original_size=(int(image.shape[0]), int(image.shape[1])),
        )

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
    def to_model_frame(self, xy: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """Scale ``(..., 2)`` float64 ``(x, y)`` from input pixels to the resized frame."""
        old_h, old_w = original_size
        new_h, new_w = self.transform.get_preprocess_shape(old_h, old_w, self.img_size)
        scale = torch.tensor([new_w / old_w, new_h / old_h], dtype=torch.float64)
        return xy * scale

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
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One decoder call for N prompts already in the model frame.

        Returns ``(logits (N, K, H, W) in input pixels, iou (N, K), low-res logits (N, K, h, w))``.
        """
        device = self.device
        points = None
        if coords is not None:
            points = (coords.to(device), labels.to(device=device, dtype=torch.int32))
        sparse, dense = self.model.prompt_encoder(
            points=points,
            boxes=boxes.to(device) if boxes is not None else None,
            masks=masks.to(device) if masks is not None else None,
        )
        low_res, iou = self.model.mask_decoder(
            image_embeddings=embedding.features,
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
        logits = self.model.postprocess_masks(
            low_res, embedding.input_size, embedding.original_size
        )
        return logits, iou, low_res

    def predict(
        self,
        point_coords: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        boxes: ArrayLike | None = None,
        mask_input: ArrayLike | None = None,
        multimask: bool | None = None,
        embedding: ImageEmbedding | None = None,
    ) -> MaskPrediction:
        """Masks for N prompts on the set image, in one decoder call.

        Args:
            point_coords: ``(N, P, 2)`` float ``(x, y)`` in input-image pixels.
            point_labels: ``(N, P)`` int: 1 foreground, 0 background, -1 padding (not a point).
            boxes: ``(N, 4)`` XYXY in input-image pixels (``(4,)`` for one box).
            mask_input: ``(N, 1, h, w)`` low-resolution logits from an earlier prediction.
            multimask: 3 masks per prompt (default: the decoder's ``multimask``) or 1.
            embedding: an image embedded with :meth:`embed` (default: the set image's).

        Numpy arrays and tensors are both accepted. Returns a :class:`MaskPrediction` on the
        model's device.
        """
        embedding = embedding if embedding is not None else self._require_image()
        coords, labels, box, masks = self._check_prompts(
            point_coords, point_labels, boxes, mask_input
        )
        multimask = self.multimask if multimask is None else bool(multimask)
        if coords is not None:
            # scaled in float64 and then cast, as SamPredictor.predict does
            coords = self.to_model_frame(coords, embedding.original_size).float()
        if box is not None:
            box = self.to_model_frame(box.reshape(-1, 2, 2), embedding.original_size)
            box = box.reshape(-1, 4).float()
        count = next(t.shape[0] for t in (coords, box, masks) if t is not None)
        if count == 0:
            k = self.model.mask_decoder.num_multimask_outputs if multimask else 1
            height, width = embedding.original_size
            return MaskPrediction(
                masks=torch.zeros((0, k, height, width), dtype=torch.bool, device=self.device),
                iou_scores=torch.zeros((0, k), device=self.device),
                low_res_logits=torch.zeros((0, k, *self.low_res_size), device=self.device),
            )
        logits, iou, low_res = self.decode(embedding, coords, labels, box, masks, multimask)
        return MaskPrediction(
            masks=logits > self.model.mask_threshold, iou_scores=iou, low_res_logits=low_res
        )

    def generate(
        self,
        image: np.ndarray | None = None,
        *,
        embedding: ImageEmbedding | None = None,
        **kwargs: Any,
    ) -> MaskProposals:
        """Automatic mask proposals over the whole image (see ``ovseg.models.decoders.automatic``).

        ``image`` (HWC uint8 RGB) is set first when given, else the set image is used; with
        ``embedding`` (from :meth:`embed` of ``image``) nothing is set or re-embedded. Keyword
        arguments are :class:`AutomaticMaskSettings` fields (SamAutomaticMaskGenerator's
        defaults: 32 points per side, batches of 64, predicted IoU > 0.88, stability >= 0.95,
        box NMS 0.7, no crops, no small-region clean-up).
        """
        from ovseg.models.decoders.automatic import AutomaticMaskSettings, generate_proposals

        settings = AutomaticMaskSettings.create(**kwargs)
        if embedding is not None:
            if image is None:
                raise PromptError("generate(embedding=...) needs the image it was embedded from.")
            return generate_proposals(
                self, settings, image=as_rgb_image(image), embedding=embedding
            )
        if image is not None:
            self.set_image(image)
        self._require_image()
        return generate_proposals(self, settings)


MASK_DECODERS.register("SamDecoder")(SamDecoder)
