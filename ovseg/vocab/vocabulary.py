"""``Vocabulary``: the classes a user asks for, each with one or more names (synonyms).

Class files hold one class per line; a line's names are separated by commas and the first one is
the display name (``person, person in shirt, person in jeans``). Empty lines and lines starting
with ``#`` are skipped. In a one-line string (the CLI's ``--vocab``), classes are separated by
commas and a class's synonyms by ``|`` (``"person|man|woman, dog, sofa"``).

A name may appear in two classes (the reference class lists do this, e.g. "bed" both as a
COCO class and among the background's stuff words); display names must be unique.

A class whose display name is ``background`` is the background class (its synonyms typically list
stuff words); pixels whose best probability is under the probability threshold go to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ovseg.errors import VocabularyError

CLASS_DIR = Path(__file__).resolve().parents[1] / "model_zoo" / "classes"
BACKGROUND_NAME = "background"


def _clean(names: Sequence[str]) -> tuple[str, ...]:
    cleaned = tuple(n.strip() for n in names if n.strip())
    if not cleaned:
        raise VocabularyError("A class has no name; remove the empty entry from the vocabulary.")
    return cleaned


def load_class_file(path: str | Path) -> list[tuple[str, ...]]:
    """Read a class file (bare names resolve to ``ovseg/model_zoo/classes/<name>``)."""
    path = Path(path)
    if not path.is_file() and (CLASS_DIR / path).is_file():
        path = CLASS_DIR / path
    if not path.is_file():
        raise VocabularyError(
            f"Class file {path} does not exist. Give a text file with one class per line "
            f"(synonyms after commas), or one of the packaged files in {CLASS_DIR}."
        )
    classes = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            classes.append(_clean(line.split(",")))
    return classes


@dataclass(frozen=True)
class Vocabulary:
    """Classes in order; ``classes[i]`` is the tuple of names of class ``i`` (display name first)."""

    classes: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        if not self.classes:
            raise VocabularyError(
                "The vocabulary is empty; give at least one class name (e.g. --vocab 'cat,dog')."
            )
        display = [names[0].lower() for names in self.classes]
        duplicates = sorted({n for n in display if display.count(n) > 1})
        if duplicates:
            raise VocabularyError(
                f"The vocabulary lists {', '.join(map(repr, duplicates))} more than once; "
                "remove the duplicates (use synonyms for several names of one class)."
            )

    @classmethod
    def create(cls, spec: Vocabulary | str | Sequence[str | Sequence[str]] | dict) -> Vocabulary:
        """Build from a Vocabulary, a ``"a|a2, b, c"`` string, a list of names / name lists, or a
        mapping ``{file: PATH}`` / ``{names: [...]}`` as configs write it."""
        if isinstance(spec, Vocabulary):
            return spec
        if isinstance(spec, dict) or hasattr(spec, "keys"):
            if spec.get("file"):
                return cls(tuple(load_class_file(spec["file"])))
            if spec.get("names"):
                return cls.create(list(spec["names"]))
            raise VocabularyError("A vocabulary mapping needs 'file' or 'names'.")
        if isinstance(spec, str):
            return cls(tuple(_clean(item.split("|")) for item in spec.split(",") if item.strip()))
        if spec is None:
            raise VocabularyError("No vocabulary given; pass vocabulary=[...] or --vocab 'a,b,c'.")
        classes = []
        for item in spec:
            if isinstance(item, str):
                classes.append(_clean(item.replace("|", ",").split(",")))
            else:
                classes.append(_clean(list(item)))
        return cls(tuple(classes))

    @classmethod
    def from_file(cls, path: str | Path) -> Vocabulary:
        return cls(tuple(load_class_file(path)))

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        """Display names, one per class."""
        return [names[0] for names in self.classes]

    @property
    def queries(self) -> list[str]:
        """Every name of every class, class by class (what the text encoder embeds)."""
        return [name for names in self.classes for name in names]

    @property
    def query_to_class(self) -> torch.Tensor:
        """``(Q,)`` int64: the class index of each query."""
        return torch.tensor(
            [index for index, names in enumerate(self.classes) for _ in names], dtype=torch.long
        )

    @property
    def background_index(self) -> int | None:
        for index, names in enumerate(self.classes):
            if names[0].lower() == BACKGROUND_NAME:
                return index
        return None
