"""How many validation photos look like a training photo: the sign of one part photographed on both sides of the
split, which makes validation figures overstate what the model does on a new part.

Two photos "look alike" when their grey images, shrunk to 48 px and brought to zero mean and unit norm,
correlate at 0.97 or more: on the magnetic-tile folder, whose tiles were each photographed under up to six
lightings, 55 % of the validation photos of a photo-by-photo split do, 2-4 % with whole tiles held out
(``data.parts_file``). Different parts can look alike too (plain good tiles), so the count is a warning to read,
not a list of duplicates. Training code: the daemon never imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 48
LIKE = 0.97


def grey_signature(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        grey = np.asarray(image.convert("L").resize((SIDE, SIDE), Image.Resampling.BILINEAR), dtype=np.float64)
    centred = grey.ravel() - grey.mean()
    norm = np.linalg.norm(centred)
    return centred / norm if norm > 0 else centred  # a flat photo correlates with nothing


def look_alike_count(validation: Sequence[Path], train: Sequence[Path], like: float = LIKE) -> int:
    """Validation photos with at least one training photo whose signature correlates at ``like`` or more."""
    if not validation or not train:
        return 0
    held = np.stack([grey_signature(p) for p in validation])
    seen = np.stack([grey_signature(p) for p in train])
    return int(((held @ seen.T).max(axis=1) >= like).sum())
