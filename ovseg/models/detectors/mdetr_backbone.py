"""MDETR's image side: a CNN with frozen batch norm and DETR's sine position encoding.

Parameter names follow the released checkpoints: the backbone is ``Joiner`` (a two-item
``nn.Sequential``: ``0`` the CNN, ``1`` the parameter-free position encoding), the CNN keeps its
layers under ``body`` (``backbone.0.body.layer4.2.conv3.weight`` ...).

* ResNet (``resnet18/34/50/101``): torchvision's ResNet with :class:`FrozenBatchNorm2d`, the
  layers up to ``layer4`` (no pooling / classifier), stride 32, as DETR.
* timm EfficientNet (``timm_tf_efficientnet_b3_ns`` / ``_b5_ns``): timm's ``features_only``
  model (``out_indices=(1, 2, 3, 4)``), its last map used, every batch norm frozen with the
  reference's fixed ``eps=1e-5`` (not the TF ports' 1e-3, as the reference's ``replace_bn``
  does). Newer timm fuses the activation into the norm (``BatchNormAct2d``); the frozen norm
  keeps that activation, which the reference's timm (0.4, separate activation modules) applied
  after the norm too.

The padding mask is ``True`` on padded pixels (``(B, H, W)`` bool) and follows the feature map
by nearest interpolation, as the reference does.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ovseg.errors import ConfigError, MissingDependencyError

__all__ = [
    "FrozenBatchNorm2d",
    "Joiner",
    "ResNetBody",
    "TimmBody",
    "build_backbone",
    "sine_position_encoding",
]

RESNETS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048}
TIMM_PREFIX = "timm_"


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine terms (buffers, not parameters).

    ``y = x * w / sqrt(var + eps) + (b - mean * w / sqrt(var + eps))`` with ``eps = 1e-5``.
    A saved ``num_batches_tracked`` is ignored. ``act`` (timm's fused activation) follows.
    """

    def __init__(self, num_features: int, act: nn.Module | None = None) -> None:
        super().__init__()
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.act = act if act is not None else nn.Identity()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + 1e-5).rsqrt()
        shift = self.bias - self.running_mean * scale
        return self.act(x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1))


def _resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(mask[None].float(), size=size).bool()[0]


class ResNetBody(nn.Module):
    """torchvision ResNet up to ``layer4`` with frozen batch norm; ``(B, C, H/32, W/32)``."""

    def __init__(self, name: str) -> None:
        super().__init__()
        import torchvision
        from torchvision.models._utils import IntermediateLayerGetter

        resnet = getattr(torchvision.models, name)(
            weights=None, replace_stride_with_dilation=[False, False, False],
            norm_layer=FrozenBatchNorm2d,
        )  # fmt: skip
        self.body = IntermediateLayerGetter(resnet, return_layers={"layer4": "0"})
        self.num_channels = RESNETS[name]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)["0"]


def _freeze_batch_norms(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            act = getattr(child, "act", None)
            frozen = FrozenBatchNorm2d(child.num_features, act=act)
            setattr(module, name, frozen)
        else:
            _freeze_batch_norms(child)


class TimmBody(nn.Module):
    """timm ``features_only`` model (levels 1-4), batch norms frozen; its last map is used."""

    def __init__(self, name: str) -> None:
        super().__init__()
        try:
            import timm
        except ImportError as exc:
            raise MissingDependencyError(
                "MDETR's EfficientNet backbones need timm: pip install 'ovseg[detection]'."
            ) from exc

        with warnings.catch_warnings():  # "Mapping deprecated model name ..._ns": same network
            warnings.filterwarnings("ignore", message="Mapping deprecated model name")
            body = timm.create_model(
                name, pretrained=False, in_chans=3, features_only=True, out_indices=(1, 2, 3, 4)
            )
        _freeze_batch_norms(body)
        self.body = body
        self.num_channels = int(body.feature_info.channels()[-1])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)[-1]


def sine_position_encoding(mask: torch.Tensor, num_pos_feats: int = 128) -> torch.Tensor:
    """DETR's normalised sine encoding: ``(B, H, W)`` padding mask -> ``(B, 2 F, H, W)``.

    Cumulative counts of valid pixels along y and x, scaled to ``[0, 2 pi]`` (eps 1e-6), over
    ``10000 ** (2 (i // 2) / F)``; sines at even, cosines at odd channels; y first, then x.
    """
    valid = ~mask
    y = valid.cumsum(1, dtype=torch.float32)
    x = valid.cumsum(2, dtype=torch.float32)
    scale = 2 * math.pi
    y = y / (y[:, -1:, :] + 1e-6) * scale
    x = x / (x[:, :, -1:] + 1e-6) * scale
    steps = torch.arange(num_pos_feats, dtype=torch.float32, device=mask.device)
    steps = 10000 ** (2 * torch.div(steps, 2, rounding_mode="floor") / num_pos_feats)
    pos_x, pos_y = x[..., None] / steps, y[..., None] / steps
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


class _SinePosition(nn.Module):
    def __init__(self, num_pos_feats: int) -> None:
        super().__init__()
        self.num_pos_feats = num_pos_feats

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        return sine_position_encoding(mask, self.num_pos_feats)


class Joiner(nn.Sequential):
    """``0``: the CNN body, ``1``: the position encoding (the reference's names)."""

    def __init__(self, body: nn.Module, hidden_dim: int) -> None:
        super().__init__(body, _SinePosition(hidden_dim // 2))
        self.num_channels = body.num_channels

    def forward(
        self, images: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, 3, H, W)`` normalised images, ``(B, H, W)`` padding mask -> feature map
        ``(B, C, h, w)``, its mask ``(B, h, w)`` and position encoding ``(B, hidden, h, w)``."""
        features = self[0](images)
        small = _resize_mask(mask, features.shape[-2:])
        return features, small, self[1](small).to(features.dtype)


def build_backbone(name: str, hidden_dim: int) -> Joiner:
    """``resnet101`` (or 18/34/50) or ``timm_<timm model name>`` as the reference names them.

    Raises:
        ConfigError: an unknown backbone.
    """
    if name.startswith(TIMM_PREFIX):
        return Joiner(TimmBody(name[len(TIMM_PREFIX) :]), hidden_dim)
    if name in RESNETS:
        return Joiner(ResNetBody(name), hidden_dim)
    raise ConfigError(
        f"Unknown MDETR backbone {name!r}; use one of {sorted(RESNETS)} or "
        "'timm_tf_efficientnet_b3_ns' / 'timm_tf_efficientnet_b5_ns'."
    )
