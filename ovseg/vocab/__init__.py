"""Vocabularies: class names with synonyms, from lists, strings and class files."""

from ovseg.vocab.vocabulary import Vocabulary, load_class_file, thing_vocabulary

__all__ = ["Vocabulary", "load_class_file", "thing_vocabulary"]
