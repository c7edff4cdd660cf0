"""Candidate extraction from captions, step by step as CaSED's text transform does it."""

from __future__ import annotations

import pytest

from ovseg.cased import candidates
from ovseg.cased.candidates import (
    CandidateExtractor,
    clean_text,
    clean_tokens,
    clean_words,
    concept_candidates,
    frequent_words,
    resolve_tagger,
    singularize,
)
from ovseg.errors import ConfigError, MissingDependencyError

CAPTIONS = [
    "A photo of two dogs playing in the park <br> http://example.com/dog.jpg",
    "Dogs in a park, photo_2019.png!",
    "cute puppy-dog image; the dogs' ball",
]


def test_cleaning_steps_by_hand():
    assert clean_text("a <b>tag</b> http://x.y/z.jpg dog's_toy-box, ok! e.g.") == (
        "a tag  dog's toy box ok e."
    )
    # joined: tokens, URL, ',', '!', ';' and '.png' go; '_' '-' become spaces; short words and
    # non-letters go; lower-case; plurals become singular; generic words (photo, image) go
    words = clean_words(" ".join(CAPTIONS)).split()
    assert words == "two dog playing the park dog park cute puppy dog the dog ball".split()


def test_extraction_by_hand():
    extractor = CandidateExtractor(pos_filter=False)
    # counts: dog 4, the 2, park 2, every other word once -> words seen at least twice
    assert extractor(CAPTIONS) == ["dog", "the", "park"]


def test_pos_filter_tags_the_frequent_words():
    seen = []
    tags = {"dog": "NN", "park": "NN", "the": "DT", "red": "JJ", "running": "VBG", "run": "VB"}

    def tagger(words):
        seen.append(list(words))
        return [(w, tags[w]) for w in words]

    assert CandidateExtractor(pos_filter=tagger)(CAPTIONS) == ["dog", "park"]
    assert seen == [["dog", "the", "park", "dog", "park", "dog", "the", "dog"]]
    kept = CandidateExtractor(pos_filter=tagger, min_count=1)(["red running run"])
    assert kept == ["red", "running"]


def test_singular_follows_the_reference_rules():
    assert [singularize(w) for w in ["dogs", "stars", "boxes", "waters"]] == [
        "dog", "star", "box", "water"]  # fmt: skip
    # 'ss', 'us', 'is' and 'ies', 'oes' endings are left alone, as is a word without 's'
    for word in ["glass", "cactus", "axis", "berries", "potatoes", "people", "mice"]:
        assert singularize(word) == word
    assert clean_words("Photos of Images and ICONS") == "  and "


def test_frequency_threshold_falls_back_to_the_most_frequent():
    assert frequent_words(["a", "b", "c"], 2) == (["a", "b", "c"], 1)
    assert frequent_words(["a", "b", "a"], 2) == (["a", "a"], 2)
    assert frequent_words(["a", "b", "a"], 3) == (["a", "a"], 2)
    assert frequent_words([], 2) == ([], 0)
    assert frequent_words(["x", "y"], 1) == (["x", "y"], 1)
    assert CandidateExtractor(pos_filter=False)(["one cat", "a dog"]) == ["one", "cat", "dog"]


def test_empty_result_becomes_object():
    assert CandidateExtractor(pos_filter=False)(["a photo of an image", "<x>"]) == ["object"]
    assert CandidateExtractor(pos_filter=False)([]) == ["object"]


def test_bigrams_need_adjacent_words():
    captions = ["a red star on sand", "a photo of a red star", "red star next to a blue ring"]
    assert CandidateExtractor(pos_filter=False)(captions) == ["red", "star"]
    two = CandidateExtractor(pos_filter=False, max_ngram=2)
    assert two(captions) == ["red", "star", "red star"]  # not "star sand", "star next": once
    tags = {"red": "JJ", "star": "NN", "sand": "NN", "blue": "JJ", "ring": "NN", "next": "JJ"}
    tagged = CandidateExtractor(pos_filter=lambda ws: [(w, tags[w]) for w in ws], max_ngram=2)
    assert tagged(captions + ["star next", "star next"]) == ["red", "star", "next", "red star"]
    with pytest.raises(ConfigError, match="max_ngram"):
        CandidateExtractor(max_ngram=3)


def test_token_cleaning_matches_the_joined_text():
    captions = CAPTIONS + ["Two Foxes & three WOLVES", "mother's day cards_for-kids", "x1 yy3z"]
    per_token = [w for c in captions for w in clean_tokens(c) if w]
    assert per_token == clean_words(" ".join(captions)).split()
    assert clean_tokens("a red star on sand") == [None, "red", "star", None, "sand"]


def test_missing_nltk_data_is_an_error_not_a_skip(monkeypatch):
    import nltk

    def no_data(words):
        raise LookupError("Resource averaged_perceptron_tagger_eng not found")

    monkeypatch.setattr(nltk, "pos_tag", no_data)
    candidates.nltk_tagger.cache_clear()
    try:
        with pytest.raises(MissingDependencyError, match="averaged_perceptron_tagger_eng"):
            CandidateExtractor(pos_filter="nltk")
        with pytest.raises(MissingDependencyError, match="'wordnet'"):
            resolve_tagger("nltk")
    finally:
        candidates.nltk_tagger.cache_clear()


def test_present_nltk_tagger_is_used_when_asked(monkeypatch):
    import nltk

    monkeypatch.setattr(nltk, "pos_tag", lambda ws: [(w, "NN" if w == "park" else "DT")
                                                     for w in ws])  # fmt: skip
    candidates.nltk_tagger.cache_clear()
    try:
        extractor = CandidateExtractor(pos_filter="nltk")
        assert extractor(CAPTIONS) == ["park"] and extractor.pos_filter_name == "nltk"
    finally:
        candidates.nltk_tagger.cache_clear()
    for wrong in ("sometimes", "auto", True):
        with pytest.raises(ConfigError, match="pos_filter"):
            resolve_tagger(wrong)


def test_default_filter_is_the_offline_wordnet_lexicon():
    extractor = CandidateExtractor()
    assert extractor.pos_filter_name == "wordnet"
    assert extractor(CAPTIONS) == ["dog", "park"]  # "the" is dropped without any tagger data
    assert CandidateExtractor(pos_filter="none").pos_filter_name == "none"
    assert CandidateExtractor(pos_filter=lambda ws: ws).pos_filter_name == "custom"


def test_concept_entries_are_the_candidates():
    assert concept_candidates(["golden_retriever", "golden retriever", " red  star "]) == [
        "golden retriever", "red star"]  # fmt: skip
    assert concept_candidates([]) == ["object"]
