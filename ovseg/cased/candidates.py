"""Candidate category names from retrieved captions, as CaSED's default text transform does it.

The retrieved captions of one query are joined with spaces and passed through, in this order
(Conti et al., 2023, reference code ``default_vocab_transform``):

1. drop ``<...>`` tokens, 2. drop URLs (``http...``), 3. drop characters other than word
characters, whitespace, ``- . ' &``, 4. drop "file extensions" (``.`` + word characters),
5. replace ``_`` and ``-`` by spaces, 6. drop words shorter than 3 characters, 7. drop
non-letters, 8. lower-case, 9. singularise words ending in ``s`` (not ``ss``/``us``/``is``/
``ies``/``oes``) with inflect, 10. drop generic words (:data:`GENERIC_WORDS`), 11. keep words
seen at least ``min_count`` (2) times (if none is, the count of the most frequent word),
12. keep nouns, adjectives and participles (:data:`KEPT_POS_TAGS`) by part-of-speech tagging,
13. drop repeated words. An empty result becomes ``["object"]``.

Step 12's tagger is ``pos_filter``: ``"wordnet"`` (default) keeps the words Princeton WordNet
lists as nouns or adjectives, less closed-class words (:mod:`ovseg.cased.pos_lexicon`: offline,
deterministic, packaged); ``"nltk"`` uses nltk's averaged perceptron tagger (its data must be
installed: ``python -m nltk.downloader averaged_perceptron_tagger_eng``, else a
MissingDependencyError); the reference uses flair. ``"none"`` skips the step. The words are
tagged as the sequence left after step 11, as in the reference. Which filter ran is recorded
(:attr:`CandidateExtractor.pos_filter_name`, and the search results' ``pos_filter``).

Extension (off by default, ``max_ngram=2``): two-word names. Every caption is also cleaned on
its own (steps 1-10); two surviving words that were adjacent in the caption form a bigram
("red star" in "a red star on sand", not "star sand"), kept under the same count threshold and,
with a tagger, when it tags as adjective/noun + noun. Bigrams come after the single words.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable, Sequence

from ovseg.cased.pos_lexicon import NAME as POS_LEXICON_NAME
from ovseg.cased.pos_lexicon import wordnet_tagger
from ovseg.errors import ConfigError, MissingDependencyError

GENERIC_WORDS: tuple[str, ...] = (
    "image", "photo", "picture", "thumbnail", "logo", "symbol", "clipart", "portrait",
    "painting", "illustration", "icon", "profile",
)  # fmt: skip
"""Words that describe the medium, not the content (CaSED's list)."""

KEPT_POS_TAGS = frozenset({"NN", "NNS", "NNP", "NNPS", "JJ", "JJR", "JJS", "VBG", "VBN"})
NOUN_TAGS = frozenset({"NN", "NNS", "NNP", "NNPS"})
FALLBACK_CANDIDATE = "object"
POS_FILTERS = (POS_LEXICON_NAME, "nltk", "none")
DEFAULT_POS_FILTER = POS_LEXICON_NAME

Tagger = Callable[[list[str]], list[tuple[str, str]]]

_TOKENS = re.compile(r"<[^>]+>")
_URLS = re.compile(r"http\S+")
_SPECIAL = re.compile(r"[^\w\s\-\.\'\&]")
_EXTENSIONS = re.compile(r"\.\w+")
_SEPARATORS = re.compile(r"[_\-]")
_NON_ALPHA = re.compile(r"[^a-zA-Z\s]")


def _inflect_engine():
    try:
        import inflect
    except ImportError as exc:
        raise MissingDependencyError(
            "Candidate extraction singularises words with inflect; install it with "
            "`pip install 'ovseg[vocab]'` (or `pip install inflect`)."
        ) from exc
    return inflect.engine()


@functools.lru_cache(maxsize=1)
def _singular_noun() -> Callable[[str], str | bool]:
    return _inflect_engine().singular_noun


@functools.lru_cache(maxsize=65536)
def singularize(word: str) -> str:
    """Singular of ``word`` by CaSED's rule: only words ending in ``s``, and not in ``ss``,
    ``us``, ``is``, ``ies`` or ``oes``, go through inflect's ``singular_noun``."""
    if not word.endswith("s") or word[-2:] in ("ss", "us", "is") or word[-3:] in ("ies", "oes"):
        return word
    return _singular_noun()(word) or word


def clean_text(text: str) -> str:
    """Steps 1-5: tokens, URLs, special characters, file extensions, separators."""
    text = _TOKENS.sub("", text)
    text = _URLS.sub("", text)
    text = _SPECIAL.sub("", text)
    text = _EXTENSIONS.sub("", text)
    return _SEPARATORS.sub(" ", text)


def _drop_pattern(words: Sequence[str]) -> re.Pattern | None:
    if not words:
        return None
    return re.compile(r"\b(?:{})\b".format("|".join(words)), flags=re.IGNORECASE)


def clean_words(text: str, drop_words: Sequence[str] = GENERIC_WORDS, min_length: int = 3) -> str:
    """Steps 1-10 on ``text`` (a caption or several joined by spaces); returns the words."""
    text = clean_text(text)
    text = " ".join(word for word in text.split() if len(word) >= min_length)
    text = _NON_ALPHA.sub("", text).lower()
    text = " ".join(singularize(word) for word in text.split())
    pattern = _drop_pattern(drop_words)
    return pattern.sub("", text) if pattern is not None else text


def clean_tokens(
    caption: str, drop_words: Sequence[str] = GENERIC_WORDS, min_length: int = 3
) -> list[str | None]:
    """Steps 1-10 word by word on one caption: a cleaned word, or None where one was dropped
    (so that words on both sides of a dropped one are not adjacent)."""
    drop = {word.lower() for word in drop_words}
    tokens: list[str | None] = []
    for word in clean_text(caption).split():
        if len(word) < min_length:
            tokens.append(None)
            continue
        word = _NON_ALPHA.sub("", word).lower()
        word = singularize(word) if word else word
        tokens.append(word if word and word not in drop else None)
    return tokens


def frequent_words(words: Sequence[str], min_count: int) -> tuple[list[str], int]:
    """Step 11: words seen ``min_count`` times (or as often as the most frequent one, if no
    word reaches it), in their order; also returns the threshold used."""
    if min_count <= 1:
        return list(words), min_count
    counts = Counter(words)
    threshold = min(min_count, max(counts.values(), default=0))
    return [word for word in words if counts[word] >= threshold], threshold


@functools.lru_cache(maxsize=1)
def nltk_tagger() -> Tagger:
    """nltk's averaged perceptron tagger.

    Raises:
        MissingDependencyError: nltk or its tagger data is not installed (the message says how
            to install them, or to choose the offline ``"wordnet"`` filter).
    """
    try:
        import nltk
    except ImportError as exc:
        raise MissingDependencyError(
            "pos_filter 'nltk' needs nltk: pip install 'ovseg[vocab]' (or pip install nltk), "
            "then python -m nltk.downloader averaged_perceptron_tagger_eng; or use the offline "
            "pos_filter 'wordnet'."
        ) from exc
    try:
        nltk.pos_tag(["test"])
    except LookupError as exc:
        raise MissingDependencyError(
            "pos_filter 'nltk' needs nltk's tagger data: python -m nltk.downloader "
            "averaged_perceptron_tagger_eng; or use the offline pos_filter 'wordnet'."
        ) from exc
    return nltk.pos_tag


def resolve_pos_filter(pos_filter: str | Tagger | bool | None) -> tuple[Tagger | None, str]:
    """``(tagger or None, name)`` of a ``pos_filter`` setting.

    ``"wordnet"`` (default): the packaged WordNet lexicon; ``"nltk"``: nltk's tagger (a
    MissingDependencyError when it or its data is missing: never skipped silently);
    ``"none"`` / False / None: no POS filter; a callable ``words -> [(word, tag), ...]``: that
    tagger (named ``"custom"``).
    """
    if callable(pos_filter):
        return pos_filter, "custom"
    if pos_filter is False or pos_filter is None or pos_filter == "none":
        return None, "none"
    if pos_filter == POS_LEXICON_NAME:
        return wordnet_tagger, POS_LEXICON_NAME
    if pos_filter == "nltk":
        return nltk_tagger(), "nltk"
    raise ConfigError(
        f"pos_filter must be one of {', '.join(POS_FILTERS)} or a tagger callable, not "
        f"{pos_filter!r}."
    )


def resolve_tagger(pos_filter: str | Tagger | bool | None) -> Tagger | None:
    """The tagger of a ``pos_filter`` setting (see :func:`resolve_pos_filter`)."""
    return resolve_pos_filter(pos_filter)[0]


class CandidateExtractor:
    """Retrieved captions -> candidate names (see the module docstring for the steps).

    Args:
        min_count: step 11's threshold (2 in CaSED).
        max_ngram: 1 (CaSED) or 2 (also adjacent word pairs).
        pos_filter: ``"wordnet"`` (default), ``"nltk"``, ``"none"`` or a tagger callable (see
            :func:`resolve_pos_filter`); :attr:`pos_filter_name` says which one runs.
        drop_words: step 10's generic words.
        min_length: step 6's shortest word.
    """

    def __init__(
        self,
        min_count: int = 2,
        max_ngram: int = 1,
        pos_filter: str | Tagger | bool | None = DEFAULT_POS_FILTER,
        drop_words: Sequence[str] = GENERIC_WORDS,
        min_length: int = 3,
    ) -> None:
        if max_ngram not in (1, 2):
            raise ConfigError(f"max_ngram must be 1 or 2, not {max_ngram!r}.")
        self.min_count = int(min_count)
        self.max_ngram = int(max_ngram)
        self.tagger, self.pos_filter_name = resolve_pos_filter(pos_filter)
        self.drop_words = tuple(drop_words)
        self.min_length = int(min_length)

    def __call__(self, captions: Sequence[str]) -> list[str]:
        """Candidate names for the captions retrieved for one query, in first-seen order."""
        words = clean_words(" ".join(captions), self.drop_words, self.min_length).split()
        words, threshold = frequent_words(words, self.min_count)
        if self.tagger is not None and words:
            words = [word for word, tag in self.tagger(words) if tag in KEPT_POS_TAGS]
        names = list(dict.fromkeys(words))
        if self.max_ngram >= 2:
            names += [b for b in self._bigrams(captions, threshold) if b not in names]
        return names or [FALLBACK_CANDIDATE]

    def _bigrams(self, captions: Sequence[str], threshold: int) -> list[str]:
        counts: Counter[str] = Counter()
        for caption in captions:
            tokens = clean_tokens(caption, self.drop_words, self.min_length)
            for first, second in zip(tokens, tokens[1:]):
                if first and second and first != second:
                    counts[f"{first} {second}"] += 1
        kept = [pair for pair, n in counts.items() if n >= max(1, threshold)]
        if self.tagger is None:
            return kept
        out = []
        for pair in kept:
            (_, first_tag), (_, second_tag) = self.tagger(pair.split())
            if first_tag in KEPT_POS_TAGS and second_tag in NOUN_TAGS:
                out.append(pair)
        return out


def concept_candidates(texts: Sequence[str]) -> list[str]:
    """Entries of a concept database are the candidates (underscores read as spaces)."""
    names = [" ".join(text.replace("_", " ").split()) for text in texts]
    return list(dict.fromkeys(name for name in names if name)) or [FALLBACK_CANDIDATE]
