"""OWL-ViT's heads on an open_clip ViT: the same numbers as transformers' OwlViT heads for the
same weights, the token path, the input frame and the options."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from open_clip.transformer import VisionTransformer

from ovseg.errors import ConfigError
from ovseg.models.detectors.owl_heads import (
    OwlBoxHead,
    OwlClassHead,
    OwlClipModel,
    owl_box_bias,
    owl_input,
)
from tests.tolerance import assert_close_to_scale

WIDTH, EMBED = 32, 16


def tiny_tower(seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    tower = VisionTransformer(
        image_size=32, patch_size=8, width=WIDTH, layers=1, heads=2, mlp_ratio=2.0,
        output_dim=EMBED, pool_type="avg",
    )  # fmt: skip
    return tower.eval()


@pytest.fixture(scope="module")
def hf_owl():
    transformers = pytest.importorskip("transformers")
    config = transformers.OwlViTConfig(
        text_config={"hidden_size": EMBED, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "vocab_size": 50, "max_position_embeddings": 16},
        vision_config={"hidden_size": WIDTH, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 64, "patch_size": 16},
        projection_dim=EMBED,
    )  # fmt: skip
    torch.manual_seed(1)
    return transformers.OwlViTForObjectDetection(config).eval()


def test_box_bias_equals_transformers(hf_owl):
    assert_close_to_scale(owl_box_bias(4, 4), hf_owl.compute_box_bias(4, 4), 1e-6)
    assert_close_to_scale(owl_box_bias(3, 5), hf_owl.compute_box_bias(3, 5), 1e-6)
    # the last patch's centre sits at the grid corner 1.0: log(1 + 1e-4) - log(1e-4) (float32)
    assert owl_box_bias(4, 4)[-1, 0].item() == pytest.approx(
        np.log(1.0001) - np.log(1e-4), rel=1e-4
    )


def test_heads_equal_transformers_for_the_same_weights(hf_owl):
    box_head, class_head = OwlBoxHead(WIDTH), OwlClassHead(WIDTH, EMBED)
    box_head.load_state_dict(hf_owl.box_head.state_dict())
    class_head.load_state_dict(hf_owl.class_head.state_dict())
    g = torch.Generator().manual_seed(2)
    tokens = torch.randn(2, 16, WIDTH, generator=g)
    queries = torch.randn(2, 3, EMBED, generator=g)
    with torch.no_grad():
        want_boxes = hf_owl.box_predictor(tokens, tokens.reshape(2, 4, 4, WIDTH))
        want_logits, want_embeds = hf_owl.class_predictor(tokens, queries.clone(), None)
        got_boxes = torch.sigmoid(box_head(tokens) + owl_box_bias(4, 4))
        got_logits = class_head(tokens, queries)
        got_shared = class_head(tokens, queries[0])
    assert_close_to_scale(got_boxes, want_boxes, 1e-5)
    assert_close_to_scale(got_logits, want_logits, 1e-5)
    assert_close_to_scale(class_head.embed(tokens), want_embeds, 1e-5)
    assert_close_to_scale(got_shared[0], got_logits[0], 1e-6)


def test_model_tokens_follow_owl_with_and_without_the_class_token_merge():
    tower = tiny_tower()
    model = OwlClipModel(tower, EMBED, image_size=32, merge_class_token=True).eval()
    plain = OwlClipModel(tower, EMBED, image_size=32, merge_class_token=False).eval()
    plain.load_state_dict(model.state_dict())
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        x = tower.conv1(images).flatten(2).transpose(1, 2)
        x = torch.cat([tower.class_embedding.expand(2, 1, -1), x], dim=1)
        x = tower.transformer(tower.ln_pre(x + tower.positional_embedding))
        x = tower.ln_post(x)
        merged, alone = model.image_tokens(images), plain.image_tokens(images)
        logits, boxes = model(images, torch.randn(5, EMBED))
    assert_close_to_scale(merged, model.layer_norm(x[:, 1:] * x[:, :1]), 1e-5)
    assert_close_to_scale(alone, model.layer_norm(x[:, 1:]), 1e-5)
    assert logits.shape == (2, 16, 5) and boxes.shape == (2, 16, 4)
    assert bool(((boxes > 0) & (boxes < 1)).all())


def test_larger_inputs_resize_the_positional_embedding_and_the_bias():
    model = OwlClipModel(tiny_tower(), EMBED, image_size=48)
    logits, boxes = model(torch.randn(1, 3, 48, 48), torch.randn(2, EMBED))
    assert logits.shape == (1, 36, 2) and model.box_bias.shape == (36, 4)
    with pytest.raises(ConfigError, match="48 x 48"):
        model(torch.randn(1, 3, 32, 32), torch.randn(2, EMBED))
    with pytest.raises(ConfigError, match="multiple of the patch size"):
        OwlClipModel(tiny_tower(), EMBED, image_size=36)


def test_clip_init_and_prior():
    tower = tiny_tower()
    model = OwlClipModel(tower, EMBED, 32, merge_class_token=False, class_init="clip",
                         prior_prob=0.01)  # fmt: skip
    assert torch.equal(model.class_head.dense0.weight, tower.proj.t())
    assert torch.equal(model.layer_norm.weight, tower.ln_post.weight)
    assert model.class_head.logit_shift.bias.item() == pytest.approx(np.log(0.01 / 0.99))
    with pytest.raises(ConfigError, match="class_init"):
        OwlClipModel(tower, EMBED, 32, class_init="imagenet")
    with pytest.raises(ConfigError, match="prior_prob"):
        OwlClipModel(tower, EMBED, 32, prior_prob=1.5)


def test_owl_input_pads_bottom_right_and_reports_the_side():
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, :, 0] = 255
    pixels, side = owl_input(image, 40, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    assert side == 40.0 and pixels.shape == (3, 40, 40)
    assert torch.all(pixels[0, :20] == 1.0) and torch.all(pixels[:, 20:] == 0.5)
    resized, side = owl_input(image, 16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert side == 40.0 and resized.shape == (3, 16, 16)
    assert resized[0, 0, 0].item() == pytest.approx(1.0)
    assert resized[1, -1, -1].item() == pytest.approx(0.0, abs=1e-6)  # grey: (0.5 - 0.5) / 0.5
