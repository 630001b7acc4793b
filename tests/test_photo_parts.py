"""Photos of one part stay on one side of the split (``data.parts_file``), so validation judges new parts."""

from __future__ import annotations

import csv
import sys

import pytest
import yaml

from inspectd.data.layouts import DatasetError
from inspectd.data.synthetic import make_sample
from inspectd.training.line_data import LabelledFolderData, split_folder
from inspectd.training.look_alike import look_alike_count
from inspectd.training.recipe_config import load_recipe
from tests.conftest import REPO, SHARED_DATASETS

COUNTS = {"good": 24, "blowhole": 9, "uneven": 6}


def _folder(root):
    """Each part photographed three times (as a line that shoots a part under three lightings)."""
    for kind, count in COUNTS.items():
        (root / kind).mkdir(parents=True)
        for i in range(count):
            gain = 0.7 + 0.15 * (i % 3)  # the part under another lighting
            make_sample(100 + i // 3, 64, anomalous=kind != "good").image.convert("L").point(
                lambda v, gain=gain: min(255, round(v * gain + 12))).save(root / kind / f"{kind}-{i:02d}.png")
    return root


def _parts_file(path, rows, header=("photo", "part")):
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _data(root, **update):
    return LabelledFolderData(kind="labelled_folder", path=root, image_size=56, surface="tile",
                              validation_fraction=0.25, **update)


@pytest.fixture
def line(tmp_path):
    root = _folder(tmp_path / "line")
    rows = [(f"{kind}/{kind}-{i:02d}.png", f"{kind}-part-{i // 3}") for kind, count in COUNTS.items()
            for i in range(count)]
    return root, _parts_file(tmp_path / "parts.csv", rows)


def test_every_part_lies_on_one_side_and_validation_keeps_its_share_of_each_kind(line):
    root, parts = line
    split = split_folder(_data(root, parts_file=parts))
    part = lambda image: (image.path.parent.name, int(image.path.stem.split("-")[1]) // 3)  # noqa: E731
    assert not {part(i) for i in split.train} & {part(i) for i in split.validation}
    # Whole parts until the share is reached: 6 of 24 good (2 parts); blowhole 2.25 of 9 and uneven 1.5 of 6
    # round to 2 photos each, which one part of 3 covers.
    assert split.facts() == {"train_good": 18, "train_defective": 9, "validation_good": 6,
                             "validation_defective": 6}
    assert {i.defect for i in split.validation if i.anomalous} == {"blowhole", "uneven"}
    assert split_folder(_data(root, parts_file=parts)) == split
    # Split photo by photo, the same folder puts photos of one part on both sides: what the parts file prevents.
    by_photo = split_folder(_data(root))
    assert {part(i) for i in by_photo.train} & {part(i) for i in by_photo.validation}


def test_without_a_parts_file_and_with_every_photo_its_own_part_the_split_is_the_same(line, tmp_path):
    root, _ = line
    singles = _parts_file(tmp_path / "singles.csv",
                          [(f"{kind}/{kind}-{i:02d}.png", f"{kind}{i}") for kind, count in COUNTS.items()
                           for i in range(count)])
    for seed in range(4):
        assert split_folder(_data(root, split_seed=seed, parts_file=singles)) == split_folder(
            _data(root, split_seed=seed))
    # A photo the file does not list is a part of its own.
    partial = _parts_file(tmp_path / "partial.csv", [("good/good-00.png", "a"), ("good/good-01.png", "a")])
    split = split_folder(_data(root, parts_file=partial))
    sides = {i.path.name: side for side, images in (("train", split.train), ("validation", split.validation))
             for i in images}
    assert sides["good-00.png"] == sides["good-01.png"]


def test_validation_photos_whose_part_was_photographed_for_training_are_counted_as_look_alikes(line):
    root, parts = line
    part = lambda image: (image.path.parent.name, int(image.path.stem.split("-")[1]) // 3)  # noqa: E731
    by_photo = split_folder(_data(root))
    seen = {part(i) for i in by_photo.train}
    sibling_in_training = sum(part(i) in seen for i in by_photo.validation)
    assert sibling_in_training > 0
    paths = lambda images: [i.path for i in images]  # noqa: E731
    # Another lighting of the same part looks alike; other parts (other textures) do not.
    assert look_alike_count(paths(by_photo.validation), paths(by_photo.train)) == sibling_in_training
    by_part = split_folder(_data(root, parts_file=parts))
    assert look_alike_count(paths(by_part.validation), paths(by_part.train)) == 0


@pytest.mark.parametrize(("rows", "header", "says"), [
    ([("good/good-00.png", "a")], ("image", "part"), "needs the columns photo, part in its first line; it has "
                                                      "image, part"),
    ([("good/nope.png", "a")], ("photo", "part"), "line 2: photo 'good/nope.png' is not an image of"),
    ([("good/good-00.png", "")], ("photo", "part"), "line 2: photo and part must both be given"),
    ([("good/good-00.png", "a"), ("good/good-00.png", "b")], ("photo", "part"),
     "line 3: photo 'good/good-00.png' is given twice, as part 'a' and as part 'b'"),
    ([("good/good-00.png", "a"), ("uneven/uneven-00.png", "a")], ("photo", "part"),
     "line 3: part 'a' has photos in two folders, 'good/good-00.png' and 'uneven/uneven-00.png'"),
])
def test_a_wrong_parts_file_is_refused_naming_the_file_the_line_and_the_value(line, tmp_path, rows, header, says):
    root, _ = line
    bad = _parts_file(tmp_path / "bad.csv", rows, header)
    with pytest.raises(DatasetError, match="bad.csv") as caught:
        split_folder(_data(root, parts_file=bad))
    assert says in str(caught.value)
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"photo,part\n\xff\xfe\x00broken\n")
    with pytest.raises(DatasetError, match=r"binary.csv: not a UTF-8 CSV file"):
        split_folder(_data(root, parts_file=binary))
    with pytest.raises(DatasetError, match=r"data.parts_file .*missing.csv: no such file"):
        split_folder(_data(root, parts_file=tmp_path / "missing.csv"))


def test_a_recipe_reads_its_parts_file_beside_itself(line, tmp_path):
    root, parts = line
    recipe = tmp_path / "recipes" / "line.yaml"
    recipe.parent.mkdir()
    (recipe.parent / "line-parts.csv").write_bytes(parts.read_bytes())
    recipe.write_text(yaml.safe_dump({
        "name": "line", "output": "../out", "work_dir": "../work", "threads": 1,
        "data": {"kind": "labelled_folder", "path": str(root), "image_size": 56, "parts_file": "line-parts.csv"},
        "warmup": {"steps": 1, "batch_size": 1}, "cgro": {"max_steps": 1, "batch_size": 1, "generations": 2}}))
    config = load_recipe(recipe)
    assert config.data.parts_file == (recipe.parent / "line-parts.csv").resolve()


def test_plan_says_before_a_run_how_the_folder_splits_and_how_many_validation_photos_look_seen(line, tmp_path,
                                                                                                 capsys, caplog):
    from inspectd.training.cli import main

    root, parts = line
    recipe = {"name": "line", "output": str(tmp_path / "out"), "work_dir": str(tmp_path / "work"), "threads": 1,
              "init": str(REPO / "models" / "tiny-cgro"),
              "data": {"kind": "labelled_folder", "path": str(root), "image_size": 56, "validation_fraction": 0.25},
              "warmup": {"steps": 1, "batch_size": 1}, "cgro": {"max_steps": 1, "batch_size": 1, "generations": 2}}
    by_photo = tmp_path / "by-photo.yaml"
    by_photo.write_text(yaml.safe_dump(recipe))
    assert main(["plan", "--config", str(by_photo)]) == 0
    seen = look_alike_count([i.path for i in split_folder(_data(root)).validation],
                            [i.path for i in split_folder(_data(root)).train])
    out = capsys.readouterr().out
    assert ("Split: `line/` split once, stratified by folder (seed 0, 25% held out, photo by photo: no "
            "`data.parts_file`): training 18 good + 11 defective, validation 6 good + 4 defective.") in out
    assert f"{seen} of the 10 validation photos look like a training photo" in out and seen > 0
    assert "validation figures will overstate new parts" in caplog.text
    recipe["data"]["parts_file"] = str(parts)
    by_part = tmp_path / "by-part.yaml"
    by_part.write_text(yaml.safe_dump(recipe))
    assert main(["plan", "--config", str(by_part)]) == 0
    out = capsys.readouterr().out
    assert ("(seed 0, 25% held out, by part: 13 parts from `parts.csv`, each part's photos on one side): training "
            "18 good + 9 defective, validation 6 good + 6 defective. 0 of the 12 validation photos look like a "
            "training photo") in out
    assert "CGRO memory plan for" in out
    # Planned away from the photos (a GPU recipe on a laptop): the memory plan still comes, the split says why not.
    recipe["data"]["path"] = str(tmp_path / "not-here")
    del recipe["data"]["parts_file"]
    elsewhere = tmp_path / "elsewhere.yaml"
    elsewhere.write_text(yaml.safe_dump(recipe))
    assert main(["plan", "--config", str(elsewhere)]) == 0
    out = capsys.readouterr().out
    assert "Split: not read here (" in out and "not-here" in out and "CGRO memory plan for" in out


def test_the_magnetic_tile_parts_file_lists_every_training_photo_and_keeps_a_tiles_lightings_together():
    folder = SHARED_DATASETS / "magnetic_tile_train"
    if not folder.is_dir():
        pytest.skip(f"shared dataset not present at {folder}")
    shipped = REPO / "models" / "recipes" / "magnetic-tile-parts.csv"
    with shipped.open() as handle:
        part_of = {row["photo"]: row["part"] for row in csv.DictReader(handle)}
    photos = {p.relative_to(folder).as_posix() for p in folder.rglob("*.jpg")}
    assert set(part_of) == photos
    one_crack = ["crack/exp1_num_342140.jpg", "crack/exp2_num_342162.jpg", "crack/exp3_num_342176.jpg",
                 "crack/exp4_num_342190.jpg", "crack/exp6_num_342249.jpg"]
    assert len({part_of[p] for p in one_crack}) == 1
    assert part_of["crack/exp1_num_3191.jpg"] != part_of["crack/exp1_num_342140.jpg"]
    # The file is what the script writes from the folder: it cannot drift from its documented rule.
    sys.path.insert(0, str(REPO))
    from benchmarks.magnetic_tile_parts import tile_parts

    assert dict(tile_parts(folder, gap=200)) == part_of
    split = split_folder(LabelledFolderData(kind="labelled_folder", path=folder, parts_file=shipped))
    assert not {part_of[i.path.relative_to(folder).as_posix()] for i in split.train} & {
        part_of[i.path.relative_to(folder).as_posix()] for i in split.validation}
    # Split photo by photo, more than half the validation photos have a look-alike in training; by tile, few.
    by_photo = split_folder(LabelledFolderData(kind="labelled_folder", path=folder))
    paths = lambda images: [i.path for i in images]  # noqa: E731
    assert look_alike_count(paths(by_photo.validation), paths(by_photo.train)) > 0.5 * len(by_photo.validation)
    assert look_alike_count(paths(split.validation), paths(split.train)) < 0.05 * len(split.validation)
