"""READ: a LLaVA model whose ``[SEG]`` tokens prompt SAM, with "similarity as points" (SasP).

Qian et al., "Reasoning to Attend: Try to Understand How <SEG> Token Works" (CVPR 2025), built on
LISA (Lai et al., CVPR 2024). Reference code: rui-qian/READ ``model/READ.py``; names, shapes and
defaults follow it.

Stable interface (used by training and by :class:`ovseg.pipelines.reasoning.ReasoningSegmenter`)
---------------------------------------------------------------------------------------------
``model = ReadModel(mllm, visual_model, seg_token_idx, out_dim=256, ...)``; or from a released
folder with :func:`ovseg.models.multimodal.checkpoint.load_read_model`.

``model.prepare_image(image) -> ReadImage``
    HWC uint8 RGB of any size -> the vision tower's centre crop and SAM's input
    (:mod:`.processing`).

``model.forward(images_clip, input_ids, labels, attention_masks, offset, masks_list,
sam_mask_shape_list, images=None, image_embeddings=None) -> dict``
    LISA / READ's ``model_forward`` for training. ``images_clip`` ``(B, 3, S, S)``: one tower
    input per source image; ``input_ids``/``labels``/``attention_masks`` ``(R, L)``: ``R >= B``
    conversations (:mod:`.conversation`), those of image ``i`` in rows
    ``offset[i]:offset[i + 1]`` (``offset`` ``(B + 1,)`` int, ``offset[0] = 0``);
    ``masks_list[i]`` ``(K_i, H_i, W_i)`` ground-truth masks of image ``i`` in {0, 1}, one per
    ``[SEG]`` of its rows in reading order; ``sam_mask_shape_list[i] = (input_size,
    original_size)`` (SAM's resized ``(h, w)`` and ``(H_i, W_i)``). SAM's image embeddings come
    from ``images`` ``(B, 3, T, T)`` (SAM's input, encoded without gradients as READ does) or
    are given directly as ``image_embeddings`` ``(B, C, T/16, T/16)`` (so training can cache a
    frozen encoder). Returns ``loss = ce_loss + mask_loss + similarity_loss``, ``ce_loss`` (weighted LM
    cross-entropy over the labels), ``mask_bce_loss``, ``mask_dice_loss`` (weighted, averaged
    over all masks of the batch), ``mask_loss`` = their sum, ``similarity_loss`` (0 unless
    ``similarity_loss_weight``, an ovseg option), and ``pred_masks`` (list of
    ``(K_i, H_i, W_i)`` logits), ``points`` (list of lists of
    :class:`~ovseg.structures.PointPrompts`).

``model.generate(image, prompt_ids, max_new_tokens=512, *, use_cache=True, tokenizer=None,
image_embedding=None) -> ReadGeneration``
    Greedy decoding (LISA / READ's ``evaluate``: ``num_beams=1``, no sampling) until EOS or
    ``max_new_tokens``; ``image`` a :class:`ReadImage` or an HWC uint8 RGB array; ``prompt_ids``
    ``(L,)`` from :func:`~ovseg.models.multimodal.conversation.encode_prompt`. Returns the new
    token ids (EOS dropped), their text when ``tokenizer`` is given, and one
    :class:`SegPrediction` per generated ``[SEG]`` (mask, SAM's predicted IoU, the SasP points,
    the similarity grid). No ``[SEG]``: text only, no mask.

Around the model (same package): :mod:`.conversation` -- ``image_question(question, *,
use_im_start_end=True)``, ``build_prompt(turns, *, system)``, ``encode_conversation(turns,
tokenizer, *, max_length=None, num_image_tokens=0) -> EncodedConversation(input_ids, labels,
prompt, truncated)``, ``encode_prompt(question, tokenizer, *, use_im_start_end=True,
max_length=None, num_image_tokens=0) -> (L,)``, ``collate_conversations(items, pad_token_id) ->
(input_ids, attention_masks, labels)``, ``count_seg_tokens(input_ids, seg_token_idx)``;
:mod:`.checkpoint` -- ``build_read_model(config, seg_token_idx, *, vision_tower,
sam_architecture, sam_checkpoint, eos_token_id, dtype, **model_kwargs)`` (a new model, e.g. with
``vision_tower="open_clip:ovseg-ViT-Ti-8@shapes"``), ``load_read_model(folder, ...) -> (model,
tokenizer)``, ``save_read_folder(folder, model, tokenizer, config)``; :mod:`.lora` --
``add_lora(model, r=8, alpha=16, dropout=0.05, target_modules=("q_proj", "v_proj"))``,
``merge_lora(model)``.

How a ``[SEG]`` becomes a mask (READ's ``model_forward`` / ``evaluate``)
-------------------------------------------------------------------
1. Its embedding is the decoder's final hidden state (after the last norm) at the position
   *before* ``[SEG]`` -- the state that predicts ``[SEG]`` (LISA's ``seg_token_mask`` shift).
2. ``text_hidden_fcs[0]``: ``Linear(D, D) -> ReLU -> Linear(D, out_dim) -> Dropout(0)`` gives
   SAM's text prompt ``(out_dim,)`` (``out_dim`` = SAM's prompt dimension, 256).
3. SasP: the dot product of that hidden state with the final hidden states of the image tokens
   (READ's ``compute_similarity_map`` with one query: its softmax weight is exactly 1) gives a
   ``(h, w)`` grid, turned into point prompts by ovseg's
   :class:`~ovseg.models.prompts.sasp.SasPSelector` (default ``compat="read"``, READ-7B's
   thresholds) on the image's centred square (LLaVA's centre crop).
4. SAM's prompt encoder embeds the points (with segment-anything's padding point, as READ's
   prompt encoder does when no box is given), the text prompt is appended as one more sparse
   token, the dense prompt is ``no_mask_embed``; the mask decoder runs single-mask
   (``multimask_output=False``) and ``postprocess_masks`` brings the logits to the input image.

Departures from READ's code (documented options, not silent changes): each ``[SEG]`` is compared
with the image tokens of *its own* conversation (READ pairs the k-th ``[SEG]`` of a batch with
the k-th conversation holding exactly one ``[SEG]``, which only agrees for one ``[SEG]`` per
conversation); SasP points are constants for the gradient (READ's refinement step keeps a
graph through the coordinates into SAM's positional encoding); ``[SEG]``s are decoded one at a
time (SAM's decoder treats prompts independently, so the masks are the same).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ovseg.errors import ConfigError, PromptError
from ovseg.models.multimodal.constants import (
    DEFAULT_BCE_LOSS_WEIGHT,
    DEFAULT_CE_LOSS_WEIGHT,
    DEFAULT_DICE_LOSS_WEIGHT,
    IGNORE_INDEX,
)
from ovseg.models.multimodal.llava import (
    MultimodalLM,
    SplicedInputs,
    expanded_position,
    splice_image_tokens,
)
from ovseg.models.multimodal.losses import (
    dice_loss,
    grid_occupancy,
    sigmoid_bce_loss,
    similarity_ce_loss,
)
from ovseg.models.multimodal.processing import ReadImage, clip_center_crop, sam_input
from ovseg.models.prompts.sasp import SasPSelector
from ovseg.models.prompts.similarity import GridPlacement
from ovseg.structures import PointPrompts

__all__ = ["ReadGeneration", "ReadModel", "SegPrediction", "build_text_hidden_fcs"]


def build_text_hidden_fcs(hidden_size: int, out_dim: int) -> nn.ModuleList:
    """LISA's projection of the ``[SEG]`` hidden state (keys ``0.0.*`` and ``0.2.*``)."""
    fc = nn.Sequential(
        nn.Linear(hidden_size, hidden_size),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_size, out_dim),
        nn.Dropout(0.0),
    )
    return nn.ModuleList([fc])


@dataclass
class SegPrediction:
    """The mask of one generated ``[SEG]``.

    Attributes:
        mask: ``(H, W)`` bool in input-image pixels (logits > 0).
        score: SAM's predicted IoU of the mask.
        points: the SasP point prompts (input-image pixels, centres at ``i + 0.5``).
        similarity: ``(h, w)`` float32 raw ``[SEG]``-to-image-token dot products.
        token_index: index of the ``[SEG]`` among the generated tokens.
    """

    mask: np.ndarray
    score: float
    points: PointPrompts
    similarity: np.ndarray
    token_index: int


@dataclass
class ReadGeneration:
    """What :meth:`ReadModel.generate` returns.

    Attributes:
        output_ids: generated token ids, EOS excluded.
        text: their decoded text (None without a tokenizer).
        segments: one :class:`SegPrediction` per ``[SEG]``, in order.
        stopped_at_eos: whether generation ended with EOS (else ``max_new_tokens`` ran out).
    """

    output_ids: list[int]
    text: str | None = None
    segments: list[SegPrediction] = field(default_factory=list)
    stopped_at_eos: bool = False


class ReadModel(nn.Module):
    """READ (see the module docstring for the interface and every step).

    Args:
        mllm: the LLaVA-style language model (:class:`~ovseg.models.multimodal.llava.MultimodalLM`).
        visual_model: a segment-anything ``Sam`` (READ's ``visual_model``).
        seg_token_idx: id of ``[SEG]`` in the tokenizer.
        out_dim: output of ``text_hidden_fcs`` (SAM's prompt dimension).
        selector: SasP point selector (default ``SasPSelector(compat="read")``, READ-7B).
        grid_region: where the image tokens lie on the image (``"center_crop"``: LLaVA's).
        eos_token_id: generation stops at it (None: only ``max_new_tokens``).
        ce_loss_weight, dice_loss_weight, bce_loss_weight: LISA's 1.0 / 0.5 / 2.0.
        use_im_start_end: prompts wrap ``<image>`` in ``<im_start>``/``<im_end>`` (LLaVA's
            ``mm_use_im_start_end``; READ: True).
        similarity_loss_weight: weight of an extra training loss on the similarity map SasP
            reads (:func:`~ovseg.models.multimodal.losses.similarity_ce_loss` of the dot
            products over ``sqrt(hidden size)`` against the ground-truth mask's cell occupancy,
            averaged over masks). Not in READ, whose map
            gets no direct supervision: 0 (default) is READ's loss exactly.
    """

    def __init__(
        self,
        mllm: MultimodalLM,
        visual_model: nn.Module,
        seg_token_idx: int,
        *,
        out_dim: int = 256,
        selector: Any = None,
        grid_region: str = "center_crop",
        eos_token_id: int | None = None,
        ce_loss_weight: float = DEFAULT_CE_LOSS_WEIGHT,
        dice_loss_weight: float = DEFAULT_DICE_LOSS_WEIGHT,
        bce_loss_weight: float = DEFAULT_BCE_LOSS_WEIGHT,
        use_im_start_end: bool = True,
        similarity_loss_weight: float = 0.0,
    ) -> None:
        super().__init__()
        prompt_dim = int(visual_model.prompt_encoder.embed_dim)
        if int(out_dim) != prompt_dim:
            raise ConfigError(
                f"out_dim {out_dim} must equal SAM's prompt dimension {prompt_dim}: the [SEG] "
                "embedding is one of SAM's sparse prompts."
            )
        self.mllm = mllm
        self.visual_model = visual_model
        self.text_hidden_fcs = build_text_hidden_fcs(mllm.hidden_size, int(out_dim))
        self.seg_token_idx = int(seg_token_idx)
        self.out_dim = int(out_dim)
        self.selector = selector if selector is not None else SasPSelector(compat="read")
        self.grid_region = grid_region
        self.eos_token_id = None if eos_token_id is None else int(eos_token_id)
        self.ce_loss_weight = float(ce_loss_weight)
        self.dice_loss_weight = float(dice_loss_weight)
        self.bce_loss_weight = float(bce_loss_weight)
        self.use_im_start_end = bool(use_im_start_end)
        self.similarity_loss_weight = float(similarity_loss_weight)

    def _apply(self, fn: Any, recurse: bool = True) -> ReadModel:
        """``.to()`` / ``.half()`` ... with three SAM buffers kept exactly in float32: the pixel
        mean / std (SAM's input normalisation) and the point-encoding frequencies, which
        segment-anything multiplies with float32 coordinates (``forward_with_coords`` casts
        them), so a bf16 model still encodes points as READ's SAM does."""
        sam = self.visual_model
        pe = sam.prompt_encoder.pe_layer
        kept = {
            "mean": sam.pixel_mean.detach().float().clone(),
            "std": sam.pixel_std.detach().float().clone(),
            "pe": pe.positional_encoding_gaussian_matrix.detach().float().clone(),
        }
        super()._apply(fn, recurse)
        device = pe.positional_encoding_gaussian_matrix.device
        sam.pixel_mean = kept["mean"].to(device)
        sam.pixel_std = kept["std"].to(device)
        pe.positional_encoding_gaussian_matrix = kept["pe"].to(device)
        return self

    # ------------------------------------------------------------------ inputs
    @property
    def device(self) -> torch.device:
        return self.text_hidden_fcs[0][0].weight.device

    def prepare_image(self, image: np.ndarray) -> ReadImage:
        """HWC uint8 RGB -> :class:`ReadImage` (tower crop + SAM input, see :mod:`.processing`)."""
        tower = self.mllm.vision_tower
        clip = clip_center_crop(image, tower.image_size, tower.mean, tower.std)
        sam_pixels, input_size = sam_input(image, self.visual_model)
        return ReadImage(clip, sam_pixels, input_size, (int(image.shape[0]), int(image.shape[1])))

    @torch.no_grad()
    def sam_image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """SAM's image encoder, no gradients: ``(B, 3, T, T)`` -> ``(B, C, T/16, T/16)``."""
        encoder = self.visual_model.image_encoder
        param = next(encoder.parameters())
        return torch.cat(
            [encoder(img[None].to(device=param.device, dtype=param.dtype)) for img in images]
        )

    # ------------------------------------------------------------------ [SEG] -> mask
    def points_for(
        self, seg_hidden: torch.Tensor, image_hidden: torch.Tensor, original_size: tuple[int, int]
    ) -> tuple[PointPrompts, torch.Tensor]:
        """SasP points of one ``[SEG]``: ``seg_hidden`` ``(D,)``, ``image_hidden`` ``(N, D)``.

        Returns the points (input-image pixels) and the ``(h, w)`` float32 similarity grid.
        """
        grid_h, grid_w = self.mllm.vision_tower.grid_size
        sim = image_hidden.detach().float() @ seg_hidden.detach().float()
        grid = sim.reshape(grid_h, grid_w).cpu()
        placement = GridPlacement.create(tuple(original_size), self.grid_region)
        return self.selector(grid, placement), grid

    def decode_mask(
        self,
        image_embedding: torch.Tensor,
        text_embed: torch.Tensor,
        points: PointPrompts,
        input_size: tuple[int, int],
        original_size: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM for one ``[SEG]``: ``image_embedding`` ``(1, C, h, w)``, ``text_embed`` ``(C,)``.

        Returns ``(logits (H, W), iou ())`` in input-image pixels (gradients kept).
        """
        from segment_anything.utils.transforms import ResizeLongestSide

        sam = self.visual_model
        device = image_embedding.device
        old_h, old_w = original_size
        new_h, new_w = ResizeLongestSide.get_preprocess_shape(
            old_h, old_w, int(sam.image_encoder.img_size)
        )
        coords, labels = points.sam_frame()
        scale = np.array([new_w / old_w, new_h / old_h], dtype=np.float64)
        coords_t = torch.as_tensor(coords.astype(np.float64) * scale, dtype=torch.float32)
        labels_t = torch.as_tensor(labels, dtype=torch.int32)
        sparse, dense = sam.prompt_encoder(
            points=(coords_t.to(device), labels_t.to(device)), boxes=None, masks=None
        )
        # READ casts the sparse prompt to the model's dtype before the mask decoder
        dtype = sam.mask_decoder.iou_token.weight.dtype
        sparse = torch.cat([sparse, text_embed.reshape(1, 1, -1).to(sparse.dtype)], dim=1)
        low_res, iou = sam.mask_decoder(
            image_embeddings=image_embedding.to(dtype),
            image_pe=sam.prompt_encoder.get_dense_pe().to(dtype),
            sparse_prompt_embeddings=sparse.to(dtype),
            dense_prompt_embeddings=dense.to(dtype),
            multimask_output=False,
        )
        logits = sam.postprocess_masks(low_res, tuple(input_size), tuple(original_size))
        return logits[0, 0], iou[0, 0]

    # ------------------------------------------------------------------ training
    def forward(
        self,
        images_clip: torch.Tensor,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        attention_masks: torch.Tensor,
        offset: torch.Tensor | Sequence[int],
        masks_list: Sequence[torch.Tensor],
        sam_mask_shape_list: Sequence[tuple[tuple[int, int], tuple[int, int]]],
        images: torch.Tensor | None = None,
        image_embeddings: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """Training losses (LISA / READ's ``model_forward``; see the module docstring)."""
        offset = [int(v) for v in torch.as_tensor(offset).flatten().tolist()]
        num_images = len(offset) - 1
        if num_images != images_clip.shape[0] or offset[0] != 0 or offset[-1] != len(input_ids):
            raise ConfigError(
                f"offset {offset} must start at 0, end at the {len(input_ids)} rows and have one "
                f"entry per image plus one ({images_clip.shape[0]} images)."
            )
        if len(masks_list) != num_images or len(sam_mask_shape_list) != num_images:
            raise ConfigError("masks_list and sam_mask_shape_list need one entry per image.")
        counts = torch.tensor([offset[i + 1] - offset[i] for i in range(num_images)])
        features = self.mllm.encode_images(images_clip.to(self.device))
        features = features.repeat_interleave(counts.to(features.device), dim=0)
        spliced = self._splice_features(input_ids, features, attention_masks, labels)
        hidden, logits, _ = self.mllm.decode(spliced.inputs_embeds, spliced.attention_mask)
        ce_loss = self._lm_loss(logits, spliced.labels) * self.ce_loss_weight

        if image_embeddings is None:
            if images is None:
                raise ConfigError("Give SAM's inputs (images) or their image_embeddings.")
            image_embeddings = self.sam_image_embeddings(images)
        mask_bce = hidden.new_zeros((), dtype=torch.float32)
        mask_dice = hidden.new_zeros((), dtype=torch.float32)
        sim_loss = hidden.new_zeros((), dtype=torch.float32)
        grid = self.mllm.vision_tower.grid_size
        num_masks = 0
        pred_masks: list[torch.Tensor] = []
        all_points: list[list[PointPrompts]] = []
        for i in range(num_images):
            rows = range(offset[i], offset[i + 1])
            seg_rows, seg_pos = self._seg_positions(input_ids, rows, spliced)
            gt = masks_list[i]
            if len(seg_pos) != gt.shape[0]:
                raise ConfigError(
                    f"Image {i} has {len(seg_pos)} [SEG] tokens in its conversations but "
                    f"{gt.shape[0]} ground-truth masks; give one mask per [SEG]."
                )
            input_size, original_size = sam_mask_shape_list[i]
            if tuple(gt.shape[-2:]) != tuple(original_size):
                raise ConfigError(
                    f"Masks of image {i} are {tuple(gt.shape[-2:])} but its original size is "
                    f"{tuple(original_size)}."
                )
            logits_i, points_i = [], []
            embedding = image_embeddings[i : i + 1].to(self.device)
            region = GridPlacement.create(tuple(original_size), self.grid_region).region
            for k_seg, (row, pos) in enumerate(zip(seg_rows, seg_pos)):
                start = spliced.image_starts[row]
                seg_hidden = hidden[row, pos]
                image_hidden = hidden[row, start : start + spliced.num_image_tokens]
                points, _ = self.points_for(seg_hidden, image_hidden, original_size)
                if self.similarity_loss_weight > 0:
                    occupancy = grid_occupancy(gt[k_seg].to(hidden.device), region, grid)
                    scaled = image_hidden @ seg_hidden / float(seg_hidden.shape[-1]) ** 0.5
                    sim_loss = sim_loss + similarity_ce_loss(scaled, occupancy)
                text_embed = self.text_hidden_fcs[0](seg_hidden)
                mask_logits, _ = self.decode_mask(
                    embedding, text_embed, points, input_size, original_size
                )
                logits_i.append(mask_logits)
                points_i.append(points)
            stacked = (
                torch.stack(logits_i)
                if logits_i
                else hidden.new_zeros((0, *tuple(original_size)), dtype=torch.float32)
            )
            pred_masks.append(stacked)
            all_points.append(points_i)
            k = int(gt.shape[0])
            if k:
                target = gt.to(device=stacked.device, dtype=torch.float32)
                mask_bce = mask_bce + sigmoid_bce_loss(stacked.float(), target, k) * k
                mask_dice = mask_dice + dice_loss(stacked.float(), target, k) * k
                num_masks += k
        mask_bce = self.bce_loss_weight * mask_bce / (num_masks + 1e-8)
        mask_dice = self.dice_loss_weight * mask_dice / (num_masks + 1e-8)
        mask_loss = mask_bce + mask_dice
        sim_loss = self.similarity_loss_weight * sim_loss / (num_masks + 1e-8)
        return {
            "loss": ce_loss + mask_loss + sim_loss,
            "ce_loss": ce_loss,
            "mask_bce_loss": mask_bce,
            "mask_dice_loss": mask_dice,
            "mask_loss": mask_loss,
            "similarity_loss": sim_loss,
            "pred_masks": pred_masks,
            "points": all_points,
        }

    def _splice_features(
        self,
        input_ids: torch.Tensor,
        features: torch.Tensor,
        attention_mask: torch.Tensor | None,
        labels: torch.Tensor | None,
    ) -> SplicedInputs:
        device = self.device
        return splice_image_tokens(
            self.mllm.embed_tokens(),
            input_ids.to(device),
            features,
            None if attention_mask is None else attention_mask.to(device),
            None if labels is None else labels.to(device),
        )

    def _seg_positions(
        self, input_ids: torch.Tensor, rows: range, spliced: SplicedInputs
    ) -> tuple[list[int], list[int]]:
        """Rows and spliced positions of the hidden states that predict each ``[SEG]``."""
        seg_rows, seg_pos = [], []
        for row in rows:
            start = spliced.image_starts[row]
            where = torch.nonzero(input_ids[row] == self.seg_token_idx).flatten().tolist()
            if where and start < 0:
                raise ConfigError(f"Row {row} has [SEG] tokens but no <image>.")
            for j in where:
                pos = expanded_position(int(j), start, spliced.num_image_tokens) - 1
                if pos < 0:
                    raise ConfigError(f"Row {row} starts with [SEG]; nothing predicts it.")
                seg_rows.append(row)
                seg_pos.append(pos)
        return seg_rows, seg_pos

    @staticmethod
    def _lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy, mean over labelled positions (0 when none)."""
        shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
        shift_labels = labels[:, 1:].reshape(-1)
        if not bool((shift_labels != IGNORE_INDEX).any()):
            return shift_logits.sum() * 0.0
        return F.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE_INDEX)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def generate(
        self,
        image: ReadImage | np.ndarray,
        prompt_ids: torch.Tensor | Sequence[int],
        max_new_tokens: int = 512,
        *,
        use_cache: bool = True,
        tokenizer: Any = None,
        image_embedding: torch.Tensor | None = None,
    ) -> ReadGeneration:
        """Greedy answer and one mask per ``[SEG]`` (see the module docstring).

        ``image_embedding`` ``(1, C, h, w)``: SAM's embedding of ``image`` when already computed
        (:meth:`sam_image_embeddings`), e.g. to ask several questions about one image.
        """
        if not isinstance(image, ReadImage):
            image = self.prepare_image(np.asarray(image))
        ids = torch.as_tensor(prompt_ids, dtype=torch.int64).reshape(1, -1).to(self.device)
        if int(max_new_tokens) < 1:
            raise ConfigError(f"max_new_tokens must be at least 1, got {max_new_tokens}.")
        features = self.mllm.encode_images(image.clip_pixels[None].to(self.device))
        spliced = self._splice_features(ids, features, None, None)
        if spliced.image_starts[0] < 0:
            raise PromptError("The prompt has no <image> placeholder (IMAGE_TOKEN_INDEX).")
        generated, hidden, stopped = self._greedy(
            spliced.inputs_embeds, int(max_new_tokens), use_cache
        )
        prompt_len = spliced.inputs_embeds.shape[1]
        start = spliced.image_starts[0]
        image_hidden = hidden[start : start + spliced.num_image_tokens]
        segments: list[SegPrediction] = []
        seg_indices = [g for g, t in enumerate(generated) if t == self.seg_token_idx]
        if seg_indices:
            embedding = (
                image_embedding.to(self.device)
                if image_embedding is not None
                else self.sam_image_embeddings(image.sam_pixels[None])
            )
            for g in seg_indices:
                seg_hidden = hidden[prompt_len + g - 1]
                points, grid = self.points_for(seg_hidden, image_hidden, image.original_size)
                text_embed = self.text_hidden_fcs[0](seg_hidden)
                logits, iou = self.decode_mask(
                    embedding, text_embed, points, image.input_size, image.original_size
                )
                segments.append(
                    SegPrediction(
                        mask=(logits > self.visual_model.mask_threshold).cpu().numpy(),
                        score=float(iou),
                        points=points,
                        similarity=grid.numpy().astype(np.float32),
                        token_index=g,
                    )
                )
        text = None
        if tokenizer is not None:
            text = tokenizer.decode(generated, skip_special_tokens=True).strip()
        return ReadGeneration(generated, text, segments, stopped)

    def _greedy(
        self, prompt_embeds: torch.Tensor, max_new_tokens: int, use_cache: bool
    ) -> tuple[list[int], torch.Tensor, bool]:
        """Greedy tokens and the final hidden states ``(L_prompt + n - 1 (or more), D)``."""
        embed = self.mllm.embed_tokens()
        mask = torch.ones(prompt_embeds.shape[:2], dtype=torch.int64, device=prompt_embeds.device)
        hidden, logits, past = self.mllm.decode(prompt_embeds, mask, use_cache=use_cache)
        states = [hidden[0]]
        generated: list[int] = []
        stopped = False
        while True:
            token = int(logits[0, -1].argmax())
            if self.eos_token_id is not None and token == self.eos_token_id:
                stopped = True
                break
            generated.append(token)
            if len(generated) >= max_new_tokens:
                break
            new = embed(torch.tensor([[token]], device=prompt_embeds.device))
            if use_cache:
                mask = torch.cat([mask, mask.new_ones((1, 1))], dim=1)
                hidden, logits, past = self.mllm.decode(new, mask, past, use_cache=True)
                states.append(hidden[0])
            else:
                prompt_embeds = torch.cat([prompt_embeds, new.to(prompt_embeds.dtype)], dim=1)
                mask = torch.cat([mask, mask.new_ones((1, 1))], dim=1)
                hidden, logits, _ = self.mllm.decode(prompt_embeds, mask)
                states = [hidden[0]]
        return generated, torch.cat(states, dim=0), stopped
