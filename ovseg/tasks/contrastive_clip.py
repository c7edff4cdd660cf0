"""Contrastive image-text training of any open_clip architecture (a task for ``ovseg.engine``).

Batches: ``{"image": (B, 3, S, S) float32 normalised with the model's mean/std, "text": (B, L)
int64 token ids}``. The loss is open_clip's symmetric InfoNCE (``ClipLoss``) over the *global*
batch when training under torchrun: features are all-gathered with gradients.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.loss import ClipLoss
from torch import Tensor, nn
from torchvision import transforms as T

from ovseg.engine import dist as edist
from ovseg.engine.data import move_to_device
from ovseg.errors import ConfigError
from ovseg.registry import TASKS
from ovseg.weights import load_state_dict, save_state_dict

PACKAGED_MODEL_CONFIGS = Path(__file__).resolve().parent.parent / "model_zoo" / "model_configs"
MAX_LOGIT_SCALE = math.log(100.0)

_registered_config_dirs: set[str] = set()


def register_model_configs(path: str | os.PathLike) -> None:
    """Make open_clip JSON model configs in ``path`` (a folder or one file) known to open_clip."""
    key = str(Path(path).resolve())
    if key not in _registered_config_dirs:
        open_clip.add_model_config(key)
        _registered_config_dirs.add(key)


@TASKS.register("ContrastiveCLIP")
class ContrastiveCLIP(nn.Module):
    """CLIP-style contrastive training of ``open_clip.create_model(model_name)``.

    Args:
        model_name: an open_clip architecture name (``ViT-B-16``, or one from a config folder).
        model_config_dir: folder (or JSON file) of extra open_clip model configs to register.
            ``ovseg/model_zoo/model_configs`` is registered when it exists.
        init_checkpoint: weights loaded into the open_clip model (open_clip's key names) through
            ``ovseg.weights.load_state_dict``; None keeps the random initialisation.
        local_loss: each rank scores only its own rows against all gathered columns (less
            memory, same gradients); False computes the full global logit matrix on every rank.
        gather_with_grad: all-gather features with gradients. Keep True: only then do the
            gradients equal single-process training with the same global batch (see forward).
        crop_scale: area range of the training random resized crop.
        crop_ratio: aspect-ratio range of that crop (``[1, 1]`` keeps shapes undistorted).
        hflip: random horizontal flip in training.
        color_jitter: None (off: colour is often what a caption says) or a strength in [0, 1]
            used for brightness, contrast and saturation.
        decay_embeddings: also weight-decay 2-D embeddings (token / positional); gains, biases,
            1-D embeddings and logit_scale are never decayed.
        lr_mults: ``{parameter-name prefix: lr multiplier}``, e.g. ``{"visual.": 0.1}``.
        context_length: tokenizer context length (default: the model's).
    """

    def __init__(
        self,
        model_name: str,
        *,
        model_config_dir: str | os.PathLike | None = None,
        init_checkpoint: str | os.PathLike | None = None,
        local_loss: bool = False,
        gather_with_grad: bool = True,
        crop_scale: Sequence[float] = (0.7, 1.0),
        crop_ratio: Sequence[float] = (3 / 4, 4 / 3),
        hflip: bool = True,
        color_jitter: float | None = None,
        decay_embeddings: bool = False,
        lr_mults: Mapping[str, float] | None = None,
        context_length: int | None = None,
    ) -> None:
        super().__init__()
        if PACKAGED_MODEL_CONFIGS.is_dir():
            register_model_configs(PACKAGED_MODEL_CONFIGS)
        if model_config_dir is not None:
            if not Path(model_config_dir).exists():
                raise ConfigError(f"model_config_dir {model_config_dir} does not exist.")
            register_model_configs(model_config_dir)
        model_cfg = open_clip.get_model_config(model_name)
        if model_cfg is None:
            raise ConfigError(
                f"open_clip has no architecture {model_name!r}. Pick one of "
                "open_clip.list_models() or pass model_config_dir with its JSON config."
            )
        self.model_name = model_name
        self.embed_dim = int(model_cfg["embed_dim"])
        self.model = open_clip.create_model(model_name, pretrained=None)
        if init_checkpoint is not None:
            self.model.load_state_dict(load_state_dict(init_checkpoint))
        self.local_loss = bool(local_loss)
        self.gather_with_grad = bool(gather_with_grad)
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.crop_ratio = (float(crop_ratio[0]), float(crop_ratio[1]))
        self.hflip = bool(hflip)
        self.color_jitter = color_jitter
        self.decay_embeddings = bool(decay_embeddings)
        self.lr_mults = dict(lr_mults or {})
        self.tokenizer = open_clip.get_tokenizer(model_name, context_length=context_length)
        pp = open_clip.get_model_preprocess_cfg(self.model)
        size = pp.get("size", 224)
        self.image_size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        self.mean = tuple(pp.get("mean", open_clip.OPENAI_DATASET_MEAN))
        self.std = tuple(pp.get("std", open_clip.OPENAI_DATASET_STD))
        self._losses: dict[tuple[int, int], ClipLoss] = {}

    # ---------------------------------------------------------------- data
    def data_transform(self, split: str) -> T.Compose:
        """PIL RGB image -> (3, S, S) float32 normalised tensor; random crop/flip for train."""
        norm = [T.ToTensor(), T.Normalize(self.mean, self.std)]
        bicubic = T.InterpolationMode.BICUBIC
        if split != "train":
            return T.Compose(
                [T.Resize(min(self.image_size), bicubic), T.CenterCrop(self.image_size), *norm]
            )
        steps: list[Any] = [
            T.RandomResizedCrop(
                self.image_size, scale=self.crop_scale, ratio=self.crop_ratio, interpolation=bicubic
            )
        ]
        if self.hflip:
            steps.append(T.RandomHorizontalFlip())
        if self.color_jitter:
            s = float(self.color_jitter)
            steps.append(T.ColorJitter(brightness=s, contrast=s, saturation=s))
        return T.Compose([*steps, *norm])

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Tensor]:
        """``[{"image": (3,S,S), "caption": str}]`` -> ``{"image": (B,3,S,S), "text": (B,L)}``."""
        images = torch.stack([s["image"] for s in samples])
        text = self.tokenizer([s["caption"] for s in samples])
        return {"image": images, "text": text}

    # ---------------------------------------------------------------- training
    def _loss_fn(self) -> ClipLoss:
        key = (edist.get_rank(), edist.get_world_size())
        if key not in self._losses:
            self._losses[key] = ClipLoss(
                local_loss=self.local_loss,
                gather_with_grad=self.gather_with_grad,
                rank=key[0],
                world_size=key[1],
            )
        return self._losses[key]

    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Contrastive loss of the batch; returns ``{"loss", "logit_scale"}`` (0-dim tensors).

        Why W ranks with ``gather_with_grad`` + DDP equal one process with the global batch:
        let L be the single-process loss over the global batch of B = W*b pairs and f_r the
        features of rank r's b samples. With ``local_loss=False`` every rank q computes the same
        L_q = L from the gathered features; with ``local_loss=True`` rank q computes L_q over its
        own rows only, and L = (1/W) sum_q L_q. The backward of ``torch.distributed.nn.all_gather``
        *sums* over ranks the gradients sent to each chunk, so f_r receives
        sum_q dL_q/df_r = W * dL/df_r in both cases, and rank r's parameter gradient is
        W * (dL/dtheta through f_r). DDP *averages* over ranks:
        (1/W) * sum_r W * (dL/dtheta through f_r) = dL/dtheta. ``logit_scale`` (and a bias)
        is applied after the gather, so each rank holds dL_q/ds and the DDP average is again
        (1/W) * sum_q dL_q/ds = dL/ds. Without gradients through the gather only rank r's own
        loss reaches f_r: the towers' gradient comes out W times too small (full loss) or
        misses the terms where f_r are the negatives of other ranks (local_loss). Gradient
        accumulation, by contrast, changes the objective (negatives only within a micro-batch),
        so keep ``grad_accum: 1`` for contrastive runs.
        """
        image = self.model.encode_image(batch["image"], normalize=True)
        text = self.model.encode_text(batch["text"], normalize=True)
        scale = self.model.logit_scale.exp()
        bias = getattr(self.model, "logit_bias", None)
        loss = self._loss_fn()(image, text, scale, logit_bias=bias)
        return {"loss": loss, "logit_scale": scale.detach().reshape(())}

    @torch.no_grad()
    def after_train_step(self) -> None:
        """Clamp the learnable temperature to [0, ln 100] as open_clip does."""
        self.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)

    def _is_no_decay(self, name: str, param: Tensor) -> bool:
        if param.ndim < 2 or "logit_scale" in name or "logit_bias" in name or "bias" in name:
            return True
        if any(part.startswith(("ln", "bn", "norm")) for part in name.split(".")):
            return True
        return not self.decay_embeddings and "embedding" in name

    def param_groups(self, base_lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """Groups by (decayed?, lr multiplier); see ``decay_embeddings`` and ``lr_mults``."""
        groups: dict[tuple[bool, float], list[Tensor]] = {}
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            mult = 1.0
            for prefix, value in self.lr_mults.items():
                if name.startswith(prefix):
                    mult = float(value)
            decay = not self._is_no_decay(name, param)
            groups.setdefault((decay, mult), []).append(param)
        return [
            {"params": params, "weight_decay": weight_decay if decay else 0.0, "lr_mult": mult}
            for (decay, mult), params in groups.items()
        ]

    # ---------------------------------------------------------------- evaluation / export
    def evaluate(self, loader: Iterable[Any], distributed: bool = False) -> dict[str, float]:
        """Image->text and text->image retrieval top-1 / top-5 (fractions) over the whole val set.

        Each rank encodes its shard; features are gathered so every rank scores all N pairs.
        Pair i (image i, caption i) is the only correct match of row / column i.
        """
        device = self.model.logit_scale.device
        image_feats, text_feats = [], []
        for batch in loader:
            batch = move_to_device(batch, device)
            image_feats.append(self.model.encode_image(batch["image"], normalize=True).float())
            text_feats.append(self.model.encode_text(batch["text"], normalize=True).float())
        empty = torch.zeros((0, self.embed_dim), device=device)
        image = torch.cat(image_feats) if image_feats else empty
        text = torch.cat(text_feats) if text_feats else empty
        if distributed:
            image, text = edist.all_gather_variable(image), edist.all_gather_variable(text)
        if image.shape[0] == 0:
            return {}
        sims = image @ text.T  # (N images, N captions)
        correct = sims.diagonal()
        # rank of the true match = number of candidates scored strictly higher
        i2t_rank = (sims > correct[:, None]).sum(dim=1)
        t2i_rank = (sims > correct[None, :]).sum(dim=0)
        metrics = {}
        for k in (1, 5):
            metrics[f"i2t_top{k}"] = (i2t_rank < k).float().mean().item()
            metrics[f"t2i_top{k}"] = (t2i_rank < k).float().mean().item()
        return metrics

    def export(self, path: str | os.PathLike) -> None:
        """Write the bare open_clip state_dict (open_clip key names) as safetensors, atomically."""
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        save_state_dict(state, path, metadata={"format": "pt", "model_name": self.model_name})
