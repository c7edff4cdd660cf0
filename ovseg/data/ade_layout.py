"""Names of the ADE20K (ADEChallengeData2016) layout shared by its reader and the synthetic writer.

The reader (:mod:`ovseg.data.ade20k`) finds these files; the writer
(:mod:`ovseg.data.ade_writer`) creates them. Neither imports the other.
"""

from __future__ import annotations

ADE_DIRNAME = "ADEChallengeData2016"
CLASS_FILENAME = "ovseg_classes.txt"
"""One class per line, index order; written by ovseg next to ``images/`` and ``annotations/``."""
SPLIT_FILENAME = "ovseg_split.json"
"""``{"classes": [...], "unseen": [...]}``; written by ovseg next to the class file."""
