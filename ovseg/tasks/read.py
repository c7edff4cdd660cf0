"""Training READ (a LLaVA-style model whose ``[SEG]`` tokens prompt SAM) with ``ovseg.engine``.

Two stages, as LLaVA and LISA / READ train:

``stage: caption`` (LLaVA's feature-alignment pre-training)
    Samples are captioned images (:class:`~ovseg.data.synthetic.SyntheticSceneDataset`).
    LLaVA's ``plain`` template: the image (``<im_start><image><im_end>``) followed by the caption
    and ``"\\n"``; only the caption and its newline are labelled. LLaVA trains the projector
    alone on a pretrained LM; the embedded LM is trained from scratch, so ``trainable`` is
    ``[mm_projector, language_model]`` by default here (``[mm_projector]`` is LLaVA's setting).
``stage: reasoning`` (LISA / READ's fine-tuning)
    Samples carry ``queries`` (:class:`~ovseg.data.synthetic_reasoning.SyntheticReasoningDataset`,
    :class:`~ovseg.data.reasonseg.ReasonSegDataset`). Each query is one LLaVA v1 conversation
    (``<image>\\n{question}`` -> ``{answer}``, e.g. "Sure, it is [SEG]."); the conversations of
    one image share its CLIP and SAM inputs (LISA's ``offset``). Loss: LISA's ``1.0 * CE +
    2.0 * BCE + 0.5 * DICE`` (:meth:`ReadModel.forward`), plus, only when
    ``similarity_loss_weight`` > 0 (an ovseg option), a loss that puts SasP's similarity map
    on the ground-truth mask. LoRA (peft) on the LM's ``q_proj`` /
    ``v_proj`` (r 8, alpha 16, dropout 0.05); trainable besides: ``text_hidden_fcs``, SAM's
    ``mask_decoder``, ``lm_head`` and ``embed_tokens`` (LISA's list) and ``mm_projector``
    (LISA keeps it frozen; drop it from ``trainable`` for that).

Always frozen: the vision tower and SAM's image and prompt encoders (LISA trains only SAM's mask
decoder). Because SAM's image encoder is frozen and deterministic, its embeddings are cached per
image content (``sam_cache_size`` entries, in this process's memory; the cache never changes a
result, so exact resume holds). Ground-truth masks of ReasonSeg's ignore regions count as
background in training, as in LISA.

The model (``model:``): a LLaMA decoder of the given size over ``tokenizer`` (a packaged name,
``shapes-bpe``, or a folder), a vision tower (``open_clip:ovseg-ViT-Ti-8@shapes``: the embedded
CLIP, or an HF CLIP folder), ``mm_projector`` (``mlp2x_gelu``) and a SAM (``ovseg-sam-tiny``,
weights ``sam_weights``: an embedded tag such as ``shapes`` or a file). ``init_checkpoint``
loads a previous stage's export or a READ folder (strictly, before LoRA; a folder's vision tower
is replaced by ``vision_tower``'s, which is frozen). ``export`` writes the whole model with
LoRA merged into the base weights (safetensors), loadable into the same architecture.

Evaluation (``data.val``): teacher-forced masks of the ground-truth conversations, as LISA and
READ validate: gIoU / cIoU (:class:`~ovseg.evaluation.reasoning.ReasoningMetric`) and the mean
CE loss; the caption stage reports its CE loss.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ovseg.engine import dist as edist
from ovseg.engine.data import move_to_device
from ovseg.errors import CheckpointError, ConfigError, DatasetError, WeightsNotFoundError
from ovseg.evaluation.reasoning import ReasoningMetric
from ovseg.models.prompts.selector_config import selector_config
from ovseg.registry import POINT_SELECTORS, TASKS

STAGES = ("caption", "reasoning")
READ_FOLDER = "read_model"  # the READ folder export() writes beside the weights
LISA_TRAINABLE = ("text_hidden_fcs", "mask_decoder", "lm_head", "embed_tokens", "mm_projector")
CAPTION_TRAINABLE = ("mm_projector", "language_model")
DEFAULT_LM: dict[str, Any] = {
    "hidden_size": 256,
    "intermediate_size": 688,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
}
# parameter-name fragments for ``trainable``; matched against ReadModel's parameter names
TRAINABLE_PATTERNS: dict[str, str] = {
    "text_hidden_fcs": "text_hidden_fcs.",
    "mask_decoder": "visual_model.mask_decoder.",
    "lm_head": "language_model.lm_head.",
    "embed_tokens": "language_model.model.embed_tokens.",
    "mm_projector": "mllm.mm_projector.",
    "language_model": "mllm.language_model.",
}


def _resolve_tokenizer(spec: str | os.PathLike) -> Any:
    from ovseg.data.world_tokenizer import load_world_tokenizer
    from ovseg.model_zoo.embedded import PACKAGED_TOKENIZERS, packaged_tokenizer

    folder = packaged_tokenizer(str(spec)) if str(spec) in PACKAGED_TOKENIZERS else Path(spec)
    return load_world_tokenizer(folder)


def _sam_state(spec: str | os.PathLike, model_type: str) -> dict[str, Tensor]:
    from ovseg.model_zoo.embedded import EMBEDDED_WEIGHTS, embedded_checkpoint
    from ovseg.weights import load_state_dict

    if (model_type, str(spec)) in EMBEDDED_WEIGHTS:
        return load_state_dict(embedded_checkpoint(model_type, str(spec)))
    return load_state_dict(spec)


def _init_state(model: nn.Module, spec: str | os.PathLike) -> dict[str, Tensor]:
    """The state ``init_checkpoint`` names, under ReadModel keys: a stage's export (a
    safetensors file, loaded as it is) or a READ folder (e.g. a packaged model such as
    ``ovseg/model_zoo/weights/read-shapes-tiny``), whose vision tower is replaced by the tower
    ``model`` was built with (the tower is frozen; a packaged folder holds an fp16 copy)."""
    from ovseg.weights import load_state_dict

    path = Path(spec)
    if not path.is_dir():
        return load_state_dict(path)
    from ovseg.models.multimodal.checkpoint import load_folder_state, map_read_keys

    state, unknown = map_read_keys(load_folder_state(path), model)
    if unknown:
        raise CheckpointError(
            f"task.init_checkpoint {path}: {len(unknown)} keys belong to no part of READ: "
            f"{sorted(unknown)[:8]}."
        )
    expected = model.state_dict()
    tower = "mllm.vision_tower."
    state = {k: v for k, v in state.items() if not k.startswith(tower)}
    state.update({k: v for k, v in expected.items() if k.startswith(tower)})
    return {k: v.to(expected[k].dtype) if k in expected else v for k, v in state.items()}


def image_key(image: np.ndarray) -> str:
    """A content key of an ``(H, W, 3)`` uint8 image (for the SAM embedding cache)."""
    digest = hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16)
    digest.update(str(image.shape).encode())
    return digest.hexdigest()


class ReadSamplePrep:
    """Dataset item -> model inputs; runs in loader workers, so it holds plain numbers and the
    tokenizer, never the model.

    Output: ``{"clip": (3, S, S) float32, "sam": (3, T, T) float32, "input_size": (h, w),
    "original_size": (H, W), "conversations": [EncodedConversation], "masks": (K, H, W)
    float32 (one per kept [SEG], in order), "key": str}``.
    """

    def __init__(
        self,
        tokenizer: Any,
        stage: str,
        *,
        clip_size: int,
        clip_mean: Sequence[float],
        clip_std: Sequence[float],
        sam_size: int,
        sam_mean: Sequence[float],
        sam_std: Sequence[float],
        seg_token_idx: int,
        num_image_tokens: int,
        max_length: int,
    ) -> None:
        self.tokenizer, self.stage = tokenizer, stage
        self.clip = (int(clip_size), tuple(clip_mean), tuple(clip_std))
        self.sam = (int(sam_size), tuple(sam_mean), tuple(sam_std))
        self.seg_token_idx = int(seg_token_idx)
        self.num_image_tokens = int(num_image_tokens)
        self.max_length = int(max_length)

    def sam_pixels(self, image: np.ndarray) -> tuple[Tensor, tuple[int, int]]:
        """segment-anything's ResizeLongestSide + ``Sam.preprocess`` (normalise, zero-pad)."""
        from segment_anything.utils.transforms import ResizeLongestSide

        size, mean, std = self.sam
        resized = ResizeLongestSide(size).apply_image(image)
        pixels = torch.as_tensor(resized).permute(2, 0, 1).float()
        pixels = (pixels - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
        h, w = pixels.shape[1:]
        padded = torch.zeros((3, size, size), dtype=torch.float32)
        padded[:, :h, :w] = pixels
        return padded, (int(h), int(w))

    def _caption(self, caption: str) -> Any:
        from ovseg.models.multimodal.constants import IGNORE_INDEX
        from ovseg.models.multimodal.conversation import (
            EncodedConversation,
            image_question,
            tokenize_with_image,
        )

        image_part = image_question("").rstrip("\n")  # <im_start><image><im_end>
        ids = tokenize_with_image(image_part + caption + "\n", self.tokenizer)
        skip = len(tokenize_with_image(image_part, self.tokenizer))
        labels = [IGNORE_INDEX] * skip + ids[skip:]
        keep = max(1, self.max_length - self.num_image_tokens + 1)
        return EncodedConversation(
            torch.tensor(ids[:keep]), torch.tensor(labels[:keep]), image_part + caption
        )

    def __call__(self, item: Mapping[str, Any]) -> dict[str, Any]:
        from ovseg.models.multimodal.conversation import (
            count_seg_tokens,
            encode_conversation,
            image_question,
        )
        from ovseg.models.multimodal.processing import clip_center_crop

        image = np.asarray(item["image"])
        height, width = image.shape[:2]
        conversations, masks = [], []
        if self.stage == "caption":
            if "caption" not in item:
                raise DatasetError(
                    "stage: caption needs items with a 'caption' (captioned images)."
                )
            conversations.append(self._caption(str(item["caption"])))
        else:
            if "queries" not in item:
                raise DatasetError(
                    "stage: reasoning needs items with 'queries' (SyntheticReasoningDataset or "
                    "ReasonSegDataset)."
                )
            for query in item["queries"]:
                encoded = encode_conversation(
                    [(image_question(query["question"]), query["answer"])],
                    self.tokenizer,
                    max_length=self.max_length,
                    num_image_tokens=self.num_image_tokens,
                )
                kept = count_seg_tokens(encoded.input_ids, self.seg_token_idx)
                query_masks = np.asarray(query["masks"], dtype=bool)
                if kept > len(query_masks):
                    raise DatasetError(
                        f"The answer {query['answer']!r} has {kept} [SEG] but the query has "
                        f"{len(query_masks)} masks."
                    )
                conversations.append(encoded)
                masks.extend(query_masks[:kept])
        clip = clip_center_crop(image, *self.clip)
        sam, input_size = self.sam_pixels(image)
        stacked = np.stack(masks) if masks else np.zeros((0, height, width), dtype=bool)
        return {
            "clip": clip,
            "sam": sam,
            "input_size": input_size,
            "original_size": (int(height), int(width)),
            "conversations": conversations,
            "masks": torch.from_numpy(stacked.astype(np.float32)),
            "key": image_key(image),
        }


@TASKS.register("READ")
class READTask(nn.Module):
    """READ's two training stages (see the module docstring).

    Args:
        stage: ``caption`` or ``reasoning``.
        tokenizer: packaged tokenizer name or folder.
        language_model: LLaMA config fields (``DEFAULT_LM`` fills the rest).
        vision_tower: ``open_clip:<model>@<tag>`` or an HF CLIP folder.
        vision_tiles: crops per side the tower encodes (config ``mm_vision_tiles``; 1, READ's
            single crop, is the default; see :mod:`ovseg.models.multimodal.vision`).
        projector: LLaVA's ``mm_projector_type``.
        sam: SAM architecture name; ``sam_weights``: embedded tag or file (None: random).
        init_checkpoint: a previous stage's export (file) or a READ folder to start from.
        lora: ``{r, alpha, dropout, targets}`` (``r: 0``: no LoRA; the LM base stays frozen
            unless ``language_model`` is in ``trainable``). Used in the reasoning stage.
        trainable: parts to train besides LoRA (names of ``TRAINABLE_PATTERNS``); default per
            stage as in the module docstring.
        ce_loss_weight, bce_loss_weight, dice_loss_weight: LISA's 1.0 / 2.0 / 0.5.
        similarity_loss_weight: an extra loss on the map SasP reads (not in LISA / READ; 0, the
            default, is their loss); see :class:`~ovseg.models.multimodal.read.ReadModel`.
        selector: the SasP selector (config) whose points SAM trains with (None: READ's,
            ``SasPSelector(compat="read")``); a config is written into the exported folder's
            ``config.json`` (``ovseg_sasp_selector``), so the model is loaded with it.
        max_length: longest sequence the LM sees (image tokens counted).
        sam_cache_size: SAM image embeddings kept (0: none).
    """

    def __init__(
        self,
        stage: str = "reasoning",
        *,
        tokenizer: str = "shapes-bpe",
        language_model: Mapping[str, Any] | None = None,
        vision_tower: str = "open_clip:ovseg-ViT-Ti-8@shapes",
        vision_tiles: int = 1,
        projector: str = "mlp2x_gelu",
        sam: str = "ovseg-sam-tiny",
        sam_weights: str | None = "shapes",
        init_checkpoint: str | os.PathLike | None = None,
        lora: Mapping[str, Any] | None = None,
        trainable: Sequence[str] | None = None,
        ce_loss_weight: float = 1.0,
        bce_loss_weight: float = 2.0,
        dice_loss_weight: float = 0.5,
        similarity_loss_weight: float = 0.0,
        selector: Any = None,
        max_length: int = 256,
        sam_cache_size: int = 8192,
        attn_implementation: str = "sdpa",
    ) -> None:
        super().__init__()
        from ovseg.models.decoders.sam_build import resolve_sam_architecture
        from ovseg.models.multimodal.checkpoint import build_read_model
        from ovseg.models.multimodal.constants import SEG_TOKEN

        if stage not in STAGES:
            raise ConfigError(f"task.stage must be one of {STAGES}, got {stage!r}.")
        self.stage = stage
        if init_checkpoint is not None and not Path(init_checkpoint).exists():
            raise WeightsNotFoundError(
                f"task.init_checkpoint {init_checkpoint} does not exist. It is the previous "
                "stage's export (or a READ folder): run that stage first (ovseg train "
                "configs/read/shapes_tiny_read_caption.yaml), or set "
                "task.init_checkpoint=null to start from random weights."
            )
        self.tokenizer = _resolve_tokenizer(tokenizer)
        seg_token_idx = self.tokenizer.convert_tokens_to_ids(SEG_TOKEN)
        if seg_token_idx is None or seg_token_idx == self.tokenizer.unk_token_id:
            raise ConfigError(f"The tokenizer {tokenizer} has no {SEG_TOKEN} token.")
        sam_name, sam_arch = resolve_sam_architecture(sam)
        lm = {**DEFAULT_LM, **dict(language_model or {})}
        config = {
            **lm,
            "vocab_size": len(self.tokenizer),
            "bos_token_id": self.tokenizer.bos_token_id,
            "eos_token_id": self.tokenizer.eos_token_id,
            "pad_token_id": self.tokenizer.pad_token_id,
            "mm_projector_type": projector,
            "mm_vision_select_layer": -2,
            "mm_vision_select_feature": "patch",
            "mm_use_im_start_end": True,
            "out_dim": sam_arch.prompt_embed_dim,
        }
        if int(vision_tiles) != 1:
            config["mm_vision_tiles"] = int(vision_tiles)
        self.model = build_read_model(
            config,
            seg_token_idx,
            vision_tower=vision_tower,
            sam_architecture=sam_arch,
            eos_token_id=self.tokenizer.eos_token_id,
            attn_implementation=attn_implementation,
            ce_loss_weight=ce_loss_weight,
            bce_loss_weight=bce_loss_weight,
            dice_loss_weight=dice_loss_weight,
            similarity_loss_weight=similarity_loss_weight,
            selector=(
                None if selector is None else POINT_SELECTORS.build_or_pass(selector, "selector")
            ),
        )
        self.config = config
        # the selector as a config, for the exported folder (None: READ's default selector)
        self.selector_config = None if selector is None else selector_config(self.model.selector)
        if selector is not None and self.selector_config is None:
            raise ConfigError(
                f"task.selector {type(self.model.selector).__name__} cannot be written into the "
                "exported READ folder; use a registered point selector (e.g. SasPSelector)."
            )
        self.vision_tower_spec = str(vision_tower)
        self.sam_arch = sam_arch
        if not str(vision_tower).startswith("open_clip:"):  # an HF CLIP folder: its weights
            from ovseg.models.multimodal.checkpoint import _tower_state

            state = _tower_state(self.model, vision_tower, config)
            self.model.load_state_dict(state, strict=False)
        if sam_weights is not None:
            self.model.visual_model.load_state_dict(_sam_state(sam_weights, sam_name))
        if init_checkpoint is not None:
            self.model.load_state_dict(_init_state(self.model, init_checkpoint))
        self.lora_names: list[str] = []
        self._set_trainable(stage, lora, trainable)
        self.max_length = int(max_length)
        self.sam_cache_size = int(sam_cache_size)
        self._sam_cache: OrderedDict[str, Tensor] = OrderedDict()

    # ---------------------------------------------------------------- parameters
    def _set_trainable(
        self, stage: str, lora: Mapping[str, Any] | None, trainable: Sequence[str] | None
    ) -> None:
        from ovseg.models.multimodal.lora import add_lora

        parts = list(trainable if trainable is not None else (
            CAPTION_TRAINABLE if stage == "caption" else LISA_TRAINABLE
        ))  # fmt: skip
        unknown = sorted(set(parts) - set(TRAINABLE_PATTERNS))
        if unknown:
            raise ConfigError(
                f"task.trainable: unknown parts {unknown}; use {sorted(TRAINABLE_PATTERNS)}."
            )
        self.model.requires_grad_(False)
        settings = {"r": 8, "alpha": 16, "dropout": 0.05, "targets": ["q_proj", "v_proj"]}
        settings.update(dict(lora or {}))
        if stage == "reasoning" and int(settings["r"]) > 0:
            self.lora_names = add_lora(
                self.model,
                r=int(settings["r"]),
                alpha=int(settings["alpha"]),
                dropout=float(settings["dropout"]),
                target_modules=list(settings["targets"]),
            )
        patterns = tuple(TRAINABLE_PATTERNS[p] for p in parts)
        for name, param in self.model.named_parameters():
            if "lora_" in name or any(p in name for p in patterns):
                param.requires_grad_(True)
        for frozen in (self.model.mllm.vision_tower, self.model.visual_model.image_encoder,
                       self.model.visual_model.prompt_encoder):  # fmt: skip
            frozen.requires_grad_(False)
        self.model.mllm.vision_tower.eval()

    def train(self, mode: bool = True) -> READTask:
        super().train(mode)
        self.model.mllm.vision_tower.eval()  # frozen towers keep inference behaviour
        self.model.visual_model.image_encoder.eval()
        return self

    def trainable_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def param_groups(self, base_lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """One group of the trainable parameters (LISA: AdamW, no weight decay)."""
        return [
            {
                "params": [p for p in self.parameters() if p.requires_grad],
                "weight_decay": weight_decay,
            }
        ]

    # ---------------------------------------------------------------- data
    def data_transform(self, split: str) -> ReadSamplePrep:
        tower = self.model.mllm.vision_tower
        sam = self.model.visual_model
        return ReadSamplePrep(
            self.tokenizer,
            self.stage,
            clip_size=int(tower.image_size),
            clip_mean=tower.mean,
            clip_std=tower.std,
            sam_size=int(sam.image_encoder.img_size),
            sam_mean=sam.pixel_mean.flatten().tolist(),
            sam_std=sam.pixel_std.flatten().tolist(),
            seg_token_idx=self.model.seg_token_idx,
            num_image_tokens=self.model.mllm.num_image_tokens,
            max_length=self.max_length,
        )

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Prepared samples -> one batch: ``images_clip (B, 3, S, S)``, ``images (B, 3, T, T)``,
        ``input_ids / attention_masks / labels (R, L)``, ``offset (B + 1,)``, ``masks_list``,
        ``sam_mask_shape_list``, ``keys``."""
        from ovseg.models.multimodal.conversation import collate_conversations

        conversations, offset = [], [0]
        for sample in samples:
            conversations.extend(sample["conversations"])
            offset.append(len(conversations))
        ids, attention, labels = collate_conversations(conversations, self.tokenizer.pad_token_id)
        return {
            "images_clip": torch.stack([s["clip"] for s in samples]),
            "images": torch.stack([s["sam"] for s in samples]),
            "input_ids": ids,
            "attention_masks": attention,
            "labels": labels,
            "offset": torch.tensor(offset, dtype=torch.int64),
            "masks_list": [s["masks"] for s in samples],
            "sam_mask_shape_list": [(s["input_size"], s["original_size"]) for s in samples],
            "keys": [s["key"] for s in samples],
        }

    # ---------------------------------------------------------------- model
    def sam_embeddings(self, batch: Mapping[str, Any]) -> Tensor:
        """``(B, C, e, e)`` SAM image embeddings, from the cache where possible. A batch without
        any ``[SEG]`` gets zeros (nothing reads them)."""
        sam = self.model.visual_model
        if not any(len(m) for m in batch["masks_list"]):
            e = sam.prompt_encoder.image_embedding_size
            shape = (len(batch["keys"]), sam.prompt_encoder.embed_dim, *e)
            return torch.zeros(shape, device=batch["images"].device)
        missing = [i for i, k in enumerate(batch["keys"]) if k not in self._sam_cache]
        if missing:
            fresh = self.model.sam_image_embeddings(batch["images"][missing])
            for i, emb in zip(missing, fresh):
                self._sam_cache[batch["keys"][i]] = emb.detach()
        out = torch.stack([self._sam_cache[k] for k in batch["keys"]])
        for key in batch["keys"]:
            self._sam_cache.move_to_end(key)
        while len(self._sam_cache) > self.sam_cache_size:
            self._sam_cache.popitem(last=False)
        return out

    def run_model(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        return self.model(
            images_clip=batch["images_clip"],
            input_ids=batch["input_ids"],
            labels=batch["labels"],
            attention_masks=batch["attention_masks"],
            offset=batch["offset"],
            masks_list=batch["masks_list"],
            sam_mask_shape_list=batch["sam_mask_shape_list"],
            image_embeddings=self.sam_embeddings(batch),
        )

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        out = self.run_model(batch)
        keys = ("loss", "ce_loss", "mask_bce_loss", "mask_dice_loss")
        if self.model.similarity_loss_weight > 0:
            keys += ("similarity_loss",)
        return {k: out[k] if k == "loss" else out[k].detach() for k in keys}

    # ---------------------------------------------------------------- evaluation / export
    def evaluate(self, loader: Iterable[Any], distributed: bool = False) -> dict[str, float]:
        """Teacher-forced gIoU / cIoU (percent) and mean CE loss over the val batches."""
        device = self.model.device
        metric = ReasoningMetric()
        ce_sum, batches = 0.0, 0
        for batch in loader:
            batch = move_to_device(batch, device)
            out = self.run_model(batch)
            ce_sum += float(out["ce_loss"])
            batches += 1
            for logits, gt in zip(out["pred_masks"], batch["masks_list"]):
                for pred_mask, gt_mask in zip((logits > 0).cpu(), gt.bool().cpu()):
                    metric.process(pred_mask.numpy(), gt_mask.numpy())
        states = edist.all_gather_object((metric.state(), ce_sum, batches)) if distributed else [
            (metric.state(), ce_sum, batches)
        ]  # fmt: skip
        merged = ReasoningMetric()
        for state, _, _ in states:
            merged.merge(state)
        total_batches = sum(b for _, _, b in states)
        results = {"ce_loss": sum(c for _, c, _ in states) / max(total_batches, 1)}
        if self.stage == "reasoning":
            computed = merged.compute()
            results.update(gIoU=computed["gIoU"], cIoU=computed["cIoU"])
        return results

    def merged_model(self) -> nn.Module:
        """A float32 copy of the model with LoRA merged into the base weights and the adapter
        wrappers replaced by their base layers (a plain ReadModel)."""
        from ovseg.models.multimodal.lora import merge_lora

        model = copy.deepcopy(self.model).float()
        merge_lora(model)
        return model

    def merged_state_dict(self) -> dict[str, Tensor]:
        """The state of :meth:`merged_model` (plain ReadModel keys)."""
        state = self.merged_model().state_dict()
        return {k: v.detach().cpu().contiguous() for k, v in state.items()}

    def read_config(self) -> dict[str, Any]:
        """READ's ``config.json`` for the model (LLaMA fields, ``mm_*``, ``out_dim``, the SAM
        architecture and the task's selector config, if any), as
        :func:`~ovseg.models.multimodal.checkpoint.load_read_model` reads it."""
        from dataclasses import asdict

        sam = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.sam_arch).items()}
        return {
            "architectures": ["READForCausalLM"],
            "model_type": "llava",
            **self.config,
            "mm_vision_tower": self.vision_tower_spec,
            "mm_hidden_size": int(self.model.mllm.vision_tower.hidden_size),
            "ovseg_sam_architecture": sam,
            **({"ovseg_sasp_selector": self.selector_config} if self.selector_config else {}),
            "torch_dtype": "float32",
        }

    def export_read_folder(self, folder: str | os.PathLike) -> Path:
        """Write a READ folder (``config.json``, the tokenizer, ``model.safetensors`` in READ's
        key layout) that :class:`~ovseg.pipelines.reasoning.ReasoningSegmenter` loads with
        ``weights: <folder>``. Written under a temporary name, then renamed into place
        (replacing an earlier export of this run)."""
        import shutil
        import tempfile

        from ovseg.models.multimodal.checkpoint import save_read_folder

        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            save_read_folder(
                staging,
                self.merged_model(),
                self.tokenizer,
                self.read_config(),
                include_vision_tower=True,
            )
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(staging, folder)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
        return folder

    def export(self, path: str | os.PathLike) -> None:
        """Write :meth:`merged_state_dict` as safetensors (metadata: stage and LM config) and,
        beside it, the READ folder ``read_model/`` (:meth:`export_read_folder`)."""
        import json

        from ovseg.weights import save_state_dict

        config = {k: v for k, v in self.config.items() if not isinstance(v, (list, dict))}
        save_state_dict(
            self.merged_state_dict(),
            path,
            metadata={"format": "pt", "stage": self.stage, "config": json.dumps(config)},
        )
        self.export_read_folder(Path(path).parent / READ_FOLDER)
