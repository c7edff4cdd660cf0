#!/usr/bin/env python
"""Regenerate the default concept corpus (the ``*.txt`` files of ``ovseg/cased/concepts``).

Sources (see README.md for their licences), in priority order; a name already taken by an
earlier file is not repeated in a later one:

* ``benchmarks.txt``: every name (synonyms included) of the packaged class files
  (``ovseg/model_zoo/classes/*.txt``: ADE20K, COCO-Stuff, COCO-Object, Pascal VOC / Context,
  Cityscapes ...);
* ``imagenet1k.txt``: open_clip's cleaned ImageNet-1k class names;
* ``lvis.txt``, ``objects365.txt``, ``openimages.txt``: the LVIS v1, Objects365 v2 and Open
  Images v6 category names of mmdetection's ``class_names.py`` (read from the mmdet wheel
  given with ``--mmdet-wheel``; its literal lists are parsed, no code of it runs);
* ``imagenet21k.txt``: every lemma of the ImageNet-21k (fall 2011) synsets, as timm ships them
  (``timm/data/_info``; the lemmas are WordNet 3.0's).

Cleaning: underscores become spaces, whitespace is collapsed, names are lower-cased (CLIP's
tokenizer lower-cases anyway), names longer than 6 words or 48 characters and names without a
letter are dropped, duplicates are removed (case-insensitively).

Usage::

    pip download mmdet==3.3.0 --no-deps -d /tmp/mmdet
    python tools/make_concept_corpus.py --mmdet-wheel /tmp/mmdet/mmdet-3.3.0-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import zipfile
from pathlib import Path

try:
    import ovseg  # noqa: F401
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PACKAGE = Path(__file__).resolve().parents[1] / "ovseg"
CONCEPT_DIR = PACKAGE / "cased" / "concepts"
CLASS_DIR = PACKAGE / "model_zoo" / "classes"
MAX_WORDS, MAX_CHARS = 6, 48
MMDET_LISTS = {
    "lvis": "lvis_classes",
    "objects365": "objects365v2_classes",
    "openimages": "oid_v6_classes",
}


def clean(name: str) -> str | None:
    name = " ".join(name.replace("_", " ").split()).lower()
    if not re.search(r"[a-z]", name) or len(name) > MAX_CHARS or len(name.split()) > MAX_WORDS:
        return None
    return name


def benchmark_names() -> list[str]:
    from ovseg.vocab.vocabulary import read_class_file

    names = []
    for path in sorted(CLASS_DIR.glob("*.txt")):
        for display, synonyms in read_class_file(path):
            names += [n for n in ((display,) if display else ()) + synonyms if n != "background"]
    return names


def imagenet1k_names() -> list[str]:
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES)


def imagenet21k_names() -> list[str]:
    import timm

    info = Path(timm.__file__).resolve().parent / "data" / "_info"
    synsets = (info / "imagenet21k_goog_synsets.txt").read_text().split()
    lemmas = {}
    for line in (info / "imagenet_synset_to_lemma.txt").read_text().splitlines():
        synset, _, text = line.partition("\t")
        lemmas[synset] = [part.strip() for part in text.split(",")]
    return [lemma for synset in synsets for lemma in lemmas.get(synset, [])]


def mmdet_lists(wheel: Path) -> dict[str, list[str]]:
    """The literal class-name lists of mmdet's class_names.py, parsed (not executed)."""
    with zipfile.ZipFile(wheel) as archive:
        source = archive.read("mmdet/evaluation/functional/class_names.py").decode("utf-8")
    functions = {
        node.name: node for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)
    }
    out = {}
    for label, function in MMDET_LISTS.items():
        body = [n for n in functions[function].body if isinstance(n, ast.Return)]
        out[label] = list(ast.literal_eval(body[0].value))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mmdet-wheel", type=Path, help="mmdet wheel (LVIS/O365/OID names)")
    parser.add_argument("--out", type=Path, default=CONCEPT_DIR)
    args = parser.parse_args(argv)
    sources: list[tuple[str, list[str]]] = [
        ("benchmarks", benchmark_names()),
        ("imagenet1k", imagenet1k_names()),
    ]
    if args.mmdet_wheel is not None:
        lists = mmdet_lists(args.mmdet_wheel)
        sources += [(label, lists[label]) for label in MMDET_LISTS]
    sources.append(("imagenet21k", imagenet21k_names()))
    seen: set[str] = set()
    for label, names in sources:
        kept = []
        for raw in names:
            name = clean(raw)
            if name and name not in seen:
                seen.add(name)
                kept.append(name)
        (args.out / f"{label}.txt").write_text("".join(f"{n}\n" for n in kept), encoding="utf-8")
        print(f"{label}: {len(kept)} names")
    print(f"total: {len(seen)} names")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
