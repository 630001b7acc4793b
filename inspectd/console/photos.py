"""Pictures the console serves: the photo as JPEG, the map and mask as transparent layers, a token's map.

The photo itself is found only through its row (``data/archived_photos.py``).

Every picture is at most ``LONGEST_SIDE`` pixels on its longest side: a browser shows the photo a few hundred
pixels wide, and a camera's 36 MP photo (or its full-size map) rendered whole cost 45 s and 3.5 GB a request.
The photo and all its layers are scaled to the same ``fitted`` size, so the layers the page stacks over the
photo (``width/height: 100 %``) line up with it exactly.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from inspectd.inspection.images import decode_image, fitted
from inspectd.inspection.render import heat_layer, outline_layer

LONGEST_SIDE = 2048  # photo.jpg and every layer; the page scales them down with CSS
THUMB_SIDE = 160

# heat_layer is pointwise in the map's value and a stored map has 256 levels: its colours once, looked up per pixel
# (a 12 MP map took 3.5 s through np.interp on float64; the table takes milliseconds).
_HEAT = np.asarray(heat_layer(np.arange(256, dtype=np.float64)[None, :] / 255.0))[0]


def photo_jpeg(data: bytes, name: str, max_pixels: int, longest: int = LONGEST_SIDE, quality: int = 85) -> bytes:
    """The photo as a JPEG of at most ``longest`` px; ``ImageError`` when it cannot be decoded or is too large."""
    return jpeg(decode_image(data, name, max_pixels, longest), quality=quality)


def jpeg(image: Image.Image, quality: int = 85) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def png(image: Image.Image) -> bytes:
    """zlib's default level: on a 2048 px heat layer 135 ms and 190 kB, level 1 90 ms and 440 kB; rendered once
    (``render_cache.py``), the smaller picture is the better buy for the cache and the wire."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=False)
    return buffer.getvalue()


def _grey(png_bytes: bytes, longest: int, resample: Image.Resampling) -> Image.Image:
    """A stored map or mask (8-bit, the photo's full size) scaled to ``fitted``: PNG has no reduced decode, but
    the 8-bit image is a third of the RGB photo and only the small one is coloured."""
    with Image.open(io.BytesIO(png_bytes)) as image:
        grey = image.convert("L")
    target = fitted(grey.size, longest)
    return grey if grey.size == target else grey.resize(target, resample, reducing_gap=2.0)


def heat_png(map_png: bytes, longest: int = LONGEST_SIDE) -> bytes:
    values = np.asarray(_grey(map_png, longest, Image.Resampling.BILINEAR))
    return png(Image.fromarray(_HEAT[values], mode="RGBA"))


def outline_png(mask_png: bytes, longest: int = LONGEST_SIDE) -> bytes:
    """The outline of the mask as scaled (area-averaged, then thresholded): one pixel wide at the served size."""
    return png(outline_layer(np.asarray(_grey(mask_png, longest, Image.Resampling.BOX)) > 127))


def token_png(grid_map: np.ndarray, size: tuple[int, int], longest: int = LONGEST_SIDE) -> bytes:
    """One token's own attention, stretched to [0, 1] and scaled (nearest) to the photo's ``fitted`` size: its
    cells as seen. Coloured on the grid, then scaled: the same pixels as colouring the scaled map."""
    low, high = float(grid_map.min()), float(grid_map.max())
    values = (grid_map - low) / (high - low) if high > low else np.zeros_like(grid_map)
    grid = Image.fromarray(_HEAT[(values * 255).round().astype(np.uint8)], mode="RGBA")
    return png(grid.resize(fitted(size, longest), Image.Resampling.NEAREST))
