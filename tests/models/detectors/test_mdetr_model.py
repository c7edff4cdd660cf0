"""MDETR's network against the reference code (ashkamath/mdetr) and the released key layout.

Forward equality: ``mdetr_reference.npz`` holds the reference code's own outputs, computed once
by ``tools/mdetr_reference_outputs.py`` (which imports the reference repository's ``models/``
and ``util/`` from a checkout) on the tiny architecture of ``tiny_mdetr.py`` with the weights
``fill_weights`` draws (seed 0), two padded images and two captions. The reference loaded those
weights with ``strict=True``, so the parameter names are the reference's too. Here ovseg's
model, given the same weights and inputs, must give the same numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ovseg.errors import ConfigError
from ovseg.models.detectors.mdetr import build_mdetr_model
from ovseg.models.detectors.mdetr_backbone import FrozenBatchNorm2d, TimmBody
from ovseg.models.detectors.mdetr_model import ROBERTA_BASE
from tests.models.detectors.tiny_mdetr import (
    tiny_architecture,
    tiny_state_dict,
    write_tiny_tokenizer,
)

REFERENCE = Path(__file__).with_name("mdetr_reference.npz")
CAPTIONS = ["a cat. red car", "the blue star"]  # as tools/mdetr_reference_outputs.py


def test_forward_equals_the_reference_code(tmp_path):
    import transformers

    reference = np.load(REFERENCE)
    model = build_mdetr_model(tiny_architecture())
    model.load_state_dict(tiny_state_dict(0), strict=True)
    tokenizer = transformers.RobertaTokenizerFast.from_pretrained(
        write_tiny_tokenizer(tmp_path / "tok")
    )
    text = tokenizer(CAPTIONS, padding="longest", return_tensors="pt")
    np.testing.assert_array_equal(text["input_ids"].numpy(), reference["input_ids"])
    with torch.no_grad():
        out = model(
            torch.from_numpy(reference["images"]),
            torch.from_numpy(reference["mask"]),
            text["input_ids"],
            text["attention_mask"],
        )
    for key in ("pred_logits", "pred_boxes", "proj_queries", "proj_tokens"):
        expected = reference[key]
        assert out[key].shape == expected.shape
        # float32 through ~20 layers: a few ulps of the largest value
        scale = max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(out[key].numpy(), expected, rtol=0, atol=1e-5 * scale)
    # the padded image (index 0 is 64 x 96 in an 80 x 96 batch) changes the other one's nothing
    with torch.no_grad():
        alone = model(
            torch.from_numpy(reference["images"][1:]),
            torch.from_numpy(reference["mask"][1:]),
            text["input_ids"][1:],
            text["attention_mask"][1:],
        )
    np.testing.assert_allclose(
        alone["pred_logits"].numpy()[0], reference["pred_logits"][1], atol=1e-4
    )


def _meta_state(architecture):
    with torch.device("meta"):
        return build_mdetr_model(architecture).state_dict()


@pytest.mark.parametrize(
    "backbone, channels", [("resnet101", 2048), ("timm_tf_efficientnet_b3_ns", 384),
                           ("timm_tf_efficientnet_b5_ns", 512)]
)  # fmt: skip
def test_released_architectures_have_the_reference_layout(backbone, channels):
    """Built on the meta device (no memory, no time): the released shapes and names."""
    state = _meta_state({"backbone": backbone})
    assert state["class_embed.weight"].shape == (256, 256)  # 255 token positions + no object
    assert state["query_embed.weight"].shape == (100, 256)
    assert state["input_proj.weight"].shape == (256, channels, 1, 1)
    assert state["bbox_embed.layers.2.weight"].shape == (4, 256)
    assert state["contrastive_align_projection_image.weight"].shape == (64, 256)
    assert state["contrastive_align_projection_text.bias"].shape == (64,)
    assert state["transformer.resizer.fc.weight"].shape == (256, 768)
    assert state["transformer.resizer.layer_norm.bias"].shape == (256,)
    words = state["transformer.text_encoder.embeddings.word_embeddings.weight"]
    assert words.shape == (ROBERTA_BASE["vocab_size"], 768)
    assert "transformer.text_encoder.pooler.dense.weight" in state  # saved by RobertaModel
    assert "transformer.text_encoder.encoder.layer.11.output.LayerNorm.bias" in state
    for i in range(6):
        assert f"transformer.encoder.layers.{i}.self_attn.in_proj_weight" in state
        assert f"transformer.decoder.layers.{i}.cross_attn_image.out_proj.weight" in state
        assert f"transformer.decoder.layers.{i}.norm4.weight" in state
        assert f"transformer.decoder.layers.{i}.norm2.weight" not in state  # commented out
    assert "transformer.decoder.norm.weight" in state
    assert "transformer.encoder.norm.weight" not in state  # post-norm: no final encoder norm
    assert not any("num_batches_tracked" in k for k in state)  # frozen batch norm
    body = [k for k in state if k.startswith("backbone.0.body.")]
    if backbone == "resnet101":
        assert "backbone.0.body.layer4.2.bn3.running_var" in state
        assert "backbone.0.body.layer3.22.conv2.weight" in state  # 23 blocks in layer3
        assert not any(".fc." in k for k in body)
    else:
        assert "backbone.0.body.conv_stem.weight" in state
        assert "backbone.0.body.bn1.running_mean" in state
        assert not any("conv_head" in k for k in body)  # features_only
    assert all(k.startswith(("backbone.0.", "transformer.", "class_embed", "bbox_embed",
                             "query_embed", "input_proj", "contrastive_align")) for k in state)  # fmt: skip


def test_frozen_timm_body_keeps_the_fused_activation():
    """timm's BatchNormAct2d (norm + activation) frozen: same output as timm's own eval-mode
    model with every norm's eps set to the reference's 1e-5."""
    import timm

    torch.manual_seed(0)
    ours = TimmBody("tf_efficientnet_b0").eval()
    theirs = timm.create_model(
        "tf_efficientnet_b0", pretrained=False, features_only=True, out_indices=(1, 2, 3, 4)
    ).eval()
    norms = [m for m in theirs.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(hasattr(m, "act") for m in norms)
    generator = torch.Generator().manual_seed(1)
    for module in norms:
        module.eps = 1e-5
        module.running_mean.normal_(0, 0.1, generator=generator)
        module.running_var.uniform_(0.5, 1.5, generator=generator)
        module.weight.data.normal_(1, 0.1, generator=generator)
    frozen = [m for m in ours.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(frozen) == len(norms)
    missing, unexpected = ours.body.load_state_dict(
        {k: v for k, v in theirs.state_dict().items() if "num_batches_tracked" not in k}
    )
    assert not missing and not unexpected
    image = torch.randn(1, 3, 64, 64, generator=generator)
    with torch.no_grad():
        np.testing.assert_allclose(
            ours(image).numpy(), theirs(image)[-1].numpy(), rtol=1e-4, atol=1e-5
        )
    assert ours.num_channels == 320


def test_unknown_backbone_and_fields_are_refused():
    with pytest.raises(ConfigError, match="backbone"):
        _meta_state({"backbone": "vgg16"})
    with pytest.raises(ConfigError, match="architecture fields"):
        build_mdetr_model({"hidden": 3})
