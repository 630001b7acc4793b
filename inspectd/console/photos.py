"""Pictures the console serves: the photo as JPEG, the map and mask as transparent layers, a token's map.

The photo itself is found only through its row (``data/archived_photos.py``).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from inspectd.inspection.render import heat_layer, outline_layer


def jpeg(image: Image.Image, longest: int | None = None, quality: int = 85) -> bytes:
    image = image.convert("RGB")
    if longest is not None:
        image.thumbnail((longest, longest))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=False)
    return buffer.getvalue()


def heat_png(map_png: bytes) -> bytes:
    values = np.asarray(Image.open(io.BytesIO(map_png)).convert("L"), dtype=np.float64) / 255.0
    return png(heat_layer(values))


def outline_png(mask_png: bytes) -> bytes:
    return png(outline_layer(np.asarray(Image.open(io.BytesIO(mask_png)).convert("L")) > 127))


def token_png(grid_map: np.ndarray, size: tuple[int, int]) -> bytes:
    """One token's own attention, stretched to [0, 1] and scaled (nearest) to the photo: its cells as seen."""
    low, high = float(grid_map.min()), float(grid_map.max())
    values = (grid_map - low) / (high - low) if high > low else np.zeros_like(grid_map)
    grid = Image.fromarray((values * 255).round().astype(np.uint8), mode="L").resize(size, Image.Resampling.NEAREST)
    return png(heat_layer(np.asarray(grid, dtype=np.float64) / 255.0))
