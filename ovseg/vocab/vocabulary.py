"""``Vocabulary``: the classes a user asks for, each with one or more names (synonyms).

Class files hold one class per line; a line's names are separated by commas and the first one is
the display name (``person, person in shirt, person in jeans``). A line may instead start with
``display name:`` to show a name that is not itself a query (``background: sky, wall, tree``
queries the stuff words and displays "background"). Empty lines and lines starting with ``#``
are skipped. In a one-line string (the CLI's ``--vocab``), classes are separated by
commas and a class's synonyms by ``|`` (``"person|man|woman, dog, sofa"``).

A name may appear in two classes (the reference class lists do this, e.g. "bed" both as a
COCO class and among the background's stuff words); display names must be unique.

A class whose display name is ``background`` is the background class (its synonyms typically list
stuff words); pixels whose best probability is under the probability threshold go to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ovseg.errors import VocabularyError

CLASS_DIR = Path(__file__).resolve().parents[1] / "model_zoo" / "classes"
BACKGROUND_NAME = "background"

if TYPE_CHECKING:
    import torch


def _clean(names: Sequence[str]) -> tuple[str, ...]:
    cleaned = tuple(n.strip() for n in names if n.strip())
    if not cleaned:
        raise VocabularyError("A class has no name; remove the empty entry from the vocabulary.")
    return cleaned


def parse_class_line(line: str) -> tuple[str | None, tuple[str, ...]]:
    """``"display: a, b"`` -> ``("display", ("a", "b"))``; ``"a, b"`` -> ``(None, ("a", "b"))``."""
    head = line.split(",", 1)[0]
    if ":" in head:
        display, rest = line.split(":", 1)
        display = display.strip()
        if not display:
            raise VocabularyError(f"Empty display name before ':' in class line {line!r}.")
        return display, _clean(rest.split(","))
    return None, _clean(line.split(","))


def _class_file_path(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file() and (CLASS_DIR / path).is_file():
        path = CLASS_DIR / path
    if path.is_dir():
        raise VocabularyError(
            f"Class file {path} is a folder; give the text file inside it that lists one class "
            "per line (synonyms after commas)."
        )
    if not path.is_file():
        raise VocabularyError(
            f"Class file {path} does not exist. Give a text file with one class per line "
            f"(synonyms after commas), or one of the packaged files in {CLASS_DIR}."
        )
    return path


def read_class_file(path: str | Path) -> list[tuple[str | None, tuple[str, ...]]]:
    """Entries ``(display name or None, names)`` of a class file (see :func:`parse_class_line`)."""
    path = _class_file_path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise VocabularyError(f"Cannot read class file {path}: {exc.strerror or exc}.") from exc
    if b"\0" in data:
        raise VocabularyError(
            f"Class file {path} is a binary file, not text. Give a UTF-8 text file with one "
            "class per line (synonyms after commas)."
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise VocabularyError(
            f"Class file {path} is not UTF-8 text (byte {exc.start} cannot be decoded). Save it "
            "as UTF-8, one class per line (synonyms after commas)."
        ) from exc
    lines = text.splitlines()
    return [
        parse_class_line(line)
        for line in lines
        if line.strip() and not line.lstrip().startswith("#")
    ]


def load_class_file(path: str | Path) -> list[tuple[str, ...]]:
    """Display name first, then the queries, per class (bare names resolve to the packaged files).

    For a ``display: a, b`` line the tuple is ``(display, a, b)``; use :meth:`Vocabulary.from_file`
    to keep the display name out of the queries.
    """
    return [((display,) if display else ()) + names for display, names in read_class_file(path)]


@dataclass(frozen=True)
class Vocabulary:
    """Classes in order; ``classes[i]`` is the tuple of names of class ``i`` (display name first)."""

    classes: tuple[tuple[str, ...], ...]
    display_names: tuple[str, ...] = ()  # optional; default: the first name of each class

    def __post_init__(self) -> None:
        if self.display_names and len(self.display_names) != len(self.classes):
            raise VocabularyError("display_names must give one name per class.")
        if not self.classes:
            raise VocabularyError(
                "The vocabulary is empty; give at least one class name (e.g. --vocab 'cat,dog')."
            )
        display = [name.lower() for name in self.names]
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
                return cls.from_file(spec["file"])
            if spec.get("names"):
                return cls.create(list(spec["names"]))
            raise VocabularyError("A vocabulary mapping needs 'file' or 'names'.")
        if isinstance(spec, str):
            if not spec.replace(",", "").replace("|", "").strip():
                raise VocabularyError(
                    f"The vocabulary {spec!r} names no class; give class names separated by "
                    "commas (e.g. --vocab 'cat,dog|puppy'), or leave --vocab out to use the "
                    "preset's classes."
                )
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
        entries = read_class_file(path)
        classes = tuple(names for _, names in entries)
        if any(display for display, _ in entries):
            return cls(classes, tuple(display or names[0] for display, names in entries))
        return cls(classes)

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        """Display names, one per class."""
        if self.display_names:
            return list(self.display_names)
        return [names[0] for names in self.classes]

    @property
    def queries(self) -> list[str]:
        """Every name of every class, class by class (what the text encoder embeds)."""
        return [name for names in self.classes for name in names]

    @property
    def query_to_class(self) -> torch.Tensor:
        """``(Q,)`` int64: the class index of each query."""
        import torch  # here: building a vocabulary (CLI argument checks) needs no torch

        return torch.tensor(
            [index for index, names in enumerate(self.classes) for _ in names], dtype=torch.long
        )

    @property
    def background_index(self) -> int | None:
        for index, name in enumerate(self.names):
            if name.lower() == BACKGROUND_NAME:
                return index
        return None


def thing_vocabulary(vocab: Vocabulary, stuff: Iterable[str]) -> tuple[Vocabulary | None, list]:
    """The thing classes of ``vocab`` (those instances may take) and their indices in ``vocab``.

    A class is left out when its display name (case-insensitive) is one of ``stuff`` or it is
    the vocabulary's background class. Returns ``(None, [])`` when no class is left.
    """
    stuff_names = {name.strip().lower() for name in stuff}
    background = vocab.background_index
    indices = [
        index
        for index, name in enumerate(vocab.names)
        if name.lower() not in stuff_names and index != background
    ]
    if not indices:
        return None, []
    return Vocabulary(tuple(vocab.classes[index] for index in indices)), indices
