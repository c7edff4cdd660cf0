"""Training a whole SAM (image encoder, prompt encoder, mask decoder) on prompted instances.

A task for ``ovseg.engine`` (see ``ovseg.engine.task``). Samples come from
:class:`~ovseg.data.sam_prompts.SamPromptDataset` through :class:`ToSamFrame`.

Loss, as in SAM (Kirillov et al., 2023, appendix A): per prompt, ``20 * focal + 1 * dice`` on the
mask logits (upsampled bilinearly to the padded ``img_size`` frame and compared with the
ground truth inside the image, not the padding), plus the mean squared error between the
predicted IoU and the IoU of the binarised mask with the ground truth. A lone point is
ambiguous: the decoder gives 3 masks and only the one with the lowest mask loss is
back-propagated; every other prompt uses the single-mask output. With ``supervise_all_iou``
(default) the IoU head learns the IoU of all 3 masks (it ranks them at inference), otherwise only
of the chosen one. Focal: ``alpha = 0.25, gamma = 2``, averaged over pixels; dice:
``1 - (2 sum(p g) + 1) / (sum(p) + sum(g) + 1)`` with ``p = sigmoid(logits)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import MaskDecoder
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from ovseg.data.sam_prompts import Prompt, ToSamFrame
from ovseg.engine import dist as edist
from ovseg.engine.data import move_to_device
from ovseg.errors import ConfigError
from ovseg.models.decoders.sam_build import build_sam, resolve_sam_architecture
from ovseg.registry import TASKS
from ovseg.weights import save_state_dict

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0


def decode_per_prompt(
    decoder: MaskDecoder,
    image_embeddings: Tensor,
    image_pe: Tensor,
    sparse: Tensor,
    dense: Tensor,
) -> tuple[Tensor, Tensor]:
    """``MaskDecoder.predict_masks`` with one image embedding *per prompt*.

    segment-anything's decoder repeats one image's embedding for all prompts; training batches
    mix images, so here ``image_embeddings`` is ``(T, C, e, e)``, row t belonging to prompt t.
    Returns all ``num_multimask_outputs + 1`` outputs: low-res logits ``(T, M, 4e, 4e)`` and IoU
    predictions ``(T, M)``.
    """
    count = sparse.shape[0]
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat([output_tokens[None].expand(count, -1, -1), sparse], dim=1)
    src = image_embeddings + dense
    pos = image_pe.expand(count, -1, -1, -1)
    channels, height, width = src.shape[1:]
    hidden, src = decoder.transformer(src, pos, tokens)
    iou_token = hidden[:, 0]
    mask_tokens = hidden[:, 1 : 1 + decoder.num_mask_tokens]
    upscaled = decoder.output_upscaling(src.transpose(1, 2).reshape(count, channels, height, width))
    weights = torch.stack(
        [mlp(mask_tokens[:, i]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1
    )
    up_c, up_h, up_w = upscaled.shape[1:]
    masks = (weights @ upscaled.reshape(count, up_c, up_h * up_w)).reshape(count, -1, up_h, up_w)
    return masks, decoder.iou_prediction_head(iou_token)


def dice_loss(logits: Tensor, targets: Tensor, valid: Tensor) -> Tensor:
    """``(T, K, S, S)`` logits, ``(T, 1, S, S)`` float targets and valid pixels -> ``(T, K)``."""
    probs = logits.sigmoid() * valid
    numerator = 2 * (probs * targets).flatten(2).sum(-1)
    denominator = probs.flatten(2).sum(-1) + (targets * valid).flatten(2).sum(-1)
    return 1 - (numerator + 1) / (denominator + 1)


def focal_loss(logits: Tensor, targets: Tensor, valid: Tensor) -> Tensor:
    """Sigmoid focal loss (alpha 0.25, gamma 2) averaged over valid pixels -> ``(T, K)``."""
    per_pixel = sigmoid_focal_loss(
        logits, targets.expand_as(logits), alpha=FOCAL_ALPHA, gamma=FOCAL_GAMMA, reduction="none"
    )
    return (per_pixel * valid).flatten(2).sum(-1) / valid.flatten(2).sum(-1).clamp(min=1)


def mask_iou(logits: Tensor, targets: Tensor, valid: Tensor) -> Tensor:
    """IoU of ``logits > 0`` with the targets inside the valid pixels -> ``(T, K)`` (1 if both
    are empty)."""
    pred = (logits > 0) & valid.bool()
    target = targets.bool() & valid.bool()
    inter = (pred & target).flatten(2).sum(-1).float()
    union = (pred | target).flatten(2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def _stack(values: list[Any], dtype: torch.dtype) -> Tensor | None:
    """Stack equal-shaped numpy arrays into a tensor; None when the prompts have none."""
    if values[0] is None:
        return None
    return torch.from_numpy(np.stack(values)).to(dtype)


def _group_key(prompt: Prompt) -> tuple[str, int]:
    """Prompts sharing a key have the same sparse-token layout and so batch together."""
    if prompt.box is not None:
        return ("box", 0 if prompt.points is None else len(prompt.points))
    return ("point", len(prompt.points))


@TASKS.register("PromptedSAM")
class PromptedSAM(nn.Module):
    """Trains ``build_sam(model_type)`` with SAM's prompts and losses.

    Args:
        model_type: a SAM architecture name (``ovseg-sam-tiny``), mapping or JSON file.
        init_checkpoint: weights to start from (through ``ovseg.weights``); None: random.
        focal_weight, dice_weight, iou_weight: loss weights (SAM: 20, 1, 1).
        supervise_all_iou: train the IoU head on all multimask outputs (else the chosen one).
        freeze: parameter-name prefixes to keep fixed, e.g. ``["image_encoder."]``.
    """

    def __init__(
        self,
        model_type: str | Mapping[str, Any] = "ovseg-sam-tiny",
        *,
        init_checkpoint: str | os.PathLike | None = None,
        focal_weight: float = 20.0,
        dice_weight: float = 1.0,
        iou_weight: float = 1.0,
        supervise_all_iou: bool = True,
        freeze: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.model_name, self.architecture = resolve_sam_architecture(model_type)
        self.model = build_sam(self.architecture, checkpoint=init_checkpoint)
        self.model.train()
        self.img_size = self.architecture.image_size
        self.focal_weight = float(focal_weight)
        self.dice_weight = float(dice_weight)
        self.iou_weight = float(iou_weight)
        self.supervise_all_iou = bool(supervise_all_iou)
        self.freeze = tuple(freeze)
        frozen = 0
        for name, param in self.model.named_parameters():
            if name.startswith(self.freeze):
                param.requires_grad_(False)
                frozen += 1
        if self.freeze and frozen == 0:
            raise ConfigError(f"freeze={list(self.freeze)} matches no parameter of the SAM.")

    # ---------------------------------------------------------------- data
    def data_transform(self, split: str) -> ToSamFrame:
        """The same resize for every split (augmentation lives in the prompts)."""
        return ToSamFrame(self.img_size)

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Samples in SAM's frame -> one batch.

        Returns ``{"images": (B, 3, S, S) float normalised and zero-padded as Sam.preprocess,
        "valid": (B, 1, S, S) bool image pixels, "masks": (N, S, S) bool ground truth of all
        instances, "groups": [{"kind", "multimask", "image": (t,) long, "instance": (t,) long,
        "boxes": (t, 4) | None, "coords": (t, P, 2) | None, "labels": (t, P) | None}]}``.
        """
        size = self.img_size
        # plain numbers: collate runs in loader workers, which must not touch the model's device
        mean = torch.tensor(self.architecture.pixel_mean).view(3, 1, 1)
        std = torch.tensor(self.architecture.pixel_std).view(3, 1, 1)
        images = torch.zeros((len(samples), 3, size, size))
        valid = torch.zeros((len(samples), 1, size, size), dtype=torch.bool)
        masks, grouped = [], {}
        offset = 0
        for b, sample in enumerate(samples):
            h, w = sample["input_size"]
            images[b, :, :h, :w] = (sample["image"].float() - mean) / std
            valid[b, :, :h, :w] = True
            padded = torch.zeros((len(sample["masks"]), size, size), dtype=torch.bool)
            padded[:, :h, :w] = sample["masks"]
            masks.append(padded)
            for prompt in sample["prompts"]:
                grouped.setdefault(_group_key(prompt), []).append((b, offset, prompt))
            offset += len(sample["masks"])
        groups = []
        for (kind, _), members in sorted(grouped.items()):
            prompts = [p for _, _, p in members]
            groups.append(
                {
                    "kind": kind,
                    "multimask": prompts[0].multimask,
                    "image": torch.tensor([b for b, _, _ in members]),
                    "instance": torch.tensor([o + p.instance for _, o, p in members]),
                    "boxes": _stack([p.box for p in prompts], torch.float32),
                    "coords": _stack([p.points for p in prompts], torch.float32),
                    "labels": _stack([p.labels for p in prompts], torch.int64),
                }
            )
        return {
            "images": images,
            "valid": valid,
            "masks": torch.cat(masks) if masks else torch.zeros((0, size, size), dtype=torch.bool),
            "groups": groups,
        }

    # ---------------------------------------------------------------- model
    def predict_groups(self, batch: Mapping[str, Any]) -> list[tuple[Tensor, Tensor]]:
        """For each prompt group: mask logits ``(t, K, S, S)`` in the padded frame and IoU
        predictions ``(t, K)``; K = 3 for lone points, else 1."""
        embeddings = self.model.image_encoder(batch["images"])
        image_pe = self.model.prompt_encoder.get_dense_pe()
        outputs = []
        for group in batch["groups"]:
            points = None
            if group["coords"] is not None:
                points = (group["coords"], group["labels"])
            sparse, dense = self.model.prompt_encoder(
                points=points, boxes=group["boxes"], masks=None
            )
            low_res, iou = decode_per_prompt(
                self.model.mask_decoder, embeddings[group["image"]], image_pe, sparse, dense
            )
            chosen = slice(1, None) if group["multimask"] else slice(0, 1)
            logits = F.interpolate(
                low_res[:, chosen],
                (self.img_size, self.img_size),
                mode="bilinear",
                align_corners=False,
            )
            outputs.append((logits, iou[:, chosen]))
        return outputs

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Mean over prompts of the SAM loss; also logs its parts and the chosen masks' IoU."""
        totals = {"focal": [], "dice": [], "iou_mse": [], "mask_iou": []}
        for group, (logits, iou_pred) in zip(
            batch["groups"], self.predict_groups(batch), strict=True
        ):
            logits, iou_pred = logits.float(), iou_pred.float()  # losses in fp32 under autocast
            targets = batch["masks"][group["instance"]][:, None].float()
            valid = batch["valid"][group["image"]].float()
            focal = focal_loss(logits, targets, valid)
            dice = dice_loss(logits, targets, valid)
            best = (self.focal_weight * focal + self.dice_weight * dice).argmin(dim=1)
            rows = torch.arange(len(best), device=best.device)
            with torch.no_grad():
                iou_true = mask_iou(logits, targets, valid)
            squared = (iou_pred - iou_true) ** 2
            totals["focal"].append(focal[rows, best])
            totals["dice"].append(dice[rows, best])
            totals["iou_mse"].append(
                squared.mean(dim=1) if self.supervise_all_iou else squared[rows, best]
            )
            totals["mask_iou"].append(iou_true[rows, best])
        if not totals["focal"]:  # no prompt in the batch: a zero loss that still backprops
            zero = sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
            return {"loss": zero}
        parts = {k: torch.cat(v).mean() for k, v in totals.items()}
        loss = (
            self.focal_weight * parts["focal"]
            + self.dice_weight * parts["dice"]
            + self.iou_weight * parts["iou_mse"]
        )
        return {"loss": loss, **{k: v.detach() for k, v in parts.items()}}

    def param_groups(self, base_lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """No weight decay on biases, norms, positional terms and learned embeddings."""
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            plain = (
                param.ndim < 2
                or "pos_embed" in name
                or "rel_pos" in name
                or isinstance(self.model.get_submodule(name.rsplit(".", 1)[0]), nn.Embedding)
            )
            (no_decay if plain else decay).append(param)
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    # ---------------------------------------------------------------- evaluation / export
    def evaluate(self, loader: Iterable[Any], distributed: bool = False) -> dict[str, float]:
        """Mean IoU over val prompts: ``miou_box`` (exact box, single mask), ``miou_point`` (one
        interior point, the mask with the highest predicted IoU of 3) and ``miou_point_oracle``
        (the best of the 3). IoU is measured in SAM's input frame, inside the image."""
        device = self.model.pixel_mean.device
        scores: dict[str, list[Tensor]] = {"box": [], "point": [], "point_oracle": []}
        for batch in loader:
            batch = move_to_device(batch, device)
            for group, (logits, iou_pred) in zip(
                batch["groups"], self.predict_groups(batch), strict=True
            ):
                targets = batch["masks"][group["instance"]][:, None].float()
                valid = batch["valid"][group["image"]].float()
                iou = mask_iou(logits.float(), targets, valid)
                rows = torch.arange(len(iou), device=iou.device)
                if group["kind"] == "box":
                    scores["box"].append(iou[:, 0])
                else:
                    scores["point"].append(iou[rows, iou_pred.argmax(dim=1)])
                    scores["point_oracle"].append(iou.max(dim=1).values)
        metrics = {}
        for name, values in scores.items():
            flat = torch.cat(values).float() if values else torch.zeros(0, device=device)
            if distributed:
                flat = edist.all_gather_variable(flat)
            if len(flat):
                metrics[f"miou_{name}"] = flat.mean().item()
        return metrics

    def export(self, path: str | os.PathLike) -> None:
        """Write the bare ``Sam`` state dict (segment-anything key names) as safetensors."""
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        save_state_dict(state, path, metadata={"format": "pt", "model_type": self.model_name})
