"""PNG outputs an engineer can open: the map, the mask and a heat overlay."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# Anchor colours of a perceptually ordered black-red-yellow-white heat scale.
_HEAT_ANCHORS = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float64
)


def heat_colours(values: np.ndarray) -> np.ndarray:
    """Map [0, 1] values to RGB uint8 along the heat scale."""
    positions = np.linspace(0.0, 1.0, len(_HEAT_ANCHORS))
    clipped = np.clip(values, 0.0, 1.0)
    channels = [np.interp(clipped, positions, _HEAT_ANCHORS[:, c]) for c in range(3)]
    return np.stack(channels, axis=-1).round().astype(np.uint8)


def map_image(anomaly_map: np.ndarray) -> Image.Image:
    """8-bit greyscale: 0 = no evidence, 255 = the strongest evidence in this image."""
    return Image.fromarray((np.clip(anomaly_map, 0, 1) * 255).round().astype(np.uint8), mode="L")


def mask_image(mask: np.ndarray) -> Image.Image:
    return Image.fromarray(mask.astype(np.uint8) * 255, mode="L")


def overlay_image(image: Image.Image, anomaly_map: np.ndarray, mask: np.ndarray | None = None) -> Image.Image:
    """Heat over the photo, stronger where the map is high; mask outline in cyan."""
    base = np.asarray(image.convert("RGB"), dtype=np.float64)
    heat = heat_colours(anomaly_map).astype(np.float64)
    alpha = (0.25 + 0.5 * np.clip(anomaly_map, 0, 1))[..., None]
    blended = base * (1 - alpha) + heat * alpha
    if mask is not None and mask.any():
        inner = mask.copy()
        inner[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
        blended[mask & ~inner] = (0, 255, 255)
    return Image.fromarray(blended.round().astype(np.uint8), mode="RGB")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
