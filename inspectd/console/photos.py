"""Pictures the console serves, found only through an inspection's row.

No path from a request reaches the file system: a picture is named by the
inspection id, its file comes from the row (``archived_path``, or the drop
folder in keep mode) and is served only when it resolves inside a configured
archive, failed or (keep mode) watched folder, read without following a link.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from inspectd.config import Settings
from inspectd.errors import InspectdError
from inspectd.inspection.images import decode_image, read_image_bytes
from inspectd.inspection.render import heat_layer, outline_layer

_MAX_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class PhotoRoots:
    folders: tuple[Path, ...]
    max_pixels: int

    @classmethod
    def of(cls, settings: Settings) -> PhotoRoots:
        folders = [settings.archive.folder, settings.archive.failed_folder]
        if settings.archive.mode == "keep":
            folders += [f.path for f in settings.watch.folders]
        return cls(tuple(Path(f).resolve() for f in folders), settings.images.max_pixels)

    def path_of(self, record: dict) -> Path | None:
        """The row's photo when it lies inside one of the folders, else None."""
        stored = record.get("archived_path") or record.get("source_path")
        if not stored:
            return None
        candidate = Path(stored)
        parent = candidate.parent.resolve()  # the folders may be links; the file itself must not be one
        if not any(parent == root or parent.is_relative_to(root) for root in self.folders):
            return None
        return parent / candidate.name

    def photo(self, record: dict) -> Image.Image | None:
        path = self.path_of(record)
        if path is None:
            return None
        try:
            return decode_image(read_image_bytes(path, _MAX_BYTES, follow_symlinks=False), str(path), self.max_pixels)
        except (InspectdError, OSError):
            return None


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
