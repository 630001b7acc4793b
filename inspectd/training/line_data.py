"""Training data from a plant's own labelled folder (``good/`` + one folder per defect kind).

Image-level labels only. The folder is split once, stratified by kind and
seeded, into a training part and a validation part that calibrates the
threshold and judges ReAL; with ``parts_file`` whole parts, so that photos
of one part never lie on both sides (``photo_parts``). What each stage sees:

- warm-up: a mixture of (a) good training images, replied "clean"; (b) good
  training images with a defect *drawn* on them (``drawn_defects``), replied
  with the kind and the place, which is known because we drew it; (c) real
  defective training images, replied with the kind from the folder name and no
  place (there is no pixel label to say where);
- CGRO: the real training images with their image-level labels, and optionally
  (``cgro_drawn_images``) good training images with a drawn defect whose exact
  mask feeds a localization reward;
- validation: the held-out real images (labels only, for the threshold) and
  the held-out good images with drawn defects (exact masks, to judge maps
  without any human pixel label).

A recipe whose bundle inspects tiles (``score.tiles`` > 1, ``tile_geometry``)
also trains on tiles: ``tile_examples_share`` of the good-image examples of (a)
and (b), and of CGRO's drawn images, are tiles of the photo at the tiles'
source size, a drawn defect drawn on the tile (its place is the tile's, which
is what the model sees). Real defective images stay whole: a tile of one has
no label (its defect may lie in another tile). The drawn validation is drawn
at the source size, where tiled inspection reads thin defects.

Training code: the daemon never imports it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import Field, model_validator

from inspectd.data.drawn_defects import DRAWN_KINDS, augment, defect_noun, draw_defect
from inspectd.data.layouts import GOOD, LabelledImage, read_labelled_folder
from inspectd.strict_model import StrictModel
from inspectd.training.lighting_augment import augment_lighting
from inspectd.training.photo_parts import parts_in_order, read_parts_file
from inspectd.training.tile_geometry import TileGeometry, random_tile
from inspectd.training.warmup_config import ReplyExample, reply_text


class LabelledFolderData(StrictModel):
    """The ``data:`` section of a recipe that learns a plant's line from its OK/NG folder."""

    kind: Literal["labelled_folder"]
    path: Path = Field(description="good/ + one folder per defect kind; image-level labels only")
    image_size: int = Field(168, ge=28, description="square input in px (a multiple of 28)")
    surface: str = Field("part", min_length=1, description="what the replies call the inspected surface")
    validation_fraction: float = Field(0.15, gt=0, lt=0.5)
    split_seed: int = 0
    parts_file: Path | None = Field(None, description=(
        "CSV with the columns photo (its path under `path`, e.g. crack/0001.jpg) and part (any id): photos of "
        "one physical part, e.g. shot under several lightings. The split keeps each part on one side, so the "
        "validation judges parts the model never saw; an unlisted photo is a part of its own. null: every photo "
        "is its own part (photos of one part then land on both sides, and validation overstates new parts)"))
    augmentation: Literal["mild", "lighting"] = Field("mild", description=(
        "how the warm-up varies its images (and CGRO its drawn-defect images). mild: flips and brightness / "
        "contrast x0.85-1.15. lighting: also a crop of 92-100 % of each side, brightness / contrast x0.75-1.3, "
        "a light ramp across the part and gamma, for a line whose parts are photographed under several "
        "lightings (a real defect stays in view; drawn defects are drawn after it, so their place stays true)"))
    clean_share: float = Field(0.5, ge=0, le=1, description="warm-up share of good images")
    drawn_share: float = Field(0.35, ge=0, le=1, description="warm-up share of good images with a drawn defect")
    # the rest of the warm-up are the real defective images
    drawn_validation_images: int = Field(200, ge=2, description="held-out good images with drawn defects")
    drawn_validation_seed: int | None = Field(None, description="seed of the defects drawn on the validation "
                                                                "images; null = warmup.seed. Fix it to compare "
                                                                "builds of several warm-up seeds on one set")
    cgro_drawn_images: int = Field(0, ge=0, description="CGRO: good training images with a drawn defect, rewarded "
                                                        "by ReAL's pixel AUROC on its exact mask (0 = labels only)")
    tile_examples_share: float = Field(0.5, ge=0, le=1, description=(
        "with score.tiles > 1 only: this share of the warm-up's good-image examples (clean and drawn) and of "
        "CGRO's drawn images are tiles, an image_size crop of the photo loaded at image_size / score.tile_share "
        "px (as tiled inspection reads it), a drawn defect drawn on the crop; the rest, and every real "
        "defective image, stay whole"))

    def validation_draw_seed(self, warmup_seed: int) -> int:
        return warmup_seed if self.drawn_validation_seed is None else self.drawn_validation_seed

    @model_validator(mode="after")
    def _check(self) -> LabelledFolderData:
        if self.clean_share + self.drawn_share > 1 + 1e-9:
            raise ValueError("clean_share + drawn_share must be at most 1")
        if self.image_size % 28:
            raise ValueError(f"image_size {self.image_size} is not a multiple of 28 (14 px patches merged 2x2)")
        return self


class ReviewedStoreData(LabelledFolderData):
    """The ``data:`` section of a recipe that learns from the engineers' reviews: the inspections reviewed in the
    console (label = the newest review, whatever the model said), exported once into ``work_dir/reviewed-data``
    (``good/``, ``defect/``, ``reviews.csv``) and then split and used as a labelled folder, validation included.
    A photo rewritten after its inspection, or removed by retention, is left out and counted."""

    kind: Literal["reviewed_store"]
    config: Path = Field(description="the inspectd config whose store and archive hold the reviewed inspections")
    since: datetime | None = Field(None, description="only inspections since this time (UTC)")
    camera: str | None = Field(None, description="only this camera's inspections")
    path: Path | None = Field(None, description="set by the recipe: the folder the reviewed rows were exported to "
                                                "(kept for the whole recipe, so its split never moves; a new "
                                                "work_dir takes new reviews)")


@dataclass(frozen=True)
class LineSplit:
    train: tuple[LabelledImage, ...]
    validation: tuple[LabelledImage, ...]
    parts: int  # the physical parts the photos show (= photos without a parts file)

    def facts(self) -> dict:
        count = lambda images, anomalous: sum(i.anomalous == anomalous for i in images)  # noqa: E731
        return {"train_good": count(self.train, False), "train_defective": count(self.train, True),
                "validation_good": count(self.validation, False),
                "validation_defective": count(self.validation, True)}


def split_folder(data: LabelledFolderData) -> LineSplit:
    """Stratified by folder (each defect kind and good), deterministic for a seed; whole parts (``parts_file``)
    go to validation until it holds ``validation_fraction`` of the folder's photos. Without a parts file every
    photo is a part, and the split is the one recipes made before parts existed."""
    dataset = read_labelled_folder(data.path)
    part_of = read_parts_file(data.parts_file, data.path, dataset.images) if data.parts_file else {}
    by_kind: dict[str, list[LabelledImage]] = {}
    for image in dataset.images:
        by_kind.setdefault(image.defect or GOOD, []).append(image)
    train, validation, count = [], [], 0
    rng = random.Random(data.split_seed)
    for kind in sorted(by_kind):
        parts = parts_in_order(sorted(by_kind[kind], key=lambda i: i.path.name), data.path, part_of)
        count += len(parts)
        rng.shuffle(parts)
        wanted = max(1, round(len(by_kind[kind]) * data.validation_fraction))
        held = 0
        for part in parts:
            (validation if held < wanted else train).extend(part)
            held += len(part)
    return LineSplit(tuple(train), tuple(validation), count)


def clean_reasoning(surface: str) -> str:
    return f"the {surface} surface is clean and uniform with no visible defect"


def located_reasoning(kind: str, location: str, surface: str) -> str:
    return f"there is a {defect_noun(kind)} near the {location} of the {surface} surface"


def unlocated_reasoning(kind: str, surface: str) -> str:
    return f"there is a {defect_noun(kind)} on the {surface} surface"


def reasoning_corpus(data: LabelledFolderData, kinds: list[str]) -> list[str]:
    """Every reasoning the warm-up can teach (for the reply-length check)."""
    from inspectd.data.synthetic import location_names

    places = location_names()
    return ([clean_reasoning(data.surface)]
            + [located_reasoning(k, p, data.surface) for k in DRAWN_KINDS for p in places]
            + [unlocated_reasoning(k, data.surface) for k in kinds])


class ImageCache:
    """Training images decoded and resized once (the folder fits in memory at model size)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._images: dict[Path, Image.Image] = {}

    def __call__(self, path: Path) -> Image.Image:
        if path not in self._images:
            with Image.open(path) as image:
                self._images[path] = image.convert("L").resize((self.size, self.size), Image.Resampling.BICUBIC)
        return self._images[path]


AUGMENTATION_WORDS = {"mild": "flips, brightness, contrast",
                      "lighting": "flips, a crop of up to 8 % of a side, brightness, contrast, a light "
                                  "ramp, gamma"}


def augmenter(data: LabelledFolderData):
    """The warm-up's augmentation, ``data.augmentation``: mild keeps the draws of the code before the option
    existed, so a recipe without it rebuilds its model bit for bit."""
    return augment_lighting if data.augmentation == "lighting" else augment


class GoodViews:
    """Augmented views of good photos at the model's input size: the whole photo, or with ``tiles`` (for
    ``data.tile_examples_share`` of the views) a tile of it as tiled inspection reads one.

    A view draws from the example's ``rng``, in this order: with tiles only, whole or tile; the photo; with a
    tile, its place; then the augmentation. Without tiles the draws are those of the code before tiles existed, so an untiled
    recipe's examples, and the model trained on them, are rebuilt bit for bit."""

    def __init__(self, data: LabelledFolderData, photos: list[Path], tiles: TileGeometry | None) -> None:
        self.photos = photos
        self.augment = augmenter(data)
        self.tile_examples_share = data.tile_examples_share
        self.whole = ImageCache(data.image_size)
        self.source = ImageCache(tiles.source_size) if tiles is not None else None

    def __call__(self, rng: np.random.Generator) -> Image.Image:
        if self.source is not None and rng.random() < self.tile_examples_share:
            photo = self.source(self.photos[int(rng.integers(len(self.photos)))])
            return self.augment(random_tile(photo, self.whole.size, rng), rng)
        return self.augment(self.whole(self.photos[int(rng.integers(len(self.photos)))]), rng)


def warmup_examples(data: LabelledFolderData, split: LineSplit, seed: int, *, tiles: TileGeometry | None):
    """``example(i)``: the i-th warm-up example, a pure function of (seed, i). ``tiles``: the recipe's tiled
    inspection (``tile_geometry``), whose tiles the good-image examples show too; None = whole photos only."""
    load = ImageCache(data.image_size)
    good_view = GoodViews(data, [i.path for i in split.train if not i.anomalous], tiles)
    defective = [i for i in split.train if i.anomalous]
    augment_real = augmenter(data)

    def example(index: int) -> ReplyExample:
        rng = np.random.default_rng([seed, index])
        draw = rng.random()
        if draw < data.clean_share or (not defective and draw >= data.clean_share + data.drawn_share):
            image = good_view(rng)
            return ReplyExample(image.convert("RGB"), reply_text(clean_reasoning(data.surface), False))
        if draw < data.clean_share + data.drawn_share:
            drawn = draw_defect(good_view(rng), rng)  # on the tile when a tile: its place is the tile's
            text = located_reasoning(drawn.kind, drawn.location, data.surface)
            return ReplyExample(drawn.image.convert("RGB"), reply_text(text, True))
        real = defective[int(rng.integers(len(defective)))]
        image = augment_real(load(real.path), rng)
        return ReplyExample(image.convert("RGB"), reply_text(unlocated_reasoning(real.defect or "defect",
                                                                                 data.surface), True))

    return example


def cgro_images(data: LabelledFolderData, split: LineSplit) -> list[tuple[Image.Image, bool]]:
    """The real training images with their image-level labels, at model size."""
    load = ImageCache(data.image_size)
    return [(load(image.path).convert("RGB"), image.anomalous) for image in split.train]


def drawn_cgro_images(data: LabelledFolderData, split: LineSplit, seed: int, *,
                      tiles: TileGeometry | None) -> list[tuple[Image.Image, np.ndarray]]:
    """Good training images, each with a defect drawn on it and its exact mask (CGRO's localization reward);
    with ``tiles``, ``data.tile_examples_share`` of them are tiles, the defect and its mask drawn on the tile."""
    good_view = GoodViews(data, sorted((i.path for i in split.train if not i.anomalous), key=lambda p: p.name),
                          tiles)
    out = []
    for index in range(data.cgro_drawn_images):
        rng = np.random.default_rng([seed, 2, index])  # warm-up draws use [seed, index]: other streams
        drawn = draw_defect(good_view(rng), rng)
        out.append((drawn.image.convert("RGB"), drawn.mask))
    return out


def write_validation_folder(split: LineSplit, folder: Path) -> Path:
    """The held-out real images as a labelled folder (for threshold calibration)."""
    for image in split.validation:
        target = folder / (image.defect or GOOD) / image.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(image.path.read_bytes())
    return folder


def write_drawn_validation(data: LabelledFolderData, split: LineSplit, folder: Path, seed: int, *,
                           tiles: TileGeometry | None) -> Path:
    """Held-out good images, half clean, half with a drawn defect and its exact mask (MVTec layout).

    Maps are judged here: no human pixel label exists, but a drawn defect's
    mask is exact. With ``tiles`` the images (and masks) are at the tiles'
    source size: the evaluation runs tiled inspection on them, and a thin
    defect drawn at the model's input size would be a blur at a tile's
    resolution.
    """
    good = sorted((i.path for i in split.validation if not i.anomalous), key=lambda p: p.name)
    load = ImageCache(data.image_size if tiles is None else tiles.source_size)
    category = folder / "drawn"
    for index in range(data.drawn_validation_images):
        rng = np.random.default_rng([seed, index])
        image = load(good[index % len(good)])
        name = f"{index:05d}.png"
        if index % 2 == 0:
            (category / "test" / GOOD).mkdir(parents=True, exist_ok=True)
            image.save(category / "test" / GOOD / name)
            continue
        drawn = draw_defect(image, rng)
        for sub in ("test", "ground_truth"):
            (category / sub / drawn.kind).mkdir(parents=True, exist_ok=True)
        drawn.image.save(category / "test" / drawn.kind / name)
        Image.fromarray(drawn.mask.astype(np.uint8) * 255, mode="L").save(
            category / "ground_truth" / drawn.kind / f"{index:05d}_mask.png")
    return folder
