"""Build ``ovseg/cased/lexicon/wordnet-en.tsv.gz``, the offline part-of-speech lexicon.

Source: Princeton WordNet 3.0's index of lemmas per part of speech and its exception lists
(irregular inflections), as the PyPI package ``spacy-lookups-data`` (MIT; the WordNet data under
WordNet 3.0's license, which it ships as ``en_license.txt``) distributes them:
``spacy_lookups_data/data/en_lemma_index.json.gz`` and ``en_lemma_exc.json.gz``.

Output: one line per single lower-case ASCII word that WordNet lists as a noun or an adjective
(lemmas, and the irregular forms of noun and adjective lemmas, e.g. ``mice``, ``better``),
``word<TAB>tags`` with tags ``n`` (noun), ``a`` (adjective) or ``na``, sorted, gzip-compressed
with a fixed timestamp so that the bytes are reproducible. Multi-word lemmas are left out
(candidates are single words). Which of these words a filter drops as closed-class words
("are", "will", "can") is decided in :mod:`ovseg.cased.lexicon`, not here.

    pip download --no-deps spacy-lookups-data==1.0.5 -d /tmp/wheels
    python tools/build_pos_lexicon.py /tmp/wheels/spacy_lookups_data-1.0.5-py2.py3-none-any.whl
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import re
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "ovseg" / "cased" / "lexicon"
DATA = "spacy_lookups_data/data/"
WORD = re.compile(r"^[a-z]+$")


def _json(archive: zipfile.ZipFile, name: str) -> dict:
    with archive.open(DATA + name) as raw:
        return json.loads(gzip.decompress(raw.read()).decode("utf-8"))


def build(wheel: Path) -> dict[str, set[str]]:
    """``word -> {"n", "a"}`` from the wheel's WordNet index and exception lists."""
    with zipfile.ZipFile(wheel) as archive:
        index = _json(archive, "en_lemma_index.json.gz")
        exceptions = _json(archive, "en_lemma_exc.json.gz")
        license_text = archive.read(DATA + "en_license.txt").decode("utf-8")
    if "WordNet" not in license_text:
        raise SystemExit(f"{wheel} does not carry WordNet's license; is it spacy-lookups-data?")
    tags: dict[str, set[str]] = {}
    for pos, tag in (("noun", "n"), ("adj", "a")):
        words = set(index[pos]) | set(exceptions[pos])
        for word in words:
            if WORD.match(word):
                tags.setdefault(word, set()).add(tag)
    (OUT_DIR / "LICENSE-WordNet.txt").write_text(license_text.rstrip() + "\n", encoding="utf-8")
    return tags


def write(tags: dict[str, set[str]], path: Path) -> None:
    lines = "".join(f"{w}\t{''.join(sorted(tags[w], reverse=True))}\n" for w in sorted(tags))
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as f:
        f.write(lines.encode("utf-8"))
    path.write_bytes(buffer.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="spacy_lookups_data-1.0.5-*.whl")
    args = parser.parse_args(argv)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    tags = build(args.wheel)
    out = OUT_DIR / "wordnet-en.tsv.gz"
    write(tags, out)
    nouns = sum("n" in t for t in tags.values())
    adjectives = sum("a" in t for t in tags.values())
    print(f"wrote {out}: {len(tags)} words ({nouns} nouns, {adjectives} adjectives), "
          f"{out.stat().st_size} bytes")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
