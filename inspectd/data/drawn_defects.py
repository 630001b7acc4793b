"""Self-supervised anomaly synthesis: defects drawn onto a plant's own good images.

A plant has photos sorted into OK and not-OK and no pixel labels. To teach a
model *where* a defect is, we draw defects onto the OK photos, where the mask
is known because we drew it (the idea of DRAEM / CutPaste-style synthesis).
The kinds imitate what real surface defects look like on cast or sintered
parts, and are named after the defect folders of the magnetic-tile line:

  blowhole  a small dark pore with a soft edge
  crack     a thin dark random-walk line
  break     a chipped edge: a dark wedge cut into a border
  fray      a dark, irregular, sharp-edged area (noise-shaped)
  uneven    a re-ground band (straight edges, brighter, stronger streaks) or a
            large, low-contrast band or blob of shading

Everything is a function of the random generator handed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from inspectd.data.synthetic import location_of

DRAWN_KINDS = ("blowhole", "crack", "break", "fray", "uneven")
# What the reasoning calls each kind (also used for real defect folders of these names).
KIND_NOUNS = {
    "blowhole": "blowhole",
    "crack": "crack",
    "break": "break",
    "fray": "fray",
    "uneven": "uneven region",
}


@dataclass(frozen=True)
class DrawnDefect:
    image: Image.Image  # greyscale ("L"), same size as the input
    mask: np.ndarray  # bool (height, width)
    kind: str
    location: str  # "upper left" ... "center", from the mask's centroid on a 3x3 grid


def defect_noun(kind: str) -> str:
    return KIND_NOUNS.get(kind, kind)


def _noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return (field - field.mean()) / (field.std() + 1e-9)


def _blowhole(grey, rng):
    h, w = grey.shape
    size = min(h, w)
    r = size * rng.uniform(0.012, 0.04)
    cy, cx = rng.uniform(0.1 * h, 0.9 * h), rng.uniform(0.1 * w, 0.9 * w)
    yy, xx = np.mgrid[0:h, 0:w]
    aspect = rng.uniform(0.7, 1.4)
    distance = np.hypot((yy - cy) / aspect, xx - cx) / r
    core = np.clip(1.3 - distance, 0, 1) ** 0.7
    depth = rng.uniform(0.45, 0.85)
    out = grey * (1 - depth * core)
    return out, distance <= 1.0


def _crack(grey, rng):
    h, w = grey.shape
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    length = min(h, w) * rng.uniform(0.15, 0.45)
    steps = 14
    x, y = rng.uniform(0.15 * w, 0.85 * w), rng.uniform(0.15 * h, 0.85 * h)
    angle = rng.uniform(0, 2 * np.pi)
    points = [(x, y)]
    for _ in range(steps):
        angle += rng.normal(0, 0.45)
        x = float(np.clip(x + length / steps * np.cos(angle), 0, w - 1))
        y = float(np.clip(y + length / steps * np.sin(angle), 0, h - 1))
        points.append((x, y))
    draw.line(points, fill=255, width=max(1, int(round(min(h, w) * rng.uniform(0.006, 0.014)))))
    mask = np.asarray(canvas) > 127
    soft = ndimage.gaussian_filter(mask.astype(np.float64), 0.6)
    depth = rng.uniform(0.35, 0.7)
    return grey * (1 - depth * np.clip(soft * 1.5, 0, 1)), mask


def _break(grey, rng):
    h, w = grey.shape
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    side = rng.integers(4)  # top, bottom, left, right
    span = rng.uniform(0.12, 0.35)
    depth = rng.uniform(0.05, 0.16)
    along = rng.uniform(0.05, 0.95 - span)
    n = 6
    ts = np.linspace(along, along + span, n)
    inward = depth * np.sin(np.linspace(0, np.pi, n)) * rng.uniform(0.6, 1.0, n)
    if side in (0, 1):
        edge = 0.0 if side == 0 else h - 1.0
        sign = 1 if side == 0 else -1
        polygon = [(t * w, edge + sign * d * h) for t, d in zip(ts, inward)]
    else:
        edge = 0.0 if side == 2 else w - 1.0
        sign = 1 if side == 2 else -1
        polygon = [(edge + sign * d * w, t * h) for t, d in zip(ts, inward)]
    draw.polygon(polygon, fill=255)
    mask = np.asarray(canvas) > 127
    dark = rng.uniform(0.02, 0.12)
    return np.where(mask, dark + 0.05 * grey, grey), mask


def _fray(grey, rng):
    h, w = grey.shape
    size = min(h, w)
    cy, cx = rng.uniform(0.15 * h, 0.85 * h), rng.uniform(0.15 * w, 0.85 * w)
    radius = size * rng.uniform(0.06, 0.16)
    yy, xx = np.mgrid[0:h, 0:w]
    distance = np.hypot(yy - cy, xx - cx) / radius
    mask = (1.0 - distance + 0.35 * _noise(rng, (h, w), size / 30)) > 0
    labels, count = ndimage.label(mask)
    if count > 1:  # keep the component at the centre
        keep = labels[int(cy), int(cx)] or 1 + int(np.argmax(ndimage.sum(mask, labels, range(1, count + 1))))
        mask = labels == keep
    soft = ndimage.gaussian_filter(mask.astype(np.float64), 0.8)
    factor = rng.uniform(0.45, 0.75)
    return grey * (1 - (1 - factor) * soft), mask


def _shading(grey, rng):
    h, w = grey.shape
    size = min(h, w)
    yy, xx = np.mgrid[0:h, 0:w]
    if rng.random() < 0.5:  # a band across the part
        angle = rng.uniform(0, np.pi)
        offset = rng.uniform(0.3, 0.7)
        u = (xx / w - 0.5) * np.cos(angle) + (yy / h - 0.5) * np.sin(angle) + 0.5
        field = np.exp(-(((u - offset) / rng.uniform(0.08, 0.18)) ** 2))
    else:  # a broad blob
        cy, cx = rng.uniform(0.25 * h, 0.75 * h), rng.uniform(0.25 * w, 0.75 * w)
        radius = size * rng.uniform(0.18, 0.35)
        field = np.exp(-((np.hypot(yy - cy, xx - cx) / radius) ** 2))
    field = field * (1 + 0.2 * _noise(rng, (h, w), size / 12))
    strength = rng.uniform(0.15, 0.3) * (-1 if rng.random() < 0.7 else 1)
    mask = field >= 0.5
    return grey * (1 + strength * field), mask


def _ground_band(grey, rng):
    """A re-ground band: straight, slightly tilted edges, brighter, its grinding streaks stronger."""
    h, w = grey.shape
    yy, xx = np.mgrid[0:h, 0:w]
    across = rng.random() < 0.8  # most bands run across the grinding direction (horizontal edges)
    u, v, length = (yy, xx, h) if across else (xx, yy, w)
    tilt = np.tan(rng.uniform(-0.12, 0.12))
    start = rng.uniform(0.1, 0.75) * length
    width = rng.uniform(0.15, 0.4) * length
    edge = u - (v - v.mean()) * tilt
    if rng.random() < 0.3:  # open on one side: the band runs to the part's border
        inside = edge >= start if rng.random() < 0.5 else edge <= start + width
    else:
        inside = (edge >= start) & (edge <= start + width)
    soft = ndimage.gaussian_filter(inside.astype(np.float64), rng.uniform(0.5, 1.5))
    local = ndimage.gaussian_filter(grey, min(h, w) / 25)
    gain = rng.uniform(1.4, 2.2)
    shift = rng.uniform(0.1, 0.3) * (1 if rng.random() < 0.8 else -1)
    reground = (local + gain * (grey - local)) * (1 + shift)
    return grey + soft * (reground - grey), inside


def _uneven(grey, rng):
    return (_ground_band if rng.random() < 0.6 else _shading)(grey, rng)


_DRAWERS = {"blowhole": _blowhole, "crack": _crack, "break": _break, "fray": _fray, "uneven": _uneven}


def draw_defect(image: Image.Image, rng: np.random.Generator, kind: str | None = None) -> DrawnDefect:
    """One drawn defect on a copy of ``image`` (converted to greyscale)."""
    if kind is None:
        kind = DRAWN_KINDS[int(rng.integers(len(DRAWN_KINDS)))]
    if kind not in _DRAWERS:
        raise ValueError(f"unknown drawn defect {kind!r}; expected one of {DRAWN_KINDS}")
    grey = np.asarray(image.convert("L"), dtype=np.float64) / 255.0
    mask = np.zeros(grey.shape, dtype=bool)
    for _ in range(20):  # a drawing clipped to nothing is drawn again
        drawn, mask = _DRAWERS[kind](grey, rng)
        if mask.sum() >= 4:
            break
    else:
        raise ValueError(f"could not draw a visible {kind} on a {image.size} image")
    out = Image.fromarray((np.clip(drawn, 0, 1) * 255).round().astype(np.uint8), mode="L")
    return DrawnDefect(out, mask, kind, location_of(mask))


def augment(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Flips and a mild brightness / contrast change: variation a line's camera also shows."""
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    grey = np.asarray(image.convert("L"), dtype=np.float64)
    mean = grey.mean()
    grey = (grey - mean) * rng.uniform(0.85, 1.15) + mean * rng.uniform(0.85, 1.15)
    return Image.fromarray(np.clip(grey, 0, 255).round().astype(np.uint8), mode="L")
