"""Tile examples: a recipe whose bundle inspects tiles (``score.tiles`` > 1) trains on tiles too."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inspectd.bundle.manifest import ScoreSpec
from inspectd.data.drawn_defects import defect_noun
from inspectd.data.layouts import read_mvtec
from inspectd.data.synthetic import location_of, make_sample
from inspectd.training.line_data import (
    LabelledFolderData,
    drawn_cgro_images,
    split_folder,
    warmup_examples,
    write_drawn_validation,
)
from inspectd.training.tile_geometry import TileGeometry, source_size, tile_geometry
from tests.line_folder import write_line_folder

SIZE = 168
TILES = tile_geometry(ScoreSpec(tiles=2, tile_share=0.6), SIZE)
FRAME = 6  # px of black frame around each good photo of 200 px: a tile holds at most two of its sides
LOCATED = re.compile(r"there is a (?P<noun>.+) near the (?P<place>.+) of the tile surface")


def _folder(root: Path, good) -> Path:
    """``good(i)``: the i-th good photo (200 px); two defect kinds of real defective photos beside them."""
    for kind, count in (("good", 20), ("blowhole", 6), ("uneven", 4)):
        (root / kind).mkdir(parents=True)
        for i in range(count):
            image = good(i) if kind == "good" else make_sample(300 + i, 200, anomalous=True).image.convert("L")
            image.save(root / kind / f"{kind}-{i}.png")
    return root


def _framed(i: int) -> Image.Image:
    grey = np.asarray(make_sample(100 + i, 200, anomalous=False).image.convert("L")).copy()
    grey[:FRAME], grey[-FRAME:], grey[:, :FRAME], grey[:, -FRAME:] = 0, 0, 0, 0
    return Image.fromarray(grey, mode="L")


def _flat(i: int) -> Image.Image:
    return Image.new("L", (200, 200), 120 + 2 * i)


def _data(root: Path, **update) -> LabelledFolderData:
    return LabelledFolderData(kind="labelled_folder", path=root, image_size=SIZE, surface="tile",
                              validation_fraction=0.25, drawn_validation_images=6, **update)


@pytest.fixture
def framed(tmp_path) -> LabelledFolderData:
    return _data(_folder(tmp_path / "framed", _framed), cgro_drawn_images=40)


@pytest.fixture
def flat(tmp_path) -> LabelledFolderData:
    return _data(_folder(tmp_path / "flat", _flat), cgro_drawn_images=20)


def _is_tile(image: Image.Image) -> bool:
    """A whole framed photo is dark along all four sides; a tile of it along two at most."""
    grey = np.asarray(image.convert("L"), dtype=np.float64)
    sides = (grey[:2], grey[-2:], grey[:, :2], grey[:, -2:])
    return sum(side.mean() < 0.5 * np.median(grey) for side in sides) < 4


def _changed(image: Image.Image, above: int) -> np.ndarray:
    """Where a drawn defect changed a flat photo by more than ``above`` grey levels (its background is the most
    common value); a high ``above`` keeps the defect's core, without the soft edge drawn around its mask."""
    grey = np.asarray(image.convert("L"), dtype=np.int16)
    background = np.bincount(grey.ravel()).argmax()
    return np.abs(grey - background) > above


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _is_whole_photo_of(image: Image.Image, photos: list[np.ndarray]) -> bool:
    """``image`` is one of ``photos`` as augmented (flipped, brightness and contrast): a linear function of it."""
    grey = np.asarray(image.convert("L"), dtype=np.float64)
    flips = (lambda a: a, np.fliplr, np.flipud, lambda a: np.flipud(np.fliplr(a)))
    return any(_correlation(grey, flip(photo)) > 0.99 for photo in photos for flip in flips)


def test_the_source_size_is_where_a_tile_is_the_model_input():
    assert source_size(168, 0.6) == 280 and TILES == TileGeometry(2, 0.6, 168) and TILES.source_size == 280
    assert source_size(224, 0.5) == 448
    assert tile_geometry(ScoreSpec(), SIZE) is None  # tiles 1: whole photos only


def test_a_tile_of_a_photo_at_the_source_size_is_the_model_input_as_inspection_cuts_it():
    from inspectd.inspection.tiles import tile_side

    for image_size, tiles, share in ((168, 2, 0.6), (224, 3, 0.4), (168, 2, 0.55), (448, 2, 0.5), (168, 3, 0.7)):
        assert tile_side(source_size(image_size, share), tiles, share) == image_size


# sha256 of the examples, CGRO images and drawn validation made before tiles existed: an untiled recipe's data
# (hence its model) must be rebuilt bit for bit. Taken on tests/line_folder.py's folder.
UNTILED = {
    "warmup": "7ff3d2586dc0ee53e59130aa4e1ae14ca3954b4d7f18a718dfa8dd8600a3baf6",
    "cgro": "3e8879bb638b1b5623d70bd639a076efa701c2ff730838f347e03c28a8bd7747",
    "drawn": "0ee5dd01dc5d29833ce18d9ecb64cf1dcd705d6caa875bb0a843489d7d596165",
}


def test_without_tiles_the_data_is_byte_identical_to_before_tiles(tmp_path):
    data = LabelledFolderData(kind="labelled_folder", path=write_line_folder(tmp_path / "line"), image_size=56,
                              surface="tile", validation_fraction=0.25, drawn_validation_images=6,
                              cgro_drawn_images=4)
    split = split_folder(data)
    example = warmup_examples(data, split, 3, tiles=None)
    warmup = hashlib.sha256()
    for index in range(40):
        made = example(index)
        warmup.update(made.image.tobytes())
        warmup.update(made.reply.encode())
    cgro = hashlib.sha256()
    for image, mask in drawn_cgro_images(data, split, 3, tiles=None):
        cgro.update(image.tobytes())
        cgro.update(mask.tobytes())
    folder = write_drawn_validation(data, split, tmp_path / "drawn", 1, tiles=None)
    drawn = hashlib.sha256()
    for path in sorted(folder.rglob("*.png")):
        drawn.update(str(path.relative_to(folder)).encode())
        drawn.update(np.asarray(Image.open(path)).tobytes())
    assert {"warmup": warmup.hexdigest(), "cgro": cgro.hexdigest(), "drawn": drawn.hexdigest()} == UNTILED


def test_a_share_of_the_good_examples_are_tiles_and_real_defective_photos_stay_whole(framed):
    split = split_folder(framed)
    example = warmup_examples(framed, split, 3, tiles=TILES)
    made = [example(i) for i in range(400)]
    assert all(m.image.size == (SIZE, SIZE) for m in made)
    good = [m for m in made if "<answer>no</answer>" in m.reply or " near the " in m.reply]
    real = [m for m in made if " on the tile surface" in m.reply]
    assert len(good) + len(real) == 400 and len(real) > 30
    tiles = [_is_tile(m.image) for m in good]
    assert abs(sum(tiles) / len(good) - framed.tile_examples_share) < 0.08
    clean = [t for t, m in zip(tiles, good) if m.reply.endswith("<answer>no</answer>")]
    drawn = [t for t, m in zip(tiles, good) if " near the " in m.reply]
    assert 0 < sum(clean) < len(clean) and 0 < sum(drawn) < len(drawn)  # both clean and drawn ones are tiles
    # a real defective photo has no label for a tile of it: always the whole photo, as without tiles
    photos = [np.asarray(Image.open(i.path).convert("L").resize((SIZE, SIZE), Image.Resampling.BICUBIC),
                         dtype=np.float64) for i in split.train if i.anomalous]
    assert all(_is_whole_photo_of(m.image, photos) for m in real)
    # the detector itself: untiled, every good example is whole; the share setting moves the share
    untiled = warmup_examples(framed, split, 3, tiles=None)
    assert not any(_is_tile(untiled(i).image) for i in range(60) if " on the " not in untiled(i).reply)
    fewer = warmup_examples(framed.model_copy(update={"tile_examples_share": 0.0}), split, 3, tiles=TILES)
    assert not any(_is_tile(fewer(i).image) for i in range(60) if " on the " not in fewer(i).reply)


def test_a_drawn_tile_names_the_place_of_its_defect_within_the_tile(flat):
    """On flat photos a drawn defect is all that changes, so where it lies in the example is plain to see."""
    example = warmup_examples(flat, split_folder(flat), 5, tiles=TILES)
    checked = 0
    for index in range(300):
        made = example(index)
        found = LOCATED.search(made.reply)
        if found is None or found["noun"] == defect_noun("uneven"):  # a shading fades out beyond its mask
            continue
        assert location_of(_changed(made.image, 30)) == found["place"], (index, made.reply)
        checked += 1
    assert checked > 40


def test_drawn_cgro_images_are_tiles_as_often_and_their_masks_are_the_drawn_pixels(framed, flat):
    for data, seed in ((framed, 3), (flat, 4)):
        drawn = drawn_cgro_images(data, split_folder(data), seed, tiles=TILES)
        assert len(drawn) == data.cgro_drawn_images
        assert all(image.size == (SIZE, SIZE) and mask.shape == (SIZE, SIZE) and mask.dtype == bool
                   for image, mask in drawn)
        if data is framed:
            assert 0.25 < np.mean([_is_tile(image) for image, _ in drawn]) < 0.75
        else:  # the mask is where the image was drawn on, not on the photo the tile was cut from
            assert all(_changed(image, 3)[mask].mean() > 0.7 for image, mask in drawn)
    untiled = drawn_cgro_images(framed, split_folder(framed), 3, tiles=None)
    assert not any(_is_tile(image) for image, _ in untiled)


def test_the_drawn_validation_of_a_tiled_recipe_is_drawn_at_the_source_size(framed, tmp_path):
    split = split_folder(framed)
    for tiles, side in ((TILES, 280), (None, SIZE)):
        folder = write_drawn_validation(framed, split, tmp_path / f"drawn-{side}", seed=1, tiles=tiles)
        images = read_mvtec(folder).images
        assert len(images) == 6 and sum(i.anomalous for i in images) == 3
        for image in images:
            with Image.open(image.path) as photo:
                assert photo.size == (side, side)
            if image.anomalous:
                with Image.open(image.mask_path) as mask:
                    assert mask.size == (side, side) and np.asarray(mask).max() == 255


def _recipe(data: LabelledFolderData, tmp_path: Path, **score):
    from inspectd.training.recipe_config import RecipeConfig

    return RecipeConfig(name="tiles", output=tmp_path / "out", work_dir=tmp_path / "work", data=data,
                        score=ScoreSpec(**score))


def test_a_tiled_recipe_never_resumes_an_untiled_warmup(framed, tmp_path):
    from inspectd.training.train_stages import warmup_identity

    untiled = _recipe(framed, tmp_path)
    tiled = _recipe(framed, tmp_path, tiles=2)
    assert warmup_identity(tiled) != warmup_identity(untiled)
    assert warmup_identity(_recipe(framed, tmp_path, tiles=2, tile_share=0.7)) != warmup_identity(tiled)
    # untiled: the identity of before tiles existed, so a warm-up interrupted then still resumes
    assert warmup_identity(untiled) == untiled.model_dump(mode="json", include={"init", "model", "data"},
                                                          exclude={"data": {"tile_examples_share"}})


def test_only_a_labelled_folder_recipe_can_inspect_tiles(tmp_path):
    from inspectd.training.recipe_config import RecipeConfig

    with pytest.raises(ValueError, match="score.tiles needs data.kind labelled_folder"):
        RecipeConfig(name="tiles", output=tmp_path / "out", work_dir=tmp_path / "work", score=ScoreSpec(tiles=2))


def test_the_card_says_what_tiles_cost_and_which_examples_were_tiles(framed, tmp_path):
    from inspectd.training.recipe_card import _folder_sections

    tiled = _folder_sections(_recipe(framed, tmp_path, tiles=2))
    data, limits = "\n".join(tiled["data"]), "\n".join(tiled["limits"])
    assert "2x2 tiles of 60% of the photo's side" in limits and "so 4 more model runs per image" in limits
    assert "50% of the warm-up's good-image examples (clean and drawn) and of CGRO's drawn images" in data
    assert "from the photo at 280 px" in data and "drawn validation was drawn at 280 px" in data
    untiled = _folder_sections(_recipe(framed, tmp_path))
    assert "tile" not in "\n".join(untiled["data"]).replace("tile surface", "") and "tiles" not in "\n".join(
        untiled["limits"])
