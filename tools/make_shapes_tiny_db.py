#!/usr/bin/env python
"""Rebuild the embedded ``shapes-tiny`` text database (``ovseg/model_zoo/databases/shapes-tiny``).

Corpus: the synthetic world's caption vocabulary for all 68 classes, the 8 unseen ones included
(class names; object captions of every thing on every stuff and on none, with the world's
object and scene templates; stuff captions), then distractor concepts: the names of
``ovseg/cased/concepts/benchmarks.txt`` and ``imagenet1k.txt``. Encoded with the embedded
shapes-tiny CLIP as a ``captions`` database with an exact index::

    python tools/make_shapes_tiny_db.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

try:
    import ovseg  # noqa: F401
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PACKAGE = Path(__file__).resolve().parents[1] / "ovseg"
DATABASE_DIR = PACKAGE / "model_zoo" / "databases"
CONCEPTS = PACKAGE / "cased" / "concepts"
DISTRACTOR_FILES = ("benchmarks.txt", "imagenet1k.txt")
COMMAND = "python tools/make_shapes_tiny_db.py"


def world_captions() -> list[str]:
    """Class names and caption phrasings of every class of the synthetic world."""
    from ovseg.data.phrasing import (
        OBJECT_TEMPLATES,
        SCENE_TEMPLATES,
        STUFF_NOUN,
        STUFF_PHRASE,
        STUFF_TEMPLATES,
        with_article,
    )
    from ovseg.data.synthetic_vocab import CLASS_NAMES, STUFF_CLASSES, THING_CLASSES

    texts = list(CLASS_NAMES)
    for name in THING_CLASSES:
        for stuff in (None, *STUFF_CLASSES):
            phrase = STUFF_PHRASE[stuff] if stuff else ""
            for template in OBJECT_TEMPLATES:
                template = template if stuff else template.replace(" {stuff}", "")
                texts.append(template.format(a=with_article(name), bare=name, stuff=phrase))
            desc = " ".join(p for p in (with_article(name), phrase) if p)
            texts += [template.format(desc=desc) for template in SCENE_TEMPLATES]
    for stuff in STUFF_CLASSES:
        texts += [t.format(name=stuff, noun=STUFF_NOUN[stuff]) for t in STUFF_TEMPLATES]
    return list(dict.fromkeys(texts))


def corpus() -> list[str]:
    distractors = []
    for name in DISTRACTOR_FILES:
        distractors += (CONCEPTS / name).read_text(encoding="utf-8").splitlines()
    return list(dict.fromkeys([*world_captions(), *distractors]))


def main(argv: list[str] | None = None) -> int:
    from ovseg.cased.build import build_database
    from ovseg.commands.db import _backbone_from_preset

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DATABASE_DIR / "shapes-tiny")
    args = parser.parse_args(argv)
    backbone, pretrained, _ = _backbone_from_preset("shapes-tiny", "cpu", [])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "shapes_tiny_corpus.txt"
        texts = corpus()
        path.write_text("".join(f"{t}\n" for t in texts), encoding="utf-8")
        build_database(path, backbone, args.out, pretrained=pretrained, kind="captions",
                       index="flat", overwrite=True, build_command=COMMAND,
                       source="make_shapes_tiny_db.py")  # fmt: skip
    print(f"{len(texts)} texts -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
