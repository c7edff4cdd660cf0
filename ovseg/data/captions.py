"""Reader for image-caption lists in open_clip's CSV format.

A header row names the image column (default ``filepath``) and the caption column (default
``title``); columns are tab separated by default. Relative image paths are resolved against the
CSV's folder (open_clip resolves them against the working directory; absolute paths behave the
same in both).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from ovseg.errors import DatasetError
from ovseg.io import read_image
from ovseg.registry import DATASETS


@DATASETS.register()
class CsvCaptionDataset:
    """Image-caption pairs from a CSV.

    ``__getitem__`` returns {"image": ``transform(PIL RGB image)`` when a transform is given,
    else an (H, W, 3) uint8 RGB array, "caption": str}. Attributes: ``images`` (paths),
    ``captions``.
    """

    def __init__(
        self,
        csv_path: str | os.PathLike,
        transform: Callable[[Image.Image], Any] | None = None,
        sep: str = "\t",
        img_key: str = "filepath",
        caption_key: str = "title",
    ) -> None:
        path = Path(csv_path).expanduser()
        if not path.is_file():
            raise DatasetError(
                f"Caption CSV {path} does not exist. Give a {sep!r}-separated file with a header "
                f"row naming the columns {img_key!r} and {caption_key!r}."
            )
        self.csv_path = path
        self.transform = transform
        try:
            with path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f, delimiter=sep)
                columns = reader.fieldnames or []
                rows = list(reader) if img_key in columns and caption_key in columns else []
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DatasetError(f"Cannot read caption CSV {path}: {exc}.") from exc
        if img_key not in columns or caption_key not in columns:
            raise DatasetError(
                f"Caption CSV {path} has columns {columns}, not {img_key!r} and {caption_key!r} "
                f"separated by {sep!r}. Fix the header, or pass sep=, img_key= and caption_key=."
            )
        bad = [
            i + 2 for i, r in enumerate(rows) if not r.get(img_key) or r.get(caption_key) is None
        ]
        if bad:
            raise DatasetError(
                f"Caption CSV {path} has rows without an image or caption at "
                f"lines {bad[:5]}; fix or remove them."
            )
        if not rows:
            raise DatasetError(f"Caption CSV {path} has a header but no rows.")
        self.images = [path.parent / r[img_key] for r in rows]
        self.captions = [r[caption_key] for r in rows]

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> dict[str, Any]:
        array = read_image(self.images[index])
        image = self.transform(Image.fromarray(array)) if self.transform is not None else array
        return {"image": image, "caption": self.captions[index]}
