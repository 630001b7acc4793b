"""``data.augmentation: lighting``: a warm-up that sees its parts under other lightings than they were shot in."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from inspectd.data.synthetic import location_of, make_sample
from inspectd.training.lighting_augment import augment_lighting
from inspectd.training.line_data import (
    LabelledFolderData,
    drawn_cgro_images,
    split_folder,
    warmup_examples,
    write_drawn_validation,
)
from tests.line_folder import write_line_folder

LOCATED = re.compile(r"there is a (?P<noun>.+) near the (?P<place>.+) of the tile surface")


def _grey(value: float, size: int = 168) -> Image.Image:
    return Image.fromarray(np.full((size, size), value, dtype=np.uint8), mode="L")


def test_lighting_varies_brightness_contrast_and_the_light_across_the_part():
    rng = np.random.default_rng(0)
    means, ramps = [], []
    for _ in range(200):
        grey = np.asarray(augment_lighting(_grey(128), rng), dtype=np.float64)
        means.append(grey.mean())
        ramps.append(max(abs(grey[:, :20].mean() - grey[:, -20:].mean()), abs(grey[:20].mean() - grey[-20:].mean())))
    # mild augmentation moves a flat grey part by at most 15 %; a lighting change moves it further, both ways
    assert min(means) < 128 * 0.85 and max(means) > 128 * 1.15
    # a light coming from one side brightens one edge against the other (mild never does)
    assert np.percentile(ramps, 75) > 10 and min(ramps) < 3


def test_lighting_is_a_pure_function_of_the_draws_and_keeps_size_and_greyscale():
    image = make_sample(5, 168, anomalous=True).image
    a = augment_lighting(image, np.random.default_rng([4, 2]))
    b = augment_lighting(image, np.random.default_rng([4, 2]))
    assert a.mode == "L" and a.size == (168, 168)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != augment_lighting(image, np.random.default_rng([4, 3])).tobytes()


def test_a_defect_near_the_border_of_the_photo_stays_in_view():
    """A real defective photo has only its image label: the crop must never cut its defect away. A dark spot
    8-12 % from a corner (a break or a fray sits at the border) is in every augmented view."""
    photo = np.full((168, 168), 140, dtype=np.uint8)
    photo[14:20, 14:20] = 10
    rng = np.random.default_rng(1)
    for _ in range(150):
        grey = np.asarray(augment_lighting(Image.fromarray(photo, mode="L"), rng), dtype=np.float64)
        spot = min(grey[:40, :40].min(), grey[:40, -40:].min(), grey[-40:, :40].min(), grey[-40:, -40:].min())
        assert spot < 0.5 * np.median(grey)


@pytest.fixture
def folder(tmp_path):
    return write_line_folder(tmp_path / "line")


def _data(folder, **extra) -> LabelledFolderData:
    return LabelledFolderData(kind="labelled_folder", path=folder, image_size=56, surface="tile",
                              validation_fraction=0.25, drawn_validation_images=6, cgro_drawn_images=4, **extra)


def test_lighting_changes_the_training_images_and_never_the_validation(folder, tmp_path):
    mild, lighting = _data(folder), _data(folder, augmentation="lighting")
    assert mild.augmentation == "mild"  # the default: recipes written before the option rebuild bit for bit
    split = split_folder(lighting)
    assert split == split_folder(mild)
    old, new = warmup_examples(mild, split, 3, tiles=None), warmup_examples(lighting, split, 3, tiles=None)
    def kind(reply: str) -> str:  # the mixture is drawn first: the same example is of the same kind
        return "clean" if "clean" in reply else "located" if " near the " in reply else "real"

    assert [kind(old(i).reply) for i in range(40)] == [kind(new(i).reply) for i in range(40)]
    assert sum(old(i).image.tobytes() != new(i).image.tobytes() for i in range(40)) >= 38
    assert any(a.tobytes() != b.tobytes() for (a, _), (b, _) in
               zip(drawn_cgro_images(mild, split, 3, tiles=None), drawn_cgro_images(lighting, split, 3, tiles=None)))
    # every build, whatever its augmentation, is judged on the same validation images
    first = write_drawn_validation(mild, split, tmp_path / "a", 1, tiles=None)
    second = write_drawn_validation(lighting, split, tmp_path / "b", 1, tiles=None)
    for path in sorted(first.rglob("*.png")):
        assert path.read_bytes() == (second / path.relative_to(first)).read_bytes()


def test_a_drawn_defect_is_drawn_after_the_lighting_so_its_reply_names_its_true_place(tmp_path):
    """The place in a drawn example's reply is where the defect is in the image the model sees. On flat grey
    good photos the lighting leaves a smooth image, so the drawn defect is what departs from it."""
    from scipy import ndimage

    root = write_line_folder(tmp_path / "line")
    for path in (root / "good").iterdir():
        _grey(130, 96).save(path)
    data = _data(root, augmentation="lighting")
    example = warmup_examples(data, split_folder(data), 5, tiles=None)
    places = []
    for index in range(120):
        made = example(index)
        match = LOCATED.search(made.reply)
        if match is None or "uneven" in match["noun"]:  # a low-contrast band: no sharper than the light
            continue
        grey = np.asarray(made.image.convert("L"), dtype=np.float64)
        departure = np.abs(grey - ndimage.gaussian_filter(grey, 8))
        places.append((match["place"], location_of(departure > 0.5 * departure.max())))
    assert len(places) >= 20
    assert sum(said == seen for said, seen in places) >= 0.9 * len(places)


def test_an_unknown_augmentation_is_refused_naming_the_field(folder):
    with pytest.raises(ValidationError, match="augmentation"):
        _data(folder, augmentation="strong")


def test_the_card_says_how_the_warmup_varied_its_images_and_a_mild_checkpoint_is_never_resumed(folder, tmp_path):
    from inspectd.training.recipe_card import _folder_sections
    from inspectd.training.recipe_config import RecipeConfig
    from inspectd.training.train_stages import warmup_identity

    def recipe(**extra):
        return RecipeConfig(name="line", output=tmp_path / "out", work_dir=tmp_path / "work",
                            data=_data(folder, **extra))

    lighting = "\n".join(_folder_sections(recipe(augmentation="lighting"))["data"])
    assert "augmented: flips, a crop of up to 8 % of a side, brightness, contrast, a light ramp, gamma)" in lighting
    assert "augmented: flips, brightness, contrast)" in "\n".join(_folder_sections(recipe())["data"])
    assert warmup_identity(recipe(augmentation="lighting")) != warmup_identity(recipe())
