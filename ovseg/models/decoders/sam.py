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
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide
from torch import nn

from ovseg.errors import ConfigError
from ovseg.models.decoders.prompted import (
    ArrayLike,
    ImageEmbedding,
    MaskPrediction,
    PromptedMaskDecoder,
    as_rgb_image,
)
from ovseg.models.decoders.sam_attention import ATTENTION_MODES, with_sdpa_attention
from ovseg.models.decoders.sam_build import build_sam, resolve_sam_architecture
from ovseg.models.decoders.sam_weights import resolve_sam_checkpoint
from ovseg.models.precision import autocast_for, compile_options, dtype_for
from ovseg.registry import MASK_DECODERS

if TYPE_CHECKING:
    from ovseg.models.decoders.automatic import MaskProposals

__all__ = ["ArrayLike", "ImageEmbedding", "MaskPrediction", "SamDecoder", "as_rgb_image"]


class SamDecoder(PromptedMaskDecoder):
    """A SAM model with the predictor's image state: ``set_image`` once, ``predict`` many times.

    Args:
        model_type: ``vit_b`` / ``vit_l`` / ``vit_h``, a registered small architecture
            (``ovseg-sam-tiny``), a mapping of :class:`SamArchitecture` fields or a JSON file.
        checkpoint: path of the weights (official ``.pth`` state dict or ``.safetensors``).
        pretrained: a weight tag instead of a path: ``"sa1b"`` (official release; the default
            for the official architectures) or a packaged tag such as ``"shapes"``.
        device: where the model runs (default CPU).
        multimask: default of ``predict``'s ``multimask`` (3 masks per prompt, else 1).
        precision: ``fp32`` (default), ``bf16`` or ``fp16`` for the image encoder and the mask
            decoder, through ``torch.autocast`` on any device (weights stay float32; the
            prompt encoder and every output stay float32).
        compile: ``true`` (or a mapping of ``torch.compile`` options) compiles the image
            encoder; the first image of each new batch size then takes the compile time.
        channels_last: the encoder's convolutions in channels-last memory format.
        image_batch_size: images per image-encoder call in :meth:`embed_batch`.
        attention: ``native`` (default: segment-anything's attention, bit for bit) or
            ``sdpa``: the image encoder's attention as one fused
            ``scaled_dot_product_attention`` call with the relative positions as its additive
            mask (:mod:`ovseg.models.decoders.sam_attention`; faster, equal up to rounding).
    """

    def __init__(
        self,
        model_type: str | Mapping[str, Any] = "vit_b",
        checkpoint: str | os.PathLike | None = None,
        pretrained: str | None = None,
        device: str | torch.device | None = None,
        multimask: bool = True,
        precision: str = "fp32",
        compile: bool | Mapping[str, Any] | None = False,
        channels_last: bool = False,
        image_batch_size: int = 1,
        attention: str = "native",
    ) -> None:
        super().__init__()
        dtype_for(precision)  # checked before the (possibly slow) model build
        name, arch = resolve_sam_architecture(model_type)
        path = resolve_sam_checkpoint(name, checkpoint, pretrained)
        self._setup(
            build_sam(arch, checkpoint=path, device=device),
            multimask,
            precision=precision,
            compile=compile,
            channels_last=channels_last,
            image_batch_size=image_batch_size,
            attention=attention,
        )

    @classmethod
    def from_model(cls, model: Sam, multimask: bool = True, **speed: Any) -> SamDecoder:
        """Wrap an already built ``Sam`` (its device is kept); ``speed``: ``precision``,
        ``compile``, ``channels_last``, ``image_batch_size``, ``attention`` as in the
        constructor; ``attention: sdpa`` leaves ``model``'s own modules as they are)."""
        decoder = cls.__new__(cls)
        nn.Module.__init__(decoder)
        decoder._setup(model, multimask, **speed)
        return decoder

    def _setup(
        self,
        model: Sam,
        multimask: bool,
        *,
        precision: str = "fp32",
        compile: bool | Mapping[str, Any] | None = False,
        channels_last: bool = False,
        image_batch_size: int = 1,
        attention: str = "native",
    ) -> None:
        if attention not in ATTENTION_MODES:
            raise ConfigError(
                f"attention must be one of {', '.join(ATTENTION_MODES)}, not {attention!r}."
            )
        self.model = model.eval()
        self.multimask = bool(multimask)
        self.transform = ResizeLongestSide(model.image_encoder.img_size)
        if isinstance(image_batch_size, bool) or int(image_batch_size) < 1:
            raise ConfigError(f"image_batch_size must be >= 1, got {image_batch_size!r}.")
        self.image_batch_size = int(image_batch_size)
        self.set_precision(precision)
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.model.image_encoder.to(memory_format=torch.channels_last)
        options = compile_options(compile)
        self.attention = attention
        encoder = self.model.image_encoder
        if attention == "sdpa":
            try:
                encoder = with_sdpa_attention(encoder)
            except ValueError as err:
                raise ConfigError(str(err)) from err
        if options is not None:
            encoder = torch.compile(encoder, **options)
        # kept out of the module tree: the compiled wrapper and the sdpa copy share the
        # encoder's parameters
        object.__setattr__(self, "_image_encoder", encoder)
        self._reset_state()

    def set_precision(self, precision: str) -> None:
        """Run the image encoder and the mask decoder in ``fp32``, ``bf16`` or ``fp16``
        (autocast; the weights, the prompt encoder and the outputs stay float32)."""
        self.dtype = dtype_for(precision)

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
    def mask_threshold(self) -> float:
        return float(self.model.mask_threshold)

    @property
    def num_multimask_outputs(self) -> int:
        return int(self.model.mask_decoder.num_multimask_outputs)

    def _model_input(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """HWC uint8 RGB -> ``(normalised, padded (1, 3, S, S), resized (h, w))`` as
        ``SamPredictor.set_image`` prepares it (pinned, non-blocking copy on CUDA)."""
        resized = torch.from_numpy(np.ascontiguousarray(self.transform.apply_image(image)))
        pixels = resized.permute(2, 0, 1).contiguous()[None]
        if self.device.type == "cuda":
            pixels = pixels.pin_memory().to(self.device, non_blocking=True)
        else:
            pixels = pixels.to(self.device)
        return self.model.preprocess(pixels), (int(pixels.shape[-2]), int(pixels.shape[-1]))

    def _encoder_outputs(self, output: Any) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """The encoder's output -> ``(features (B, C, e, e), finer maps (B, ...) each)``."""
        return output.float(), ()

    @torch.no_grad()
    def embed(self, image: np.ndarray) -> ImageEmbedding:
        """Embed an HWC uint8 RGB image without touching the decoder's image state."""
        return self.embed_batch([image])[0]

    @torch.no_grad()
    def embed_batch(
        self, images: list[np.ndarray], batch_size: int | None = None
    ) -> list[ImageEmbedding]:
        """Embed several HWC uint8 RGB images, ``batch_size`` (default ``image_batch_size``)
        per image-encoder call; each is resized and padded on its own, as :meth:`embed`."""
        step = max(1, int(batch_size or self.image_batch_size))
        embeddings: list[ImageEmbedding] = []
        for start in range(0, len(images), step):
            chunk = list(images[start : start + step])
            inputs = [self._model_input(image) for image in chunk]
            batch = torch.cat([pixels for pixels, _ in inputs])
            if self.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            with autocast_for(self.device, self.dtype):
                output = self._image_encoder(batch)
            features, finer = self._encoder_outputs(output)
            for index, (image, (_, size)) in enumerate(zip(chunk, inputs)):
                embeddings.append(
                    ImageEmbedding(
                        features=features[index : index + 1],
                        input_size=size,
                        original_size=(int(image.shape[0]), int(image.shape[1])),
                        high_res_features=tuple(f[index : index + 1] for f in finer),
                    )
                )
        return embeddings

    # ------------------------------------------------------------------ prompts
    def to_model_frame(self, xy: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """Scale ``(..., 2)`` float64 ``(x, y)`` from input pixels to the resized frame."""
        old_h, old_w = original_size
        new_h, new_w = self.transform.get_preprocess_shape(old_h, old_w, self.img_size)
        scale = torch.tensor([new_w / old_w, new_h / old_h], dtype=torch.float64)
        return xy * scale

    def prompts_to_model_frame(
        self,
        coords: torch.Tensor | None,
        boxes: torch.Tensor | None,
        original_size: tuple[int, int],
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Scaled in float64 and then cast to float32, as ``SamPredictor.predict`` does."""
        if coords is not None:
            coords = self.to_model_frame(coords, original_size).float()
        if boxes is not None:
            boxes = self.to_model_frame(boxes.reshape(-1, 2, 2), original_size)
            boxes = boxes.reshape(-1, 4).float()
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
        **decoder_kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One decoder call for N prompts already in the model frame; ``decoder_kwargs`` go to
        the mask decoder (HQ-SAM's ``hq_token_only``, ``interm_embeddings``).

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
        image_pe = self.model.prompt_encoder.get_dense_pe()
        # prompts are encoded in float32 (their Fourier features need it); the two-way
        # transformer and the mask heads run in the chosen precision
        with autocast_for(device, self.dtype):
            low_res, iou = self.model.mask_decoder(
                image_embeddings=embedding.features,
                image_pe=image_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
                **decoder_kwargs,
            )
        low_res, iou = low_res.float(), iou.float()
        logits = self.model.postprocess_masks(
            low_res, embedding.input_size, embedding.original_size
        )
        return logits, iou, low_res

    def _generate(
        self, image: np.ndarray, embedding: ImageEmbedding, **kwargs: Any
    ) -> MaskProposals:
        """Automatic mask proposals over the whole image (see ``ovseg.models.decoders.automatic``).

        Keyword arguments are :class:`AutomaticMaskSettings` fields (SamAutomaticMaskGenerator's
        defaults: 32 points per side, batches of 64, predicted IoU > 0.88, stability >= 0.95,
        box NMS 0.7, no crops, no small-region clean-up).
        """
        from ovseg.models.decoders.automatic import AutomaticMaskSettings, generate_proposals

        return generate_proposals(
            self, AutomaticMaskSettings.create(**kwargs), image=image, embedding=embedding
        )


MASK_DECODERS.register("SamDecoder")(SamDecoder)
