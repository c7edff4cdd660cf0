"""OWL-ViT-style detection training on an open_clip CLIP (a task for ``ovseg.engine``).

The model is :class:`~ovseg.models.detectors.owl_heads.OwlClipModel`: the CLIP's image tower
(initialised from the CLIP's weights) with OWL's per-patch box and class heads. The text tower
stays frozen: the queries are the CLIP's own text embeddings of the training classes (prompt
template ensemble, as ``ClipBackbone.encode_text``), computed once, so at test time any
vocabulary is scored in the same space. Loss: OWL-ViT's DETR-style set loss
(:mod:`ovseg.models.detectors.set_criterion`).

Samples (``SyntheticDetectionDataset`` or any dataset of the same keys): ``{"image": (H, W, 3)
uint8, "boxes": (N, 4) XYXY pixels, "class_ids": (N,) int64 indices into the dataset's
``class_names``}``. The training queries are ``train_classes`` (a list of names; default the
dataset world's seen things); an object of another class is an error, so a held-out class can
never be trained on by accident. Evaluation queries every class of ``eval_classes`` (default all
things) and reports recall at IoU 0.5 of the best box of each object's own class, overall and
for ``unseen`` classes.

Batches: ``{"images": (B, 3, S, S) normalised, "classes": [(N_b,) long query indices],
"boxes": [(N_b, 4) (cx, cy, w, h) in [0, 1]], "eval_classes": [(N_b,) long]}``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import box_iou

from ovseg.data.synthetic_vocab import SEEN_THING_IDS, THING_CLASSES, UNSEEN_CLASSES
from ovseg.engine import dist as edist
from ovseg.engine.data import move_to_device
from ovseg.errors import ConfigError
from ovseg.models.detectors.owl_heads import OwlClipModel, owl_input
from ovseg.models.detectors.set_criterion import SetCriterion, box_cxcywh_to_xyxy
from ovseg.registry import TASKS
from ovseg.weights import save_state_dict

DEFAULT_TRAIN_CLASSES = tuple(THING_CLASSES[i] for i in SEEN_THING_IDS)


class OwlSamplePrep:
    """Sample -> model input, target boxes ``(cx, cy, w, h)`` in [0, 1] and class names.

    ``hflip`` (training): mirror the image and boxes half of the time (a picklable callable, so
    that it runs in loader workers).
    """

    def __init__(
        self,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        class_names: Sequence[str],
        hflip: bool,
    ) -> None:
        self.image_size = int(image_size)
        self.mean, self.std = tuple(mean), tuple(std)
        self.class_names = list(class_names)
        self.hflip = bool(hflip)

    def __call__(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        image = np.asarray(sample["image"])
        boxes = np.asarray(sample["boxes"], dtype=np.float32).reshape(-1, 4).copy()
        width = image.shape[1]
        if self.hflip and torch.rand(()) < 0.5:
            image = image[:, ::-1]
            boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
        pixels, side = owl_input(image, self.image_size, self.mean, self.std)
        xyxy = torch.from_numpy(boxes) / side
        cxcywh = torch.stack(
            [
                (xyxy[:, 0] + xyxy[:, 2]) / 2,
                (xyxy[:, 1] + xyxy[:, 3]) / 2,
                xyxy[:, 2] - xyxy[:, 0],
                xyxy[:, 3] - xyxy[:, 1],
            ],
            dim=-1,
        )
        names = [self.class_names[int(c)] for c in np.asarray(sample["class_ids"]).reshape(-1)]
        return {"image": pixels, "boxes": cxcywh, "names": names}


@TASKS.register("OwlDetection")
class OwlDetection(nn.Module):
    """Trains OWL's heads (and optionally part of the image tower) of a CLIP.

    Args:
        model_name, pretrained: the open_clip CLIP (e.g. ``ovseg-ViT-Ti-8`` / ``shapes``).
        image_size: the square model input (a multiple of the patch size).
        templates: prompt templates of the queries (``photo``, ``imagenet80``, ...).
        merge_class_token, class_init, prior_prob: see :class:`OwlClipModel`.
        train_classes: the training queries (names); default the seen things.
        negative_classes: more training queries that are never an object (e.g. the stuff
            classes), so that their scores are trained down (OWL's negative queries).
        eval_classes: the evaluation queries; default all things.
        unseen: classes reported apart in evaluation; default the world's unseen pairs.
        class_names: names of the dataset's ``class_ids``; default the world's things.
        freeze: parameter-name prefixes of the model kept fixed (e.g. ``visual.conv1``).
        tower_lr_mult: learning-rate multiplier of the image tower (``visual.``).
        loss_weights: ``(class, l1, giou)``; focal ``alpha``, ``gamma``.
        hflip: random horizontal flip in training.
        init_checkpoint: an ``OwlClipModel`` state dict to start from (a previous export).
    """

    def __init__(
        self,
        model_name: str = "ovseg-ViT-Ti-8",
        pretrained: str | None = "shapes",
        *,
        image_size: int = 64,
        templates: str | Sequence[str] = "photo",
        merge_class_token: bool = True,
        class_init: str = "random",
        prior_prob: float | None = 0.01,
        train_classes: Sequence[str] | None = None,
        negative_classes: Sequence[str] = (),
        eval_classes: Sequence[str] | None = None,
        unseen: Sequence[str] | None = None,
        class_names: Sequence[str] | None = None,
        freeze: Sequence[str] = (),
        tower_lr_mult: float = 0.1,
        loss_weights: Sequence[float] = (1.0, 1.0, 1.0),
        alpha: float = 0.3,
        gamma: float = 2.0,
        hflip: bool = True,
        init_checkpoint: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        from ovseg.models.backbones.clip import ClipBackbone

        clip = ClipBackbone(model_name, pretrained=pretrained, templates=templates)
        self.mean = tuple(clip.mean.flatten().tolist())
        self.std = tuple(clip.std.flatten().tolist())
        self.train_classes = list(train_classes or DEFAULT_TRAIN_CLASSES)
        self.train_classes += [n for n in negative_classes if n not in self.train_classes]
        self.eval_classes = list(eval_classes or THING_CLASSES)
        self.unseen = list(UNSEEN_CLASSES if unseen is None else unseen)
        self.class_names = list(class_names or THING_CLASSES)
        if set(self.train_classes) & set(self.unseen):
            raise ConfigError(
                "train_classes hold held-out classes "
                f"{sorted(set(self.train_classes) & set(self.unseen))}; drop them."
            )
        with torch.no_grad():
            self.register_buffer("train_queries", clip.encode_text(self.train_classes).clone())
            self.register_buffer("eval_queries", clip.encode_text(self.eval_classes).clone())
        visual = copy.deepcopy(clip.model.visual).float().train()
        visual.requires_grad_(True)
        self.model = OwlClipModel(
            visual, clip.embed_dim, image_size, merge_class_token, class_init, prior_prob
        )
        del clip
        if init_checkpoint is not None:
            from ovseg.weights import load_state_dict

            state = load_state_dict(init_checkpoint)
            state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
            result = self.model.load_state_dict(state, strict=False)
            if result.missing_keys or result.unexpected_keys:
                raise ConfigError(
                    f"init_checkpoint {init_checkpoint} is not an OwlClipModel of this "
                    f"architecture: missing {result.missing_keys[:4]}, unexpected "
                    f"{result.unexpected_keys[:4]}."
                )
        self.image_size = int(image_size)
        self.freeze = tuple(freeze)
        frozen = 0
        for name, param in self.model.named_parameters():
            if name.startswith(self.freeze):
                param.requires_grad_(False)
                frozen += 1
        if self.freeze and frozen == 0:
            raise ConfigError(f"freeze={list(self.freeze)} matches no parameter of the model.")
        self.tower_lr_mult = float(tower_lr_mult)
        weights = tuple(float(w) for w in loss_weights)
        if len(weights) != 3:
            raise ConfigError(f"loss_weights must be (class, l1, giou), got {loss_weights!r}.")
        self.criterion = SetCriterion(weights, float(alpha), float(gamma))
        self.hflip = bool(hflip)
        self._train_index = {name: i for i, name in enumerate(self.train_classes)}
        self._eval_index = {name: i for i, name in enumerate(self.eval_classes)}

    # ---------------------------------------------------------------- data
    def data_transform(self, split: str) -> OwlSamplePrep:
        return OwlSamplePrep(
            self.image_size,
            self.mean,
            self.std,
            self.class_names,
            hflip=self.hflip and split == "train",
        )

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Samples -> a batch (module docstring); eval classes are -1 when not queried."""
        train = [
            torch.tensor([self._train_index.get(n, -1) for n in s["names"]], dtype=torch.long)
            for s in samples
        ]
        evals = [
            torch.tensor([self._eval_index.get(n, -1) for n in s["names"]], dtype=torch.long)
            for s in samples
        ]
        return {
            "images": torch.stack([s["image"] for s in samples]),
            "boxes": [s["boxes"] for s in samples],
            "classes": train,
            "eval_classes": evals,
            "names": [s["names"] for s in samples],
        }

    # ---------------------------------------------------------------- training
    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """OWL's set loss over the training queries; logs its parts."""
        for names, classes in zip(batch["names"], batch["classes"], strict=True):
            if len(classes) and bool((classes < 0).any()):
                bad = sorted({n for n, c in zip(names, classes.tolist()) if c < 0})
                raise ConfigError(
                    f"Training scenes hold classes outside train_classes: {bad}; train on "
                    "scenes of the training classes only (split: train)."
                )
        logits, boxes = self.model(batch["images"], self.train_queries)
        return self.criterion(logits, boxes, batch["classes"], batch["boxes"])

    def param_groups(self, base_lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """Groups by (tower or head, decayed or not): no decay on 1-D parameters and the
        positional / class embeddings; the tower at ``tower_lr_mult``."""
        groups: dict[tuple[bool, bool], list[Tensor]] = {}
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            plain = param.ndim < 2 or "positional_embedding" in name or "class_embedding" in name
            groups.setdefault((name.startswith("visual."), plain), []).append(param)
        return [
            {
                "params": params,
                "weight_decay": 0.0 if plain else weight_decay,
                "lr_mult": self.tower_lr_mult if tower else 1.0,
            }
            for (tower, plain), params in sorted(groups.items())
        ]

    # ---------------------------------------------------------------- evaluation / export
    @torch.no_grad()
    def evaluate(self, loader: Iterable[Any], distributed: bool = False) -> dict[str, float]:
        """Recall at IoU 0.5: for every object, the highest-scoring box for its own class among
        all patches (``recall50``, and ``recall50_unseen`` for the unseen classes)."""
        device = self.train_queries.device
        unseen = {self._eval_index[n] for n in self.unseen if n in self._eval_index}
        hits, is_unseen = [], []
        for batch in loader:
            batch = move_to_device(batch, device)
            logits, boxes = self.model(batch["images"], self.eval_queries)
            for b, classes in enumerate(batch["eval_classes"]):
                keep = classes >= 0
                if not bool(keep.any()):
                    continue
                classes, targets = classes[keep], batch["boxes"][b][keep].float()
                best = logits[b].float()[:, classes].argmax(dim=0)
                iou = box_iou(
                    box_cxcywh_to_xyxy(boxes[b].float()[best]), box_cxcywh_to_xyxy(targets)
                ).diagonal()
                hits.append((iou >= 0.5).float())
                is_unseen.append(torch.tensor([int(c) in unseen for c in classes.tolist()]))
        flat = torch.cat(hits) if hits else torch.zeros(0, device=device)
        mask = torch.cat(is_unseen).to(device).float() if is_unseen else torch.zeros_like(flat)
        if distributed:
            flat, mask = edist.all_gather_variable(flat), edist.all_gather_variable(mask)
        metrics = {}
        if len(flat):
            metrics["recall50"] = flat.mean().item()
            if mask.sum() > 0:
                metrics["recall50_unseen"] = (flat * mask).sum().item() / mask.sum().item()
        return metrics

    def export(self, path: str | os.PathLike) -> None:
        """Write the ``OwlClipModel`` state dict (image tower and heads) as safetensors."""
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_state_dict(
            state,
            path,
            metadata={
                "format": "pt",
                "image_size": str(self.image_size),
                "merge_class_token": str(self.model.merge_class_token),
            },
        )
