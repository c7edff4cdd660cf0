"""DenseCLIP (Rao et al., CVPR 2022): language-guided dense prediction with context-aware prompting.

:class:`DenseCLIPSegmentor` wires the parts together (shapes for normalised images
``(B, 3, H, W)`` and ``K`` class names)::

    images ──► ClipPyramid ──► features [(B, C_i, H/s_i, W/s_i)], global (B, D), dense (B, D, h, w)
    names ──► PromptLearner ──► t (K, D)            [SOT][ctx x N][name][EOT], frozen text encoder
    t, [global; dense] ──► ContextDecoder ──► t' = t + gamma * decoder(t, context)   (B, K, D)
    dense, t' ──► score map s = cos(dense, t')     (B, K, h, w)
    features[level] ⊕ (1/K) Σ_k s_k t̂'_k ──► decode head (NECKS) ──► logits (B, K, H/4, W/4)

Training (the :class:`DenseCLIPTask` registered as ``DenseCLIP`` in ``TASKS``) minimises
``CE(logits) + 0.4 * CE(s / 0.07)``, both upsampled to the label size, with the CLIP text encoder
frozen and the image backbone at 0.1x the learning rate.

Open vocabulary, an extension of the paper: the paper trains and tests on one fixed class list
(its decode head ends in a ``K``-way convolution and the score map adds ``K`` channels). Here
every layer whose weights would be indexed by class is generated from the class embeddings (see
:mod:`ovseg.models.heads.denseclip.score_map` and
:class:`ovseg.models.necks.text_classifier.TextClassifier`), so the trained model also accepts
class names it never saw. For a fixed training vocabulary this reparameterisation is as
expressive as the reference; how well it transfers to unseen names is an empirical question
the paper does not address.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ovseg.data.transforms import (
    Compose,
    Normalize,
    Pad,
    RemapLabels,
    ToTensor,
    build_transforms,
)
from ovseg.engine import dist as edist
from ovseg.errors import ConfigError, DatasetError, VocabularyError
from ovseg.inference.resize import rescale_size, resize_bilinear
from ovseg.inference.sliding import Window, average_window_scores, sliding_windows, whole_window
from ovseg.models import necks as _necks  # noqa: F401  (registers the decode heads)
from ovseg.models.backbones.clip_pyramid import ClipPyramid, PyramidOutput
from ovseg.models.heads.denseclip import (
    ContextDecoder,
    PromptLearner,
    pixel_text_score_map,
    score_map_loss,
    score_text_features,
    segmentation_cross_entropy,
    visual_context,
)
from ovseg.registry import NECKS, TASKS
from ovseg.weights import save_state_dict

LOGGER = logging.getLogger(__name__)
IGNORE_INDEX = 255
DEFAULT_DECODER = {"width": 256, "heads": 4, "layers": 3, "dropout": 0.1}
DEFAULT_NECK = "SemanticFPN"
EXPORT_ARCHITECTURE = "DenseCLIPSegmentor"


class DenseCLIPOutput(NamedTuple):
    """``logits (B, K, H_0, W_0)`` of the decode head (finest level, stride 4), ``score_map
    (B, K, h, w)`` cosine pixel-text scores, ``text (B, K, D)`` context-updated embeddings."""

    logits: Tensor
    score_map: Tensor
    text: Tensor


@contextlib.contextmanager
def _quiet_random_init():
    class _Filter(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "No pretrained weights loaded" not in record.getMessage()

    root, quiet = logging.getLogger(), _Filter()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def _resolve_quick_gelu(model_name: str, pretrained: str | None, quick_gelu: bool | None) -> bool:
    if quick_gelu is not None:
        return bool(quick_gelu)
    if pretrained:
        return bool(open_clip.get_pretrained_cfg(model_name, pretrained).get("quick_gelu", False))
    return False


def build_clip(
    model_name: str,
    pretrained: str | None,
    checkpoint: str | os.PathLike | None,
    quick_gelu: bool,
    cache_dir: str | None,
    load_weights: bool,
) -> tuple[nn.Module, tuple[float, ...], tuple[float, ...]]:
    """The open_clip model (train mode, float32) and its mean / std (RGB, [0, 1] units)."""
    from ovseg.models.backbones.clip import build_open_clip_model, register_packaged_model_configs

    if checkpoint is not None and Path(checkpoint).is_dir():
        raise ConfigError(
            f"DenseCLIP takes a CLIP weight *file*; {checkpoint} is a folder. Pass the weight "
            "file inside it as checkpoint= and the architecture as model_name=."
        )
    if load_weights:
        model, mean, std = build_open_clip_model(
            model_name, pretrained, checkpoint, quick_gelu=quick_gelu, cache_dir=cache_dir
        )
    else:  # the caller loads a full DenseCLIP state dict right after
        register_packaged_model_configs()
        if model_name not in open_clip.list_models():
            raise ConfigError(f"open_clip has no architecture {model_name!r}.")
        with _quiet_random_init():
            model = open_clip.create_model(model_name, pretrained=None, force_quick_gelu=quick_gelu)
        mean = tuple(model.visual.preprocess_cfg["mean"])
        std = tuple(model.visual.preprocess_cfg["std"])
    return model.float().train(), tuple(mean), tuple(std)


class DenseCLIPSegmentor(nn.Module):
    """CLIP pyramid backbone + context-aware prompting + pixel-text score map + decode head.

    Args:
        model_name: open_clip architecture (``RN50``, ``RN101``, ``ViT-B-16``, or one
            registered at run time).
        pretrained, checkpoint: CLIP weights (an open_clip tag such as ``openai``, or a weight
            file); ignored with ``load_clip_weights=False``.
        load_clip_weights: False builds CLIP uninitialised, for loading an exported DenseCLIP
            state dict afterwards.
        quick_gelu: the architecture's activation (None: what the pretrained tag says).
        num_contexts: learnable context tokens (8).
        decoder: context decoder ``{width: 256, heads: 4, layers: 3, dropout: 0.1}``.
        gamma_init: initial value of every entry of ``gamma`` (1e-4).
        neck: decode head name in ``NECKS`` (``SemanticFPN`` or ``UPerNet``).
        neck_args: its keyword arguments (``in_channels`` and ``text_dim`` are filled in). A
            name plus arguments rather than a ``{type: ...}`` mapping, so that configs are not
            built by the registry before the channel counts are known.
        score_concat_index: pyramid level receiving the score features (None: the level on the
            dense-token grid: 3 for ResNets, 2 for ViT-B/16, as the reference).
        input_resolution, out_indices, drop_path_rate, cls_pos_includes_class_embedding: see
            :class:`~ovseg.models.backbones.clip_pyramid.ClipPyramid`.

    Buffers ``pixel_mean`` / ``pixel_std`` ``(1, 3, 1, 1)`` hold the model's normalisation (RGB,
    [0, 1] units) and travel with the state dict. :attr:`config` holds the keyword arguments that
    rebuild this architecture (weights excluded).
    """

    def __init__(
        self,
        model_name: str,
        pretrained: str | None = None,
        checkpoint: str | os.PathLike | None = None,
        *,
        load_clip_weights: bool = True,
        quick_gelu: bool | None = None,
        cache_dir: str | None = None,
        num_contexts: int = 8,
        decoder: Mapping[str, Any] | None = None,
        gamma_init: float = 1e-4,
        neck: str = DEFAULT_NECK,
        neck_args: Mapping[str, Any] | None = None,
        score_concat_index: int | None = None,
        input_resolution: int | None = None,
        out_indices: Sequence[int] | None = None,
        drop_path_rate: float = 0.0,
        cls_pos_includes_class_embedding: bool = False,
    ) -> None:
        super().__init__()
        quick_gelu = _resolve_quick_gelu(model_name, pretrained, quick_gelu)
        decoder_cfg = {**DEFAULT_DECODER, **dict(decoder or {})}
        unknown = sorted(set(decoder_cfg) - set(DEFAULT_DECODER))
        if unknown:
            raise ConfigError(
                f"Unknown context decoder keys {unknown}; known: {sorted(DEFAULT_DECODER)}."
            )
        if not isinstance(neck, str):
            raise ConfigError(
                f"neck must be a NECKS name such as 'SemanticFPN' (arguments go in neck_args), "
                f"got {neck!r}."
            )
        neck_cfg = {"type": neck, **dict(neck_args or {})}
        self.config: dict[str, Any] = {
            "model_name": model_name,
            "quick_gelu": quick_gelu,
            "num_contexts": int(num_contexts),
            "decoder": decoder_cfg,
            "gamma_init": float(gamma_init),
            "neck": neck,
            "neck_args": dict(neck_args or {}),
            "score_concat_index": score_concat_index,
            "input_resolution": input_resolution,
            "out_indices": list(out_indices) if out_indices is not None else None,
            "drop_path_rate": float(drop_path_rate),
            "cls_pos_includes_class_embedding": bool(cls_pos_includes_class_embedding),
        }
        clip, mean, std = build_clip(
            model_name, pretrained, checkpoint, quick_gelu, cache_dir, load_clip_weights
        )
        self.backbone = ClipPyramid(
            clip.visual,
            input_resolution=input_resolution,
            out_indices=out_indices,
            drop_path_rate=drop_path_rate,
            cls_pos_includes_class_embedding=cls_pos_includes_class_embedding,
        )
        self.prompt = PromptLearner(clip, open_clip.get_tokenizer(model_name), num_contexts)
        embed_dim = self.prompt.embed_dim
        if embed_dim != self.backbone.embed_dim:
            raise ConfigError(
                f"{model_name}: text embeddings ({embed_dim}) and image embeddings "
                f"({self.backbone.embed_dim}) differ in size; DenseCLIP needs a joint space."
            )
        self.embed_dim = embed_dim
        self.context_decoder = ContextDecoder(embed_dim, **decoder_cfg)
        self.gamma = nn.Parameter(torch.full((embed_dim,), float(gamma_init)))
        level = self.backbone.dense_level if score_concat_index is None else int(score_concat_index)
        if not 0 <= level < 4:
            raise ConfigError(f"score_concat_index must be 0..3, got {score_concat_index}.")
        self.score_level = level
        in_channels = list(self.backbone.out_channels)
        in_channels[level] += embed_dim
        self.decode_head = NECKS.build(neck_cfg, in_channels=in_channels, text_dim=embed_dim)
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1))

    # ------------------------------------------------------------------ text
    def tokenize(self, names: Sequence[str]) -> Tensor:
        """Class names -> ``(K, L)`` token ids for :meth:`encode_text`."""
        return self.prompt.tokenize(names)

    def encode_text(self, tokens: Tensor) -> Tensor:
        """``(K, L)`` token ids -> ``(K, D)`` prompted class embeddings (before the decoder)."""
        return self.prompt(tokens.to(self.gamma.device))

    def encode_names(self, names: Sequence[str]) -> Tensor:
        return self.encode_text(self.tokenize(names))

    # ------------------------------------------------------------------ image
    def normalize(self, images: Tensor) -> Tensor:
        """RGB ``(B, 3, H, W)`` in [0, 1] -> normalised with :attr:`pixel_mean` / ``pixel_std``."""
        return (images - self.pixel_mean) / self.pixel_std

    def encode_image(self, images: Tensor) -> PyramidOutput:
        """Normalised ``(B, 3, H, W)`` -> backbone pyramid (vocabulary-independent part)."""
        return self.backbone(images)

    def decode(self, pyramid: PyramidOutput, text: Tensor) -> DenseCLIPOutput:
        """Backbone output + ``(K, D)`` or ``(B, K, D)`` class embeddings -> :class:`DenseCLIPOutput`."""
        batch = pyramid.dense.shape[0]
        if text.ndim == 2:
            text = text.unsqueeze(0).expand(batch, -1, -1)
        context = visual_context(pyramid.global_embed, pyramid.dense)
        text = text + self.gamma * self.context_decoder(text, context)
        score_map = pixel_text_score_map(pyramid.dense, text)
        features = list(pyramid.features)
        level = features[self.score_level]
        score_features = score_text_features(score_map, text)
        if score_features.shape[-2:] != level.shape[-2:]:
            raise ConfigError(
                f"Score map grid {tuple(score_features.shape[-2:])} differs from pyramid level "
                f"{self.score_level} ({tuple(level.shape[-2:])}); set score_concat_index to the "
                "level on the dense-token grid."
            )
        features[self.score_level] = torch.cat([level, score_features.to(level.dtype)], dim=1)
        return DenseCLIPOutput(self.decode_head(features, text), score_map, text)

    def forward(self, images: Tensor, text: Tensor) -> DenseCLIPOutput:
        """Normalised ``(B, 3, H, W)`` images and class embeddings -> :class:`DenseCLIPOutput`."""
        return self.decode(self.encode_image(images), text)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def window_logits(
        self,
        image: Tensor,
        text: Tensor,
        *,
        mode: str = "slide",
        crop_size: int = 512,
        stride: int = 341,
        batch_size: int = 8,
    ) -> Tensor:
        """Logits ``(K, H, W)`` of one normalised image ``(1, 3, H, W)``, as mmseg's inference.

        ``slide``: windows of ``crop_size`` every ``stride`` pixels (see
        :func:`ovseg.inference.sliding.sliding_windows`); each window's logits are upsampled
        (bilinear) to the window and averaged where windows overlap. ``whole``: one pass.
        """
        windows = self.windows(image.shape[-2], image.shape[-1], mode, crop_size, stride)
        scores = []
        for start in range(0, len(windows), max(1, int(batch_size))):
            chunk = windows[start : start + max(1, int(batch_size))]
            crops = torch.cat([image[:, :, w.y1 : w.y2, w.x1 : w.x2] for w in chunk])
            scores.extend(self(crops, text).logits.float())
        return average_window_scores(scores, windows, image.shape[-2], image.shape[-1])

    @staticmethod
    def windows(height: int, width: int, mode: str, crop_size: int, stride: int) -> list[Window]:
        if mode == "whole":
            return whole_window(height, width)
        if mode == "slide":
            return sliding_windows(height, width, int(crop_size), int(stride))
        raise ConfigError(f"Inference mode must be 'slide' or 'whole', not {mode!r}.")

    def export_metadata(self, classes: Sequence[str] = ()) -> dict[str, str]:
        """safetensors metadata that lets :func:`build_from_export` rebuild this model."""
        return {
            "format": "pt",
            "architecture": EXPORT_ARCHITECTURE,
            "model": json.dumps(self.config, sort_keys=True),
            "classes": json.dumps(list(classes)),
        }


def export_segmentor(
    segmentor: DenseCLIPSegmentor, path: str | os.PathLike, classes: Sequence[str] = ()
) -> Path:
    """Write the full state dict (CLIP included) and the architecture config, atomically."""
    state = {k: v.detach().cpu() for k, v in segmentor.state_dict().items()}
    return save_state_dict(state, path, metadata=segmentor.export_metadata(classes))


def build_from_export(
    path: str | os.PathLike, model: Mapping[str, Any] | None = None
) -> DenseCLIPSegmentor:
    """Rebuild a segmentor from an exported safetensors file (see :func:`export_segmentor`).

    ``model`` (segmentor keyword arguments) overrides the architecture stored in the file;
    weights always come from the file, loaded through :mod:`ovseg.weights` (strict keys).
    """
    from ovseg.errors import CheckpointError
    from ovseg.weights import load_safetensors_metadata, load_state_dict

    cfg: dict[str, Any]
    if model is None:
        meta = load_safetensors_metadata(path) if str(path).endswith(".safetensors") else {}
        if meta.get("architecture") != EXPORT_ARCHITECTURE or "model" not in meta:
            raise CheckpointError(
                f"{path} does not say which DenseCLIP architecture it holds; pass "
                "pipeline.model={model_name: ..., ...} with the settings it was trained with."
            )
        cfg = json.loads(meta["model"])
    else:
        cfg = dict(model)
    for key in ("pretrained", "checkpoint", "load_clip_weights"):
        cfg.pop(key, None)
    segmentor = DenseCLIPSegmentor(**cfg, load_clip_weights=False)
    state = load_state_dict(path)
    try:
        segmentor.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path} does not fit the DenseCLIP architecture {cfg.get('model_name')!r}: {exc}"
        ) from exc
    return segmentor.eval()


# ------------------------------------------------------------------------------------ task
DEFAULT_PARAMWISE = {
    "backbone": {"lr_mult": 0.1},
    "text_encoder": {"lr_mult": 0.0},
    "norm": {"decay_mult": 0.0},
}
DEFAULT_TEST = {
    "short_side": 512,
    "max_long_side": 2048,
    "mode": "slide",
    "crop_size": 512,
    "stride": 341,
    "batch_size": 8,
}


def default_train_transforms(crop_size: int, short_side: int) -> list[dict[str, Any]]:
    """The ADE20K augmentation of the recipes (before Normalize / Pad, which the task adds)."""
    return [
        {"type": "RandomResize", "scale": [4 * short_side, short_side], "ratio_range": [0.5, 2.0]},
        {"type": "RandomCrop", "crop_size": crop_size, "cat_max_ratio": 0.75},
        {"type": "RandomFlip", "prob": 0.5},
        {"type": "PhotoMetricDistortion"},
    ]


def _read_unseen(split_file: str | os.PathLike) -> list[str]:
    path = Path(split_file)
    if path.is_dir():
        path = path / "ovseg_split.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(
            f"Cannot read the split file {path} ({exc}); give the ovseg_split.json of the "
            "dataset (it lists the unseen classes)."
        ) from exc
    return [str(n) for n in data.get("unseen", [])]


@TASKS.register("DenseCLIP")
class DenseCLIPTask(nn.Module):
    """Training task for ``ovseg.engine``: DenseCLIP on semantic-segmentation samples.

    Args:
        model: :class:`DenseCLIPSegmentor` keyword arguments.
        classes: the dataset's classes in label order (a list, ``"a, b"`` or ``{file: ...}``;
            one name per class is prompted: the display name).
        exclude_classes: class names left out of training: not prompted, their pixels ignored.
        split_file: an ``ovseg_split.json`` (or its folder) whose ``unseen`` classes are
            excluded the same way; evaluation then reports seen / unseen mIoU.
        crop_size: training crop (the Pad target).
        train_transforms: augmentations on uint8 samples (default
            :func:`default_train_transforms`); the task appends Normalize (the model's
            statistics, 0-255 units), Pad (0 / 255) and ToTensor.
        test: evaluation inference ``{short_side, max_long_side, mode, crop_size, stride,
            batch_size}`` (keep-ratio resize, then slide / whole).
        tau, aux_weight: the score-map loss ``aux_weight * CE(score_map / tau)`` (0.07, 0.4).
        avg_non_ignore: cross-entropy averaged over labelled pixels only (mmseg >= 0.23 option);
            False (the reference) averages over all pixels.
        paramwise: ``{name substring: {lr_mult, decay_mult}}``; the longest matching key wins,
            as mmcv's ``paramwise_cfg.custom_keys``. Default: backbone x0.1 lr, text encoder
            frozen, ``norm`` parameters without weight decay (the recipes).
        sync_bn: under multi-GPU training, synchronise the BatchNorms of the decode head and
            the ViT pyramid (SyncBN in the reference); the CLIP ResNet keeps plain BatchNorm.
    """

    def __init__(
        self,
        model: Mapping[str, Any],
        classes: Any,
        *,
        exclude_classes: Sequence[str] | None = None,
        split_file: str | os.PathLike | None = None,
        crop_size: int = 512,
        train_transforms: Sequence[Mapping[str, Any]] | None = None,
        test: Mapping[str, Any] | None = None,
        tau: float = 0.07,
        aux_weight: float = 0.4,
        avg_non_ignore: bool = False,
        ignore_index: int = IGNORE_INDEX,
        paramwise: Mapping[str, Mapping[str, float]] | None = None,
        sync_bn: bool = True,
    ) -> None:
        super().__init__()
        from ovseg.vocab import Vocabulary

        self.class_names = Vocabulary.create(classes).names
        excluded = set(exclude_classes or [])
        if split_file is not None:
            excluded |= set(_read_unseen(split_file))
        unknown = sorted(excluded - set(self.class_names))
        if unknown:
            raise VocabularyError(
                f"Excluded classes {unknown[:5]} are not among the {len(self.class_names)} "
                "classes; check classes / exclude_classes / split_file."
            )
        self.train_names = [n for n in self.class_names if n not in excluded]
        if not self.train_names:
            raise VocabularyError("Every class is excluded; nothing is left to train on.")
        self.excluded = [n for n in self.class_names if n in excluded]
        self.label_map = {
            self.class_names.index(name): index for index, name in enumerate(self.train_names)
        }
        self.segmentor = DenseCLIPSegmentor(**dict(model))
        self.register_buffer("train_tokens", self.segmentor.tokenize(self.train_names), False)
        self.register_buffer("eval_tokens", self.segmentor.tokenize(self.class_names), False)
        self.crop_size = int(crop_size)
        self.test = {**DEFAULT_TEST, **dict(test or {})}
        unknown = sorted(set(self.test) - set(DEFAULT_TEST))
        if unknown:
            raise ConfigError(f"Unknown test keys {unknown}; known: {sorted(DEFAULT_TEST)}.")
        self.train_transforms = (
            list(train_transforms)
            if train_transforms is not None
            else default_train_transforms(self.crop_size, int(self.test["short_side"]))
        )
        self.tau = float(tau)
        self.aux_weight = float(aux_weight)
        self.avg_non_ignore = bool(avg_non_ignore)
        self.ignore_index = int(ignore_index)
        self.paramwise = {k: dict(v) for k, v in (paramwise or DEFAULT_PARAMWISE).items()}
        if sync_bn and edist.get_world_size() > 1 and torch.cuda.is_available():
            head = self.segmentor.decode_head
            self.segmentor.decode_head = nn.SyncBatchNorm.convert_sync_batchnorm(head)
            if self.segmentor.backbone.is_vit:
                levels = self.segmentor.backbone.levels
                self.segmentor.backbone.levels = nn.SyncBatchNorm.convert_sync_batchnorm(levels)

    # ---------------------------------------------------------------- data
    def data_transform(self, split: str) -> Compose:
        """train: remap -> augment -> Normalize -> Pad -> ToTensor; val: ToTensor only."""
        if split != "train":
            return Compose([ToTensor()])
        mean = (self.segmentor.pixel_mean.flatten() * 255).tolist()
        std = (self.segmentor.pixel_std.flatten() * 255).tolist()
        steps: list[Any] = []
        if len(self.train_names) != len(self.class_names):
            steps.append(RemapLabels(self.label_map, self.ignore_index))
        steps.append(build_transforms(list(self.train_transforms)))
        steps += [Normalize(mean, std), Pad(self.crop_size, 0, self.ignore_index), ToTensor()]
        return Compose(steps)

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Stack ``image (3, H, W)`` / ``label (H, W)`` when all sizes agree, else keep lists."""
        out: dict[str, Any] = {}
        for key in ("image", "label"):
            items = [s[key] for s in samples]
            same = all(i.shape == items[0].shape for i in items)
            out[key] = torch.stack(items) if same else items
        return out

    # ---------------------------------------------------------------- training
    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """``{"image": (B, 3, S, S) normalised, "label": (B, S, S) int64}`` -> losses (0-dim)."""
        images, labels = batch["image"], batch["label"]
        if not isinstance(images, Tensor):
            raise ConfigError(
                "Training batches must hold equally sized crops; pad them to crop_size."
            )
        text = self.segmentor.encode_text(self.train_tokens)
        out = self.segmentor(images, text)
        loss_decode = segmentation_cross_entropy(
            out.logits, labels, ignore_index=self.ignore_index, avg_non_ignore=self.avg_non_ignore
        )
        loss_aux = score_map_loss(
            out.score_map,
            labels,
            tau=self.tau,
            weight=self.aux_weight,
            ignore_index=self.ignore_index,
            avg_non_ignore=self.avg_non_ignore,
        )
        with torch.no_grad():
            logits = F.interpolate(
                out.logits, size=labels.shape[-2:], mode="bilinear", align_corners=False
            )
            valid = labels != self.ignore_index
            correct = (logits.argmax(1) == labels) & valid
            acc = correct.sum().float() / valid.sum().clamp(min=1)
        return {
            "loss": loss_decode + loss_aux,
            "loss_decode": loss_decode.detach(),
            "loss_aux": loss_aux.detach(),
            "acc": acc,
        }

    def param_groups(self, base_lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """Groups by the ``paramwise`` rule; parameters with lr multiplier 0 are left out."""
        keys = sorted(sorted(self.paramwise), key=len, reverse=True)
        groups: dict[tuple[float, float], list[Tensor]] = {}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            lr_mult, decay_mult = 1.0, 1.0
            for key in keys:
                if key in name:
                    lr_mult = float(self.paramwise[key].get("lr_mult", 1.0))
                    decay_mult = float(self.paramwise[key].get("decay_mult", 1.0))
                    break
            if lr_mult == 0.0:
                continue
            groups.setdefault((lr_mult, decay_mult), []).append(param)
        return [
            {"params": params, "lr_mult": lr, "weight_decay": weight_decay * decay}
            for (lr, decay), params in groups.items()
        ]

    # ---------------------------------------------------------------- evaluation / export
    @torch.no_grad()
    def predict_labels(self, image: Tensor, text: Tensor) -> Tensor:
        """``(3, H, W)`` float image in 0-255 -> ``(H, W)`` int64 labels (test-time settings)."""
        device = self.segmentor.pixel_mean.device
        x = image.to(device=device, dtype=torch.float32)[None] / 255.0
        height, width = x.shape[-2:]
        size = rescale_size(height, width, self.test["short_side"], self.test["max_long_side"])
        x = self.segmentor.normalize(resize_bilinear(x, size))
        logits = self.segmentor.window_logits(
            x,
            text,
            mode=self.test["mode"],
            crop_size=self.test["crop_size"],
            stride=self.test["stride"],
            batch_size=self.test["batch_size"],
        )
        logits = F.interpolate(
            logits[None], size=(height, width), mode="bilinear", align_corners=False
        )[0]
        return logits.argmax(0)

    def evaluate(self, loader: Any, distributed: bool = False) -> dict[str, float]:
        """mIoU / mAcc / aAcc over every class of ``classes`` (excluded ones too), in percent,
        plus ``mIoU_seen`` / ``mIoU_unseen`` when classes were excluded from training."""
        from ovseg.evaluation.semseg import SemSegMetric

        groups = None
        if self.excluded:
            groups = {"seen": self.train_names, "unseen": self.excluded}
        metric = SemSegMetric(
            len(self.class_names), self.class_names, self.ignore_index, groups=groups
        )
        text = self.segmentor.encode_text(self.eval_tokens)
        for batch in loader:
            for image, label in zip(batch["image"], batch["label"]):
                metric.process(self.predict_labels(image, text).cpu(), label)
        if distributed:
            metric.all_reduce()
        results = metric.compute()
        out = {k: float(results[k]) for k in ("mIoU", "mAcc", "aAcc")}
        for name, values in results["groups"].items():
            out[f"mIoU_{name}"] = float(values["mIoU"])
        return {k: v for k, v in out.items() if not np.isnan(v)}

    def export(self, path: str | os.PathLike) -> None:
        """Write the segmentor's weights and architecture (safetensors) for the pipeline."""
        export_segmentor(self.segmentor, path, self.train_names)
