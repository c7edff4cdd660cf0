"""An offline, deterministic part-of-speech filter: WordNet's nouns and adjectives.

CaSED keeps the candidate words its tagger calls nouns, adjectives or participles. Taggers need
models or data that may be missing; this filter needs neither. A word passes when Princeton
WordNet 3.0 lists it as a noun or an adjective (the packaged lexicon
``ovseg/cased/lexicon/wordnet-en.tsv.gz``, built by ``tools/build_pos_lexicon.py``; source and
license in that folder's README) and it is not a closed-class word (:data:`CLOSED_CLASS`:
determiners, pronouns, prepositions, conjunctions, auxiliaries and modals, number words and a
few function adverbs), since WordNet also lists some of those as rare nouns ("are", a unit of
area; "will"; "can").

Unlike a tagger it reads no context: a word is kept for any of its uses ("star" the noun and
the verb alike), so it keeps a few words a tagger would drop in a given caption, and every
participle that WordNet lists as an adjective or noun ("running").
"""

from __future__ import annotations

import functools
import gzip
from collections.abc import Sequence
from pathlib import Path

LEXICON_PATH = Path(__file__).resolve().parent / "lexicon" / "wordnet-en.tsv.gz"
NAME = "wordnet"

CLOSED_CLASS: frozenset[str] = frozenset(
    """
    a an the this that these those each every either neither some any no all both
    another such what which whose whatever whichever
    i me my mine myself you your yours yourself yourselves he him his himself she her hers
    herself it its itself we us our ours ourselves they them their theirs themselves who whom
    one ones oneself someone somebody something anyone anybody anything everyone everybody
    everything nobody nothing none
    about above across after against along amid among around as at before behind below beneath
    beside besides between beyond by despite down during except for from in inside into like
    near of off on onto opposite out outside over per since than through throughout till
    to toward towards under underneath unlike until up upon via with within without
    and but or nor so yet if unless because although though while whereas whether
    be am is are was were been being have has had having do does did doing done
    can could may might must shall should will would ought
    not also very too just only even still then there here thus hence however therefore
    where when why how
    two three four five six seven eight nine ten eleven twelve twenty thirty forty fifty
    hundred thousand million billion
    """.split()
)
"""Function words that never become candidates, whatever WordNet lists them as."""


@functools.lru_cache(maxsize=1)
def load_lexicon(path: str | None = None) -> dict[str, str]:
    """``word -> tags`` (``"n"``, ``"a"`` or ``"na"``) of the packaged lexicon."""
    with gzip.open(path or LEXICON_PATH, "rt", encoding="utf-8") as f:
        return dict(line.rstrip("\n").split("\t", 1) for line in f if line.strip())


def wordnet_tag(word: str) -> str:
    """A Penn tag for one lower-case word: ``NN`` (a WordNet noun), ``JJ`` (adjective only) or
    ``X`` (neither, or a closed-class word)."""
    if word in CLOSED_CLASS:
        return "X"
    tags = load_lexicon().get(word, "")
    return "NN" if "n" in tags else "JJ" if "a" in tags else "X"


def wordnet_tagger(words: Sequence[str]) -> list[tuple[str, str]]:
    """Tag words with :func:`wordnet_tag` (the ``Tagger`` interface of the candidate extractor)."""
    return [(word, wordnet_tag(word)) for word in words]
