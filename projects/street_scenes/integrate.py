"""Read image folders (generated or a user's own) into one frame of CHW float32 arrays.

A source is a folder with one sub-folder per class (``<folder>/<label>/*.png``),
the layout of ``torchvision.datasets.ImageFolder`` and of most labelled photo
exports. Class names are the sub-folder names, so a user's own classes work too.

What integration does, counted in ``Dataset.report``:

* reads PNG, JPEG, BMP, GIF and WebP files (case-insensitive suffix), converts
  them to RGB, centre-crops to a square and resizes to 32x32 (box filter);
* skips files it cannot decode (``unreadable_files``), files that are not in a
  class sub-folder (``files_outside_class_folders``) and other suffixes
  (``ignored_files``);
* drops exact duplicates after resizing (``duplicates_dropped``), keeping the
  first, since the same photo reported twice would leak between training and
  validation;
* raises :class:`~civicml.errors.NotFound` for a missing folder and
  :class:`~civicml.errors.InvalidInput` for a folder without class sub-folders,
  without any readable image, with fewer than two classes, or with a
  class of a single image.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from civicml.errors import InvalidInput, NotFound
from projects.street_scenes.generator import SIZE

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def load_image(path: Path, size: int = SIZE) -> np.ndarray:
    """One image file as a float32 CHW array in [0, 1], centre-cropped and resized to ``size``."""
    with Image.open(path) as opened:
        image = opened.convert("RGB")
    w, h = image.size
    side = min(w, h)
    if (w, h) != (size, size):
        left, top = (w - side) // 2, (h - side) // 2
        image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.BOX)
    return np.ascontiguousarray(np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0)


def integrate_folders(folders: list[Path]) -> tuple[pd.DataFrame, dict]:
    report = {"files_read": 0, "unreadable_files": 0, "files_outside_class_folders": 0, "ignored_files": 0,
              "duplicates_dropped": 0}
    rows: list[tuple[np.ndarray, str]] = []
    seen: set[str] = set()
    for folder in folders:
        folder = Path(folder)
        if not folder.exists():
            raise NotFound(f"image folder not found: {folder}")
        if not folder.is_dir():
            raise InvalidInput(f"{folder} is not a folder; street_scenes reads a folder with one sub-folder per class")
        class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        report["files_outside_class_folders"] += sum(1 for p in folder.iterdir() if p.is_file())
        if not class_dirs:
            raise InvalidInput(f"{folder} has no class sub-folders; expected <folder>/<label>/<image>.png")
        for class_dir in class_dirs:
            for path in sorted(class_dir.rglob("*")):
                if not path.is_file():
                    continue
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    report["ignored_files"] += 1
                    continue
                try:
                    image = load_image(path)
                except (UnidentifiedImageError, OSError, ValueError):
                    report["unreadable_files"] += 1
                    continue
                report["files_read"] += 1
                digest = hashlib.sha256(image.tobytes()).hexdigest()
                if digest in seen:
                    report["duplicates_dropped"] += 1
                    continue
                seen.add(digest)
                rows.append((image, class_dir.name))
    if not rows:
        raise InvalidInput(f"no readable image in {', '.join(str(f) for f in folders)} "
                           f"({report['unreadable_files']} unreadable, {report['ignored_files']} other files)")
    # image and label only: a frame minus its target is exactly the model input (registry gates rely on it)
    frame = pd.DataFrame(rows, columns=["image", "label"])
    counts = frame["label"].value_counts()
    if len(counts) < 2:
        raise InvalidInput(f"street_scenes needs at least two classes; found only {list(counts.index)}")
    if counts.min() < 2:
        raise InvalidInput(f"class '{counts.idxmin()}' has a single image; each class needs at least two "
                           "(one to train on, one to validate)")
    report["images"] = len(frame)
    report["per_class"] = {str(k): int(v) for k, v in counts.sort_index().items()}
    return frame, report
