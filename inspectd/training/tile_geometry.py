"""What tiled inspection reads, as the training data must show it to the model.

A bundle whose ``score.tiles`` is N > 1 inspects the whole photo and N x N
overlapping tiles of it, each ``tile_share`` of the photo's side, cut at full
resolution and read at the model's input size (``ScoreSpec``). A model trained
on whole photos only has never seen such a tile and scores good tiles as
defective, so a recipe with tiles trains on tiles too: crops of its good
photos loaded at the *source size*, the size at which a tile is exactly the
model's input, no resize. Training code: the daemon never imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from inspectd.bundle.manifest import ScoreSpec


def source_size(image_size: int, tile_share: float) -> int:
    """The side (px) a photo is loaded at so that a tile of ``tile_share`` of it is ``image_size`` px: the
    photo as tiled inspection cuts it, at the resolution the model reads a tile (the one place this is reckoned)."""
    return round(image_size / tile_share)


@dataclass(frozen=True)
class TileGeometry:
    """A recipe's tiled inspection: ``tiles`` x ``tiles`` tiles of ``tile_share`` of the photo's side, each read
    at ``image_size`` px."""

    tiles: int
    tile_share: float
    image_size: int

    @property
    def source_size(self) -> int:
        return source_size(self.image_size, self.tile_share)


def tile_geometry(score: ScoreSpec, image_size: int) -> TileGeometry | None:
    """The tiles a bundle of this ``score`` inspects at ``image_size``; None when it inspects whole photos only."""
    if score.tiles == 1:
        return None
    return TileGeometry(tiles=score.tiles, tile_share=score.tile_share, image_size=image_size)


def random_tile(photo: Image.Image, size: int, rng: np.random.Generator) -> Image.Image:
    """A ``size`` x ``size`` crop of ``photo`` at a place drawn from ``rng`` (two draws: left, then top).

    Inference cuts its tiles at fixed places; a drawn place shows the model every part of the photo at every
    place in a tile, so it needs no knowledge of where the grid falls."""
    left = int(rng.integers(photo.width - size + 1))
    top = int(rng.integers(photo.height - size + 1))
    return photo.crop((left, top, left + size, top + size))
