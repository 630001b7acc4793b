"""An image with the name it is recorded under: what crosses from the daemon's reader to the model.

Its own module (PIL only) so the daemon's main process can hand images to the model process without
importing the inspector, and with it torch and transformers.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image


@dataclass(frozen=True)
class NamedImage:
    source: str
    image: Image.Image
    load_s: float = 0.0
