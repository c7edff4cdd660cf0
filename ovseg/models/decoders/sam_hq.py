"""``HqSamDecoder``: HQ-SAM (``segment_anything_hq``) behind the prompted-decoder interface.

HQ-SAM is SAM with a learned high-quality output token: its mask decoder fuses the image
embedding with the ViT features after the first global-attention block and returns ONE mask
per prompt, the SAM mask plus the HQ token's mask (``hq_token_only=True``: the HQ mask alone).
With multimask output the SAM mask is the one of the three with the highest predicted IoU, so
``predict`` always returns ``K = 1`` mask per prompt. Image and prompt frames are SAM's (see
``ovseg.models.decoders.sam``): resize of the long side to 1024 px, padding, float64 prompt
scaling, ``Sam.postprocess_masks``.

Architectures: ``vit_b`` / ``vit_l`` / ``vit_h`` with SAM's hyper-parameters (or any mapping of
:class:`~ovseg.models.decoders.sam_build.SamArchitecture` fields with at least one global block),
and ``vit_tiny`` (the release's TinyViT encoder, 1024 px only). The released checkpoints
(``sam_hq_vit_{b,l,h,tiny}.pth``, plain state dicts) are loaded strictly through
:func:`ovseg.weights.load_state_dict`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ovseg.errors import ConfigError, MissingDependencyError, WeightsNotFoundError
from ovseg.models.decoders.automatic import (
    AutomaticMaskSettings,
    MaskProposals,
    generate_proposals,
)
from ovseg.models.decoders.prompted import ImageEmbedding
from ovseg.models.decoders.sam import SamDecoder
from ovseg.models.decoders.sam_build import (
    SamArchitecture,
    SamSpec,
    create_sam,
    load_sam_weights,
    mask_decoder_arguments,
    resolve_sam_architecture,
)
from ovseg.models.decoders.sam_weights import resolve_checkpoint_file
from ovseg.registry import MASK_DECODERS

HQ_HF_REPO = "lkeab/hq-sam"
#: The HQ-SAM release: checkpoint file of each architecture (Hugging Face repo lkeab/hq-sam).
HQ_CHECKPOINTS = {
    "vit_b": "sam_hq_vit_b.pth",
    "vit_l": "sam_hq_vit_l.pth",
    "vit_h": "sam_hq_vit_h.pth",
    "vit_tiny": "sam_hq_vit_tiny.pth",
}


def hq_release_url(model_type: str) -> str:
    return f"https://huggingface.co/{HQ_HF_REPO}/resolve/main/{HQ_CHECKPOINTS[model_type]}"


def _hq_modeling() -> Any:
    try:
        with warnings.catch_warnings():
            # its TinyViT module imports timm's deprecated paths and re-registers timm's
            # tiny_vit names on import; neither concerns the user
            warnings.filterwarnings("ignore", "Importing from timm", FutureWarning)
            warnings.filterwarnings("ignore", "Overwriting tiny_vit", UserWarning)
            from segment_anything_hq import modeling
    except ImportError as exc:
        raise MissingDependencyError(
            "HQ-SAM needs the segment-anything-hq package: `pip install ovseg[hq]`."
        ) from exc
    return modeling


def create_sam_hq(arch: SamArchitecture) -> nn.Module:
    """A randomly initialised HQ-SAM (``segment_anything_hq.modeling.Sam``), in eval mode."""
    if not arch.encoder_global_attn_indexes and arch.window_size > 0:
        raise ConfigError("HQ-SAM needs at least one global-attention block in the encoder.")
    modeling = _hq_modeling()
    return create_sam(
        arch, modeling, lambda: _hq_mask_decoder(modeling, arch, arch.encoder_embed_dim)
    )


def _hq_mask_decoder(modeling: Any, arch: SamArchitecture, vit_dim: int) -> nn.Module:
    return modeling.MaskDecoderHQ(**mask_decoder_arguments(arch, modeling), vit_dim=vit_dim)


def create_sam_hq_tiny() -> nn.Module:
    """The release's ``vit_tiny`` HQ-SAM (TinyViT encoder as in MobileSAM, 1024 px input)."""
    modeling = _hq_modeling()
    arch = SamArchitecture()  # the prompt side is the official one
    encoder = modeling.TinyViT(
        img_size=1024,
        in_chans=3,
        num_classes=1000,
        embed_dims=[64, 128, 160, 320],
        depths=[2, 2, 6, 2],
        num_heads=[2, 4, 5, 10],
        window_sizes=[7, 7, 14, 7],
        mlp_ratio=4.0,
        drop_rate=0.0,
        drop_path_rate=0.0,
        use_checkpoint=False,
        mbconv_expand_ratio=4.0,
        local_conv_size=3,
        layer_lr_decay=0.8,
    )
    return modeling.Sam(
        image_encoder=encoder,
        prompt_encoder=modeling.PromptEncoder(
            embed_dim=arch.prompt_embed_dim,
            image_embedding_size=(arch.embedding_size, arch.embedding_size),
            input_image_size=(arch.image_size, arch.image_size),
            mask_in_chans=arch.mask_in_chans,
        ),
        mask_decoder=_hq_mask_decoder(modeling, arch, 160),
        pixel_mean=list(arch.pixel_mean),
        pixel_std=list(arch.pixel_std),
    ).eval()


def missing_hq_checkpoint(model_type: str, looked_at: str | os.PathLike) -> WeightsNotFoundError:
    """The error for an absent HQ-SAM checkpoint: the file, where it is published, the key."""
    if model_type in HQ_CHECKPOINTS:
        wanted = (
            f"For {model_type} the file is {HQ_CHECKPOINTS[model_type]}, published in the "
            f"Hugging Face repo {HQ_HF_REPO} ({hq_release_url(model_type)}; see also "
            "github.com/SysCV/sam-hq); download it and pass its path as `checkpoint: PATH` in "
            "the decoder config (checkpoint=PATH in Python)."
        )
    else:
        wanted = "Custom HQ-SAM architectures have no released weights; pass checkpoint=PATH."
    return WeightsNotFoundError(f"HQ-SAM checkpoint '{looked_at}' does not exist. {wanted}")


def resolve_hq_checkpoint(model_type: str, checkpoint: str | os.PathLike | None) -> Path:
    """``checkpoint`` when it exists, else the released file in torch hub's checkpoint folder
    (downloaded there first when the network is allowed)."""
    released = model_type in HQ_CHECKPOINTS
    return resolve_checkpoint_file(
        checkpoint,
        HQ_CHECKPOINTS[model_type] if released else None,
        hq_release_url(model_type) if released else None,
        lambda path: missing_hq_checkpoint(model_type, path),
    )


def build_sam_hq(
    model_type: SamSpec = "vit_b",
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    random_init: bool = False,
) -> nn.Module:
    """An HQ-SAM in eval mode on ``device``: ``vit_b`` / ``vit_l`` / ``vit_h`` / ``vit_tiny``
    or an architecture mapping; weights from ``checkpoint`` (default: the released file), or
    segment-anything-hq's random initialisation with ``random_init``."""
    if model_type == "vit_tiny":
        name, create = "vit_tiny", create_sam_hq_tiny
    else:
        name, arch = resolve_sam_architecture(model_type)
        create = partial(create_sam_hq, arch)
    path = None if random_init else resolve_hq_checkpoint(name, checkpoint)
    model = create()
    if path is not None:
        load_sam_weights(model, path)
    target = torch.device(device) if device is not None else torch.device("cpu")
    return model.to(target).eval()


@dataclass(frozen=True)
class HqMaskSettings(AutomaticMaskSettings):
    """``HqSamDecoder.generate``'s knobs: SAM's, plus the HQ generator's ``multimask_output``
    (best of SAM's three masks, else its single-mask token) and ``hq_token_only`` (False, as
    its generator calls the predictor)."""

    multimask_output: bool = True
    hq_token_only: bool = False


class HqSamDecoder(SamDecoder):
    """An HQ-SAM with the predictor's image state (one mask per prompt).

    Args:
        model_type: ``vit_b`` / ``vit_l`` / ``vit_h`` / ``vit_tiny`` or a mapping / JSON file of
            :class:`SamArchitecture` fields.
        checkpoint: path of the weights (``sam_hq_vit_*.pth`` or ``.safetensors``); default: the
            released file in torch hub's ``checkpoints`` folder.
        device: where the model runs (default CPU).
        multimask: default of ``predict``'s ``multimask`` (the SAM part is the best of three).
        hq_token_only: masks from the HQ token alone instead of SAM's mask plus the HQ mask.
        precision, compile, channels_last, image_batch_size, attention: as :class:`SamDecoder`.
    """

    def __init__(
        self,
        model_type: str | Mapping[str, Any] = "vit_b",
        checkpoint: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        multimask: bool = True,
        hq_token_only: bool = False,
        precision: str = "fp32",
        compile: bool | Mapping[str, Any] | None = False,
        channels_last: bool = False,
        image_batch_size: int = 1,
        attention: str = "native",
    ) -> None:
        nn.Module.__init__(self)
        self._setup(
            build_sam_hq(model_type, checkpoint, device),
            multimask,
            precision=precision,
            compile=compile,
            channels_last=channels_last,
            image_batch_size=image_batch_size,
            attention=attention,
        )
        self.hq_token_only = bool(hq_token_only)

    @classmethod
    def from_model(
        cls, model: nn.Module, multimask: bool = True, hq_token_only: bool = False, **speed: Any
    ) -> HqSamDecoder:
        """Wrap an already built ``segment_anything_hq`` ``Sam`` (its device is kept)."""
        decoder = cls.__new__(cls)
        nn.Module.__init__(decoder)
        decoder._setup(model, multimask, **speed)
        decoder.hq_token_only = bool(hq_token_only)
        return decoder

    @property
    def num_multimask_outputs(self) -> int:
        return 1

    def _encoder_outputs(self, output: Any) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """The image embedding and, as the finer map, the encoder's features after its first
        global-attention block ``(B, e, e, C_vit)`` that the HQ decoder fuses."""
        features, interm = output
        return features.float(), (interm[0].float(),)  # the decoder reads the first one only

    @torch.no_grad()
    def decode(
        self,
        embedding: ImageEmbedding,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
        multimask: bool,
        hq_token_only: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One HQ decoder call: ``(logits (N, 1, H, W), iou (N, 1), low-res (N, 1, h, w))``."""
        return super().decode(
            embedding,
            coords,
            labels,
            boxes,
            masks,
            multimask,
            hq_token_only=self.hq_token_only if hq_token_only is None else hq_token_only,
            interm_embeddings=list(embedding.high_res_features),
        )

    def _grid_masks(
        self, settings: HqMaskSettings, embedding: ImageEmbedding, points: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        coords = self.to_model_frame(points, embedding.original_size)[:, None, :]
        labels = torch.ones((len(points), 1), dtype=torch.int64)
        logits, iou, _ = self.decode(
            embedding,
            coords,
            labels,
            None,
            None,
            settings.multimask_output,
            hq_token_only=settings.hq_token_only,
        )
        return logits.flatten(0, 1), iou.flatten(0, 1), points.to(logits.device)

    def _generate(
        self, image: np.ndarray, embedding: ImageEmbedding, **kwargs: Any
    ) -> MaskProposals:
        """Automatic proposals as ``segment_anything_hq.SamAutomaticMaskGenerator`` (SAM's
        procedure, one mask per grid point). Keyword arguments are :class:`HqMaskSettings`
        fields."""
        settings = HqMaskSettings.create(**kwargs)
        return generate_proposals(
            self,
            settings,
            grid_masks=partial(self._grid_masks, settings),
            image=image,
            embedding=embedding,
        )


MASK_DECODERS.register("HqSamDecoder")(HqSamDecoder)
