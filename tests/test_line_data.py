"""Training data from a plant's labelled OK/NG folder: split, drawn defects, warm-up texts."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from inspectd.data.drawn_defects import DRAWN_KINDS, draw_defect
from inspectd.data.layouts import read_mvtec
from inspectd.data.synthetic import make_sample
from inspectd.training.line_data import (
    LabelledFolderData,
    cgro_images,
    split_folder,
    warmup_examples,
    write_drawn_validation,
    write_validation_folder,
)
from tests.line_folder import write_line_folder


@pytest.fixture
def data(tmp_path):
    root = write_line_folder(tmp_path / "line")
    return LabelledFolderData(kind="labelled_folder", path=root, image_size=56, surface="tile",
                              validation_fraction=0.25, drawn_validation_images=6)


def test_split_is_stratified_disjoint_and_deterministic(data):
    split = split_folder(data)
    assert split.facts() == {"train_good": 15, "train_defective": 7, "validation_good": 5, "validation_defective": 3}
    assert {i.defect for i in split.validation if i.anomalous} == {"blowhole", "uneven"}
    assert not {i.path for i in split.train} & {i.path for i in split.validation}
    assert split_folder(data) == split
    other = split_folder(data.model_copy(update={"split_seed": 1}))
    assert {i.path for i in other.validation} != {i.path for i in split.validation}


def test_warmup_examples_are_reproducible_and_say_what_they_show(data):
    split = split_folder(data)
    example = warmup_examples(data, split, seed=3, tiles=None)
    replies = [example(i).reply for i in range(60)]
    assert replies == [warmup_examples(data, split, seed=3, tiles=None)(i).reply for i in range(60)]
    clean = [r for r in replies if r.endswith("<answer>no</answer>")]
    located = [r for r in replies if " near the " in r]
    unlocated = [r for r in replies if " on the tile surface" in r]
    assert clean and located and unlocated and len(clean) + len(located) + len(unlocated) == 60
    assert all("the tile surface is clean" in r for r in clean)
    assert all(r.endswith("<answer>yes</answer>") for r in located + unlocated)
    # A real defective image is named after its folder, and never given a place (none is known).
    assert all(("blowhole" in r or "uneven" in r) for r in unlocated)
    assert example(0).image.size == (56, 56)
    images = cgro_images(data, split)
    assert [label for _, label in images] == [i.anomalous for i in split.train]


@pytest.mark.parametrize("kind", DRAWN_KINDS)
def test_drawn_defects_change_only_pixels_near_their_mask(kind):
    image = make_sample(7, 112, anomalous=False).image.convert("L")
    drawn = draw_defect(image, np.random.default_rng(5), kind)
    assert drawn.kind == kind and drawn.mask.shape == (112, 112) and drawn.mask.any()
    before = np.asarray(image, dtype=np.int16)
    after = np.asarray(drawn.image, dtype=np.int16)
    changed = np.abs(after - before) > 12
    from scipy import ndimage

    near = ndimage.binary_dilation(drawn.mask, iterations=8 if kind != "uneven" else 40)
    assert changed.any() and not (changed & ~near).any()


def test_uneven_is_drawn_as_a_reground_band_or_as_shading():
    """Real "uneven" tiles show a re-ground band: straight edges, brighter, stronger streaks."""
    from scipy import ndimage

    image = make_sample(7, 112, anomalous=False).image.convert("L")
    before = np.asarray(image, dtype=np.float64)
    bands = 0
    for seed in range(12):
        drawn = draw_defect(image, np.random.default_rng(seed), "uneven")
        after = np.asarray(drawn.image, dtype=np.float64)
        outside = ~ndimage.binary_dilation(drawn.mask, iterations=4)
        if np.abs(after - before)[outside].max() > 1:
            continue  # shading: a soft blob or band whose edge fades out
        bands += 1  # a band with a sharp edge: nothing changes beyond it
        assert drawn.mask.all(axis=0).any() or drawn.mask.all(axis=1).any()  # open-ended or edge to edge
        inside = ndimage.binary_erosion(drawn.mask, iterations=3)
        gradient_before = np.hypot(*np.gradient(before))[inside].mean()
        gradient_after = np.hypot(*np.gradient(after))[inside].mean()
        assert gradient_after > 1.2 * gradient_before  # the streaks inside the band are stronger
    assert 0 < bands < 12  # both styles occur


def test_validation_folders_hold_the_held_out_images_and_exact_drawn_masks(data, tmp_path):
    split = split_folder(data)
    folder = write_validation_folder(split, tmp_path / "validation")
    written = sorted(p.name for p in folder.rglob("*.png"))
    assert written == sorted(i.path.name for i in split.validation)
    drawn = read_mvtec(write_drawn_validation(data, split, tmp_path / "drawn", seed=1, tiles=None))
    assert sum(i.anomalous for i in drawn.images) == 3 and len(drawn.images) == 6
    for image in drawn.images:
        if image.anomalous:
            with Image.open(image.mask_path) as mask:
                assert mask.size == (56, 56) and np.asarray(mask).max() == 255


def test_a_fixed_drawn_validation_seed_judges_builds_of_other_warmup_seeds_on_one_set(data, tmp_path):
    split = split_folder(data)

    def drawn_pixels(settings, warmup_seed, name):
        seed = settings.validation_draw_seed(warmup_seed)
        folder = write_drawn_validation(settings, split, tmp_path / name, seed=seed, tiles=None)
        return [np.asarray(Image.open(p)) for p in sorted(folder.rglob("*.png"))]

    assert data.validation_draw_seed(8) == 8  # unset: follows the warm-up seed, as before the setting existed
    follows = [drawn_pixels(data, s, f"follows-{s}") for s in (7, 8)]
    assert any((a != b).any() for a, b in zip(*follows))
    fixed = data.model_copy(update={"drawn_validation_seed": 7})
    pinned = [drawn_pixels(fixed, s, f"fixed-{s}") for s in (7, 8)]
    assert all((a == b).all() for a, b in zip(*pinned)) and all((a == b).all() for a, b in zip(follows[0], pinned[1]))


def test_folder_settings_are_checked_naming_the_field(tmp_path):
    with pytest.raises(ValueError, match="multiple of 28"):
        LabelledFolderData(kind="labelled_folder", path=tmp_path, image_size=100)
    with pytest.raises(ValueError, match="clean_share \\+ drawn_share"):
        LabelledFolderData(kind="labelled_folder", path=tmp_path, clean_share=0.7, drawn_share=0.5)
