"""The packaged WordNet noun/adjective lexicon: the default, offline candidate filter."""

from __future__ import annotations

import gzip

from ovseg.cased.candidates import CandidateExtractor
from ovseg.cased.pos_lexicon import (
    CLOSED_CLASS,
    LEXICON_PATH,
    load_lexicon,
    wordnet_tag,
    wordnet_tagger,
)


def test_lexicon_is_packaged_small_and_licensed():
    assert LEXICON_PATH.is_file() and LEXICON_PATH.stat().st_size < 400_000
    assert gzip.open(LEXICON_PATH).read(4)  # a gzip stream
    license_text = (LEXICON_PATH.parent / "LICENSE-WordNet.txt").read_text()
    assert "WordNet 3.0 Copyright 2006 by Princeton University" in license_text
    lexicon = load_lexicon()
    assert len(lexicon) > 70_000
    assert set(lexicon.values()) == {"n", "a", "na"}


def test_function_words_never_pass_nouns_and_adjectives_do():
    for word in ("the", "with", "of", "and", "are", "will", "can", "this", "from", "into"):
        assert wordnet_tag(word) == "X", word
    assert wordnet_tag("dog") == "NN" and wordnet_tag("mice") == "NN"  # irregular plural
    assert wordnet_tag("red") == "NN"  # noun and adjective: a noun (kept either way)
    assert wordnet_tag("fluffy") == "JJ" and wordnet_tag("better") in {"NN", "JJ"}
    assert wordnet_tag("quickly") == "X" and wordnet_tag("xyzzyq") == "X"
    # WordNet lists these as rare nouns; the closed-class list keeps them out
    assert {"are", "will", "can"} <= CLOSED_CLASS and load_lexicon()["are"] == "n"


def test_the_with_of_never_become_candidates():
    captions = [
        "the dog with the red ball of the park",
        "the dog of the house with a fluffy cat",
        "with the cat of the garden, the dog",
    ]
    extractor = CandidateExtractor(min_count=1)  # the default filter
    names = extractor(captions)
    assert extractor.pos_filter_name == "wordnet"
    assert not {"the", "with", "of"} & set(names)
    assert {"dog", "red", "ball", "park", "house", "fluffy", "cat", "garden"} <= set(names)
    # bigrams: adjective/noun + noun
    two = CandidateExtractor(min_count=1, max_ngram=2)(captions)
    assert "red ball" in two and "fluffy cat" in two
    assert not [b for b in two if " " in b and {"the", "with", "of"} & set(b.split())]


def test_tagger_is_deterministic_and_context_free():
    words = ["the", "star", "running", "with", "star"]
    assert wordnet_tagger(words) == wordnet_tagger(list(reversed(words)))[::-1]
    assert [tag for _, tag in wordnet_tagger(words)] == ["X", "NN", "NN", "X", "NN"]
