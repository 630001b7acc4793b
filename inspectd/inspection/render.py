"""PNG outputs an engineer can open: the map, the mask and a heat overlay."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

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


def overlay_image(image: Image.Image, anomaly_map: np.ndarray, mask: np.ndarray | None = None,
                  label: str | None = None) -> Image.Image:
    """Heat over the photo, stronger where the map is high; mask outline in cyan; with ``label``, the verdict in
    a band above the photo, so that the map of a part judged normal (stretched to [0, 1] with ``min_max``) is
    not read as a defect."""
    base = np.asarray(image.convert("RGB"), dtype=np.float64)
    heat = heat_colours(anomaly_map).astype(np.float64)
    alpha = (0.25 + 0.5 * np.clip(anomaly_map, 0, 1))[..., None]
    blended = base * (1 - alpha) + heat * alpha
    if mask is not None and mask.any():
        blended[mask_outline(mask)] = OUTLINE_RGB
    overlay = Image.fromarray(blended.round().astype(np.uint8), mode="RGB")
    return _banner(overlay, label) if label else overlay


OUTLINE_RGB = (0, 255, 255)


def mask_outline(mask: np.ndarray) -> np.ndarray:
    """The mask's boundary pixels (in the mask, with a 4-neighbour outside it)."""
    mask = mask.astype(bool)
    inner = mask.copy()
    inner[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    return mask & ~inner


def heat_layer(anomaly_map: np.ndarray) -> Image.Image:
    """The overlay's heat as a transparent layer (the console stacks it over the photo)."""
    alpha = (0.25 + 0.5 * np.clip(anomaly_map, 0, 1)) * 255
    rgba = np.dstack([heat_colours(anomaly_map), alpha.round().astype(np.uint8)])
    return Image.fromarray(rgba, mode="RGBA")


def outline_layer(mask: np.ndarray) -> Image.Image:
    """The mask outline alone, on a transparent layer."""
    rgba = np.zeros((*mask.shape, 4), dtype=np.uint8)
    rgba[mask_outline(mask)] = (*OUTLINE_RGB, 255)
    return Image.fromarray(rgba, mode="RGBA")


def verdict_label(verdict: str, score: float | None, threshold: float | None) -> str:
    if score is None or threshold is None:
        return verdict.upper()
    return f"{verdict.upper()}  score {score:.2f} {'>=' if score >= threshold else '<'} {threshold:.2f}"


def _banner(image: Image.Image, text: str) -> Image.Image:
    """The photo below a dark band holding ``text`` (red for an anomalous verdict, green for normal, grey
    otherwise); a band added above, not drawn over the photo, hides none of the part."""
    draw = ImageDraw.Draw(image)
    size = max(10, image.height // 16)
    font = ImageFont.load_default(size=size)
    while size > 8 and draw.textlength(text, font=font) > image.width - size:  # narrow photos: smaller text
        size -= 1
        font = ImageFont.load_default(size=size)
    colour = (255, 80, 80) if text.startswith("ANOMALOUS") else (90, 230, 90) if text.startswith("NORMAL") \
        else (220, 220, 220)
    band = int(size * 1.5)
    framed = Image.new("RGB", (image.width, image.height + band), (0, 0, 0))
    framed.paste(image, (0, band))
    ImageDraw.Draw(framed).text((size // 3, size // 4), text, fill=colour, font=font)
    return framed


def png_bytes(image: Image.Image) -> bytes:
    """zlib's default level: ``optimize=True`` made a 168 px map 0.5 % smaller for 2.9x the time (7.8 vs 2.7 ms),
    paid for every stored row."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
