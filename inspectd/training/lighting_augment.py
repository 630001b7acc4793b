"""Stronger augmentation for a line photographed under several lightings (``data.augmentation: lighting``).

Why: the magnetic-tile folders show each tile under up to six lightings, which differ by overall brightness,
contrast, a brightness ramp across the tile and where the tile sits in the frame. A warm-up that sees only
flips and a +-15 % brightness change learns the training tiles as they were lit; a new tile under another
light is what a line shows next. This view varies exactly those things, and keeps what a label says: the
whole part stays in view (at most 8 % of a side is cut), so a real defective photo keeps its defect, and a
defect drawn afterwards keeps its place.

Training code: the daemon never imports it.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def augment_lighting(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Flips (no transpose: a line's camera keeps the grinding streaks' direction), a crop of 92-100 % of each
    side resized back, brightness and contrast x0.75-1.3, a linear light ramp of up to +-17 % across the image
    in any direction, and gamma 0.75-1.33; greyscale out."""
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    width, height = image.size
    scale = rng.uniform(0.92, 1.0)
    crop_w, crop_h = max(1, round(width * scale)), max(1, round(height * scale))
    left = int(rng.integers(0, width - crop_w + 1))
    top = int(rng.integers(0, height - crop_h + 1))
    image = image.crop((left, top, left + crop_w, top + crop_h)).resize((width, height), Image.Resampling.BICUBIC)
    grey = np.asarray(image.convert("L"), dtype=np.float64) / 255.0
    mean = grey.mean()
    grey = (grey - mean) * rng.uniform(0.75, 1.3) + mean * rng.uniform(0.75, 1.3)
    angle, ramp = rng.uniform(0.0, 2 * math.pi), rng.uniform(0.0, 0.35)
    yy, xx = np.mgrid[0:height, 0:width]
    across = (xx / max(width - 1, 1) - 0.5) * math.cos(angle) + (yy / max(height - 1, 1) - 0.5) * math.sin(angle)
    grey = np.clip(grey * (1 + ramp * across), 0.0, 1.0) ** math.exp(rng.uniform(math.log(0.75), math.log(1.33)))
    return Image.fromarray((grey * 255).round().astype(np.uint8), mode="L")
