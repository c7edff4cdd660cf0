"""``ovseg.demo.handlers.prompted``: the prompt check shared by the referring and reasoning tabs."""

from __future__ import annotations

import pytest

from ovseg.demo.handlers.prompted import check_prompt
from ovseg.errors import PromptError


def test_a_prompt_is_stripped():
    assert check_prompt("  the red star \n", "phrase", "type it.", 20) == "the red star"


@pytest.mark.parametrize("text", ["", "   ", None, 3])
def test_an_empty_or_non_text_prompt_is_refused_with_the_hint(text):
    with pytest.raises(PromptError, match=r"^The question is empty; ask something\.$"):
        check_prompt(text, "question", "ask something.", 20)


def test_an_overlong_prompt_names_its_length_and_the_limit():
    with pytest.raises(PromptError, match="The phrase has 6 characters; shorten it to 5 or fewer."):
        check_prompt(" abcdef ", "phrase", "type it.", 5)
    assert check_prompt("abcde", "phrase", "type it.", 5) == "abcde"
