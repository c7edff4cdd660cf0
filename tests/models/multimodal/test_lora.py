from __future__ import annotations

import copy

import torch

from ovseg.models.multimodal.lora import add_lora


def test_adapters_only_on_the_decoder_attention(tiny_read):
    model, _ = tiny_read
    model = copy.deepcopy(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    names = add_lora(model)  # READ's defaults: r 8, alpha 16, dropout 0.05, q_proj / v_proj
    assert names == [
        f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")
    ]
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert len(lora) == 8 and all(p.requires_grad for p in lora.values())
    assert all(n.startswith("mllm.language_model.model.layers.") for n in lora)
    assert all(p.shape[0] == 8 or p.shape[1] == 8 for p in lora.values())
    frozen = [p for n, p in model.mllm.language_model.named_parameters() if "lora_" not in n]
    assert frozen and not any(p.requires_grad for p in frozen)
    # a fresh adapter changes nothing (lora_B starts at zero)
    ids = torch.tensor([[1, 5, 6, 7]])
    embeds = model.mllm.embed_tokens()(ids)
    with torch.no_grad():
        out = model.mllm.decode(embeds)[1]
    reference = copy.deepcopy(tiny_read[0])
    with torch.no_grad():
        expected = reference.mllm.decode(reference.mllm.embed_tokens()(ids))[1]
    torch.testing.assert_close(out, expected)
    assert set(before) <= {k.replace(".base_layer", "") for k in model.state_dict()}


def test_merge_folds_adapters_into_plain_linears(tiny_read):
    from ovseg.models.multimodal.lora import merge_lora

    model, _ = tiny_read
    model = copy.deepcopy(model)
    keys = set(model.state_dict())
    add_lora(model, r=4, alpha=8, dropout=0.0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    ids = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad():
        adapted = model.mllm.decode(model.mllm.embed_tokens()(ids))[1]
    assert merge_lora(model) == 4
    assert set(model.state_dict()) == keys
    layer = model.mllm.language_model.model.layers[0].self_attn.q_proj
    assert type(layer) is torch.nn.Linear
    with torch.no_grad():
        merged = model.mllm.decode(model.mllm.embed_tokens()(ids))[1]
    torch.testing.assert_close(merged, adapted, rtol=1e-4, atol=1e-5)
