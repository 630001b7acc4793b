"""Deterministic synthetic defect images with exact masks.

Product code, not a test helper: it feeds the tests, the shipped samples and
the training recipe of the demo model. A sample is a procedural texture with,
on anomalous samples, one drawn defect (scratch, spot, crack, hole or stain)
whose pixel mask is known exactly. Everything is a function of the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

TEXTURES = ("brushed", "granular", "woven", "rings", "cloudy")
DEFECTS = ("scratch", "spot", "crack", "hole", "stain")
_ROWS = ("upper", "middle", "lower")
_COLUMNS = ("left", "center", "right")


@dataclass(frozen=True)
class SyntheticSample:
    image: Image.Image
    mask: np.ndarray  # bool (height, width); all False for a normal sample
    texture: str
    defect: str | None
    location: str | None  # e.g. "upper left", from the mask's centroid on a 3x3 grid

    @property
    def anomalous(self) -> bool:
        return self.defect is not None

    def description(self) -> str:
        """Reasoning text a model can learn: what and where."""
        if self.defect is None:
            return f"the {self.texture} surface is clean and uniform with no visible defect"
        return f"there is a {self.defect} near the {self.location} of the {self.texture} surface"


def location_names() -> list[str]:
    """The nine places ``location_of`` can name, row by row."""
    return [_location_name(row, column) for row in _ROWS for column in _COLUMNS]


def description_corpus() -> list[str]:
    """Every description the generator can write (to train a tokenizer on whole words)."""
    names = location_names()
    locations = [n for n in names if n != "center"] + ["center"]  # this order trained the shipped tokenizer
    clean = [SyntheticSample(None, None, t, None, None).description() for t in TEXTURES]  # type: ignore[arg-type]
    return clean + [SyntheticSample(None, None, t, d, where).description()  # type: ignore[arg-type]
                    for t in TEXTURES for d in DEFECTS for where in locations]


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-9)


def texture(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Greyscale texture in [0, 1], (size, size)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = rng.uniform(0.35, 0.65)
    if kind == "brushed":
        streaks = ndimage.gaussian_filter1d(rng.standard_normal((size, size)), sigma=size / 6, axis=1, mode="wrap")
        field = 0.6 * streaks / (streaks.std() + 1e-9) + 0.2 * _smooth_noise(rng, size, 1.0)
        contrast = 0.05
    elif kind == "granular":
        field = _smooth_noise(rng, size, 1.2) + 0.5 * _smooth_noise(rng, size, 4.0)
        contrast = 0.06
    elif kind == "woven":
        period = rng.uniform(6, 12) / size
        angle = rng.uniform(0, np.pi)
        u = xx * np.cos(angle) + yy * np.sin(angle)
        v = -xx * np.sin(angle) + yy * np.cos(angle)
        field = np.sin(2 * np.pi * u / period) * np.sin(2 * np.pi * v / period) + 0.3 * _smooth_noise(rng, size, 1.0)
        contrast = 0.07
    elif kind == "rings":
        cx, cy = rng.uniform(-0.5, 1.5, size=2)
        radius = np.hypot(xx - cx, yy - cy)
        field = np.sin(2 * np.pi * radius * rng.uniform(8, 16) + 2 * _smooth_noise(rng, size, 6.0))
        field = field + 0.3 * _smooth_noise(rng, size, 1.0)
        contrast = 0.06
    elif kind == "cloudy":
        field = _smooth_noise(rng, size, size / 10) + 0.3 * _smooth_noise(rng, size, 1.5)
        contrast = 0.07
    else:
        raise ValueError(f"unknown texture {kind!r}; expected one of {TEXTURES}")
    return np.clip(base + contrast * field, 0.0, 1.0)


def _defect_mask(kind: str, size: int, rng: np.random.Generator, scale: float) -> np.ndarray:
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    margin = size * 0.15
    cx, cy = rng.uniform(margin, size - margin, size=2)
    extent = size * scale
    if kind == "scratch":
        angle = rng.uniform(0, np.pi)
        half = extent * rng.uniform(0.8, 1.4)
        dx, dy = np.cos(angle) * half, np.sin(angle) * half
        draw.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=255, width=max(2, int(size / 80)))
    elif kind == "spot":
        r = extent * rng.uniform(0.25, 0.45)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif kind == "crack":
        points = [(cx, cy)]
        angle = rng.uniform(0, 2 * np.pi)
        step = extent / 6
        for _ in range(12):
            angle += rng.normal(0, 0.5)
            x, y = points[-1]
            points.append((float(np.clip(x + step * np.cos(angle), 0, size - 1)),
                           float(np.clip(y + step * np.sin(angle), 0, size - 1))))
        draw.line(points, fill=255, width=max(2, int(size / 100)))
    elif kind == "hole":
        r = extent * rng.uniform(0.18, 0.3)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif kind == "stain":
        blob = _smooth_noise(rng, size, size / 24)
        yy, xx = np.mgrid[0:size, 0:size]
        falloff = np.hypot(xx - cx, yy - cy) / (extent * 0.6)
        return (blob * 0.35 - falloff + 1.0) > 0.25
    else:
        raise ValueError(f"unknown defect {kind!r}; expected one of {DEFECTS}")
    return np.asarray(canvas) > 127


def _paint_defect(grey: np.ndarray, mask: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    strength = rng.uniform(0.18, 0.4)
    sign = -1.0 if kind in ("crack", "hole") or rng.random() < 0.6 else 1.0
    if kind == "stain":
        soft = ndimage.gaussian_filter(mask.astype(np.float64), 2.0)
        return np.clip(grey + sign * strength * 0.8 * soft, 0, 1)
    if kind == "hole":
        return np.where(mask, np.clip(0.08 + 0.05 * grey, 0, 1), grey)
    return np.clip(grey + sign * strength * mask, 0, 1)


def _location_name(row: str, column: str) -> str:
    return "center" if (row, column) == ("middle", "center") else f"{row} {column}"


def location_of(mask: np.ndarray) -> str:
    ys, xs = np.nonzero(mask)
    height, width = mask.shape
    return _location_name(_ROWS[min(2, int(3 * ys.mean() / height))], _COLUMNS[min(2, int(3 * xs.mean() / width))])


def make_sample(seed: int, size: int = 168, anomalous: bool | None = None, defect: str | None = None,
                texture_kind: str | None = None) -> SyntheticSample:
    """One sample; ``anomalous=None`` lets the seed decide (half and half).

    ``defect`` / ``texture_kind`` pin the kinds (``defect`` implies anomalous);
    the rest still follows the seed.
    """
    rng = np.random.default_rng(seed)
    if anomalous is None:
        anomalous = bool(rng.random() < 0.5)
    anomalous = anomalous or defect is not None
    kind = TEXTURES[int(rng.integers(len(TEXTURES)))]
    if texture_kind is not None:
        if texture_kind not in TEXTURES:
            raise ValueError(f"unknown texture {texture_kind!r}; expected one of {TEXTURES}")
        kind = texture_kind
    grey = texture(kind, size, rng)
    tint = rng.uniform(0.85, 1.15, size=3)
    if not anomalous:
        mask = np.zeros((size, size), dtype=bool)
        defect = location = None
    else:
        drawn = DEFECTS[int(rng.integers(len(DEFECTS)))]
        if defect is not None and defect not in DEFECTS:
            raise ValueError(f"unknown defect {defect!r}; expected one of {DEFECTS}")
        defect = defect or drawn
        mask = np.zeros((size, size), dtype=bool)
        while mask.sum() < 12:
            mask = _defect_mask(defect, size, rng, scale=rng.uniform(0.12, 0.3))
        grey = _paint_defect(grey, mask, defect, rng)
        location = location_of(mask)
    rgb = np.clip(grey[..., None] * tint[None, None, :], 0, 1)
    image = Image.fromarray((rgb * 255).round().astype(np.uint8), mode="RGB")
    return SyntheticSample(image, mask, kind, defect, location)


def write_mvtec_layout(root: Path, category: str | None, seeds: range, size: int = 168) -> list[Path]:
    """Write samples as ``<category>/test/<good|defect>/`` with ground-truth masks.

    ``category=None`` files each sample under its texture, giving one MVTec
    category per texture.
    """
    written = []
    for seed in seeds:
        sample = make_sample(seed, size)
        folder = "good" if sample.defect is None else sample.defect
        category_name = category or sample.texture
        image_path = Path(root) / category_name / "test" / folder / f"{seed:06d}.png"
        image_path.parent.mkdir(parents=True, exist_ok=True)
        sample.image.save(image_path)
        written.append(image_path)
        if sample.defect is not None:
            mask_path = Path(root) / category_name / "ground_truth" / folder / f"{seed:06d}_mask.png"
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(sample.mask.astype(np.uint8) * 255, mode="L").save(mask_path)
    return written
