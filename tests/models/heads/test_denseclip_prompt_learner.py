"""PromptLearner: learnable contexts between the start token and the class tokens."""

from __future__ import annotations

import open_clip
import pytest
import torch

from ovseg.errors import ConfigError, VocabularyError
from ovseg.models.heads.denseclip import PromptLearner
from tests.conftest import randomize_

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def clip(tiny_model_names):
    model = open_clip.create_model(tiny_model_names["vit"], pretrained=None)
    return randomize_(model, seed=3).eval()


@pytest.fixture
def tokenizer(tiny_model_names):
    return open_clip.get_tokenizer(tiny_model_names["vit"])


def test_contexts_sit_between_start_token_and_class_tokens(clip, tokenizer):
    torch.manual_seed(0)
    prompt = PromptLearner(clip, tokenizer, num_contexts=3)
    tokens = prompt.tokenize(["red circle", "sky"])
    sot, eot = tokenizer.sot_token_id, tokenizer.eot_token_id
    red_circle = tokenizer.encode("red circle")
    assert tokens[0].tolist() == [sot, *red_circle, eot]  # padded to the longest name only
    assert tokens[1].tolist()[:3] == [sot, *tokenizer.encode("sky"), eot]
    sequence, eot_index = prompt.prompt_embeddings(tokens)
    embed = clip.token_embedding
    assert sequence.shape == (2, 1 + 3 + tokens.shape[1] - 1, prompt.text_encoder.width)
    torch.testing.assert_close(sequence[:, 0], embed(torch.tensor([sot, sot])))
    torch.testing.assert_close(sequence[:, 1:4], prompt.contexts.expand(2, -1, -1))
    torch.testing.assert_close(sequence[0, 4:], embed(tokens[0, 1:]))
    assert eot_index.tolist() == [3 + len(red_circle) + 1, 3 + 2]
    assert sequence[0, eot_index[0]].equal(embed.weight[eot])


def test_hand_written_contexts_reproduce_clip_text_encoding(clip, tokenizer):
    """Contexts set to the embeddings of "a photo of a" give CLIP's embedding of the full text."""
    prompt = PromptLearner(clip, tokenizer, num_contexts=4)
    words = tokenizer.encode("a photo of a")
    assert len(words) == 4
    with torch.no_grad():
        prompt.contexts.copy_(clip.token_embedding.weight[words][None])
        names = ["red circle", "sky", "light blue hexagon"]
        got = prompt.encode_names(names)
        expected = clip.encode_text(tokenizer([f"a photo of a {n}" for n in names]))
    assert got.shape == (3, 32)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_padding_after_the_end_token_does_not_matter(clip, tokenizer):
    prompt = PromptLearner(clip, tokenizer, num_contexts=8)
    tokens = prompt.tokenize(["red circle"])
    longer = torch.cat([tokens, torch.zeros(1, 5, dtype=torch.long)], dim=1)
    # Another sequence length / batch changes only the float32 summation order (attention over
    # masked padding adds exact zeros). Text features are O(1) (|x| <~ 3); errors are ~2e-7 of
    # that scale, near-zero entries included, so the bound is 1e-5 absolute plus 1e-5 relative.
    with torch.no_grad():
        torch.testing.assert_close(prompt(tokens), prompt(longer), rtol=1e-5, atol=1e-5)
        alone = prompt.encode_names(["sky"])
        together = prompt.encode_names(["sky", "a very long name of many words"])
    torch.testing.assert_close(alone[0], together[0], rtol=1e-5, atol=1e-5)


def test_text_encoder_frozen_contexts_learn(clip, tokenizer):
    torch.manual_seed(0)
    prompt = PromptLearner(clip, tokenizer, num_contexts=8)
    values = prompt.contexts.detach()
    assert values.shape == (1, 8, 32) and values.abs().max() <= 2.0
    assert 0.6 < float(values.std()) < 1.1  # trunc_normal_ with std 1, cut at +-2
    trainable = [n for n, p in prompt.named_parameters() if p.requires_grad]
    assert trainable == ["contexts"]
    prompt.train()
    assert not prompt.text_encoder.training
    prompt.encode_names(["red circle", "sky"]).sum().backward()
    assert prompt.contexts.grad is not None and prompt.contexts.grad.abs().sum() > 0
    assert all(p.grad is None for p in prompt.text_encoder.parameters())


def test_bad_vocabularies(clip, tokenizer):
    prompt = PromptLearner(clip, tokenizer, num_contexts=18)  # 24 positions: 6 for a name
    with pytest.raises(VocabularyError):
        prompt.tokenize([])
    with pytest.raises(VocabularyError):
        prompt.tokenize(["cat", "  "])
    with pytest.raises(VocabularyError, match="too long"):
        prompt.tokenize(["one two three four five six seven"])
    assert prompt.tokenize(["one two three four"]).shape == (1, 6)
    with pytest.raises(ConfigError):
        PromptLearner(clip, tokenizer, num_contexts=23)
    with pytest.raises(ConfigError):
        PromptLearner(clip, tokenizer, num_contexts=0)
