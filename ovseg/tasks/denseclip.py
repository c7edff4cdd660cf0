"""The ``DenseCLIP`` training task: DenseCLIP (Rao et al., CVPR 2022) on semantic segmentation.

Trains a :class:`~ovseg.models.denseclip.DenseCLIPSegmentor` with ``CE(logits) +
0.4 * CE(score_map / 0.07)``, both upsampled to the label size, the CLIP text encoder frozen and
the image backbone at 0.1x the learning rate; evaluates mIoU (seen / unseen when classes are
held out) and exports the segmentor for :class:`ovseg.pipelines.denseclip.DenseCLIPSegmenter`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
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
from ovseg.inference.sliding import slide_inference
from ovseg.models.denseclip import IGNORE_INDEX, DenseCLIPSegmentor
from ovseg.models.denseclip_export import export_segmentor, load_export_weights
from ovseg.models.heads.denseclip import score_map_loss, segmentation_cross_entropy
from ovseg.registry import TASKS
from ovseg.settings import merge_settings

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
        load_from: a DenseCLIP export (``model_final.safetensors`` of an earlier run, or a
            packaged file) whose weights start this run, as mmseg's ``load_from``: weights
            only (strict keys, same architecture), with a fresh optimizer and schedule.
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
        load_from: str | os.PathLike | None = None,
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
        if load_from is None:
            self.segmentor = DenseCLIPSegmentor(**dict(model))
        else:  # every weight comes from the export: the CLIP checkpoint is not read
            self.segmentor = DenseCLIPSegmentor(**{**dict(model), "load_clip_weights": False})
            load_export_weights(self.segmentor, load_from)
        self.register_buffer("train_tokens", self.segmentor.tokenize(self.train_names), False)
        self.register_buffer("eval_tokens", self.segmentor.tokenize(self.class_names), False)
        self.crop_size = int(crop_size)
        self.test = merge_settings(DEFAULT_TEST, test, "test")
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
        logits = slide_inference(
            lambda crops: self.segmentor(crops, text).logits,
            x,
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
