"""CaSED (Conti et al., NeurIPS 2023): vocabulary-free naming through a text database.

- :mod:`ovseg.cased.database`: the text database (FAISS index + texts + manifest, verified on load).
- :mod:`ovseg.cased.build`: resumable, shardable database builds from a text corpus.
- :mod:`ovseg.cased.candidates`: candidate names extracted from retrieved captions.
- :mod:`ovseg.cased.search`: :class:`~ovseg.cased.search.CasedSearch`, image -> ranked names.
- ``concepts/``: the packaged concept-name corpus.

Needs the ``vocab`` extra (faiss-cpu, inflect, nltk) for building and searching databases.
"""
