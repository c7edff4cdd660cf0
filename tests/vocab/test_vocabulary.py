"""Vocabulary parsing and validation."""

from __future__ import annotations

import pytest
import torch

from ovseg.errors import VocabularyError
from ovseg.vocab import Vocabulary, load_class_file, thing_vocabulary


def test_string_list_and_file_forms(tmp_path):
    v = Vocabulary.create("person|man|woman, dog , sofa")
    assert v.names == ["person", "dog", "sofa"]
    assert v.queries == ["person", "man", "woman", "dog", "sofa"]
    assert torch.equal(v.query_to_class, torch.tensor([0, 0, 0, 1, 2]))
    assert Vocabulary.create(["cat", ["dog", "puppy"]]).queries == ["cat", "dog", "puppy"]
    path = tmp_path / "classes.txt"
    path.write_text("# comment\nbackground, sky, wall\n\ncat\n")
    v = Vocabulary.from_file(path)
    assert v.names == ["background", "cat"] and v.background_index == 0
    assert Vocabulary.create({"file": str(path)}) == v


def test_packaged_class_files():
    assert len(load_class_file("voc21.txt")) == 21
    assert len(load_class_file("ade.txt")) == 150
    objects = Vocabulary.from_file("object.txt")  # "bed" is in two classes, as in the reference
    assert len(objects) == 81 and objects.queries.count("bed") == 2
    voc21 = Vocabulary.from_file("voc21.txt")
    assert voc21.names[0] == "background" and voc21.background_index == 0
    assert "background" not in voc21.queries  # displayed, not queried, as in the reference
    assert voc21.queries[:3] == ["sky", "wall", "tree"] and len(voc21.queries) - len(voc21) > 25


def test_display_name_lines(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("things: cup, mug\nplate\n")
    v = Vocabulary.from_file(path)
    assert v.names == ["things", "plate"] and v.queries == ["cup", "mug", "plate"]
    assert load_class_file(path)[0] == ("things", "cup", "mug")
    path.write_text(": cup\n")
    with pytest.raises(VocabularyError, match="display name"):
        Vocabulary.from_file(path)


@pytest.mark.parametrize("spec", ["", " , ", [], ["cat", "Cat"], "dog,dog"])
def test_bad_vocabularies(spec):
    with pytest.raises(VocabularyError):
        Vocabulary.create(spec)


def test_missing_file():
    with pytest.raises(VocabularyError, match="does not exist"):
        Vocabulary.from_file("no-such-classes.txt")


@pytest.mark.parametrize("spec", ["", "   ", ",,", " , | ,"])
def test_a_string_naming_no_class_is_refused(spec):
    with pytest.raises(VocabularyError, match="names no class"):
        Vocabulary.create(spec)


def test_unreadable_class_files_say_what_to_give(tmp_path):
    binary = tmp_path / "weights.bin"
    binary.write_bytes(b"\x00\x01\x02cat\x00")
    with pytest.raises(VocabularyError, match="binary file, not text"):
        Vocabulary.from_file(binary)
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9\nchien\n".encode("latin-1"))
    with pytest.raises(VocabularyError, match="not UTF-8 text.*Save it as UTF-8"):
        Vocabulary.from_file(latin)
    with pytest.raises(VocabularyError, match="is a folder"):
        Vocabulary.from_file(tmp_path)
    bom = tmp_path / "bom.txt"
    bom.write_bytes("cat\ndog\n".encode("utf-8-sig"))
    assert Vocabulary.from_file(bom).names == ["cat", "dog"]


def test_thing_vocabulary_leaves_out_stuff_and_the_background_class():
    vocab = Vocabulary.create(["background", "red star", "Sand", "blue ring|ring"])
    things, indices = thing_vocabulary(vocab, ["sand", "water"])
    assert things.names == ["red star", "blue ring"] and indices == [1, 3]
    assert things.classes[1] == ("blue ring", "ring")  # synonyms kept
    assert thing_vocabulary(Vocabulary.create(["sand"]), ["sand"]) == (None, [])
