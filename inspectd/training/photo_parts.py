"""Which photos of a labelled folder show the same physical part (``data.parts_file``).

A line's camera often photographs one part several times: under several
lightings, from both sides, again after a re-inspection. Split photo by photo,
the validation then holds other photos of parts the model was trained on, and
its figures say how well the model recognises those parts, not how it judges a
new one. The magnetic-tile folder is such a case: each tile was photographed
under up to six lightings (``exp1`` .. ``exp6`` with consecutive crop numbers),
and a photo-by-photo split put another photo of the same tile in training for
about nine validation photos in ten.

The parts file is a CSV with the columns ``photo`` (the photo's path under the
folder, e.g. ``crack/0001.jpg``) and ``part`` (any id: a serial number, a
tray position). A photo it does not list is a part of its own. Training code:
the daemon never imports it.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from inspectd.data.layouts import GOOD, DatasetError, LabelledImage

COLUMNS = ("photo", "part")


def photo_key(image: LabelledImage, root: Path) -> str:
    """The photo's name in a parts file: its path under the folder, with ``/``."""
    return image.path.relative_to(root).as_posix()


def read_parts_file(path: Path, root: Path, images: Sequence[LabelledImage]) -> dict[str, str]:
    """``{photo key: part id}`` for the photos the file lists; every error names the file, the row and the value."""
    if not path.is_file():
        raise DatasetError(f"data.parts_file {path}: no such file")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return _read_rows(csv.DictReader(handle), path, root, {photo_key(image, root): image for image in images})
    except (UnicodeDecodeError, csv.Error) as error:
        raise DatasetError(f"{path}: not a UTF-8 CSV file ({error})") from error


def _read_rows(reader: csv.DictReader, path: Path, root: Path, known: dict[str, LabelledImage]) -> dict[str, str]:
    """The rows of an open parts file; ``known``: the folder's photos by their key."""
    part_of: dict[str, str] = {}
    folder_of_part: dict[str, tuple[str, str]] = {}  # part -> (its folder, the photo that put it there)
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise DatasetError(f"{path}: needs the columns {', '.join(COLUMNS)} in its first line; it has "
                           f"{', '.join(reader.fieldnames or []) or 'none'}")
    for row in reader:
        line = reader.line_num
        photo, part = (row["photo"] or "").strip(), (row["part"] or "").strip()
        if not photo or not part:
            raise DatasetError(f"{path} line {line}: photo and part must both be given (got {photo!r}, "
                               f"{part!r})")
        if photo not in known:
            raise DatasetError(f"{path} line {line}: photo {photo!r} is not an image of {root}")
        if part_of.get(photo, part) != part:
            raise DatasetError(f"{path} line {line}: photo {photo!r} is given twice, as part "
                               f"{part_of[photo]!r} and as part {part!r}")
        folder = known[photo].defect or GOOD
        first = folder_of_part.setdefault(part, (folder, photo))
        if first[0] != folder:
            raise DatasetError(f"{path} line {line}: part {part!r} has photos in two folders, {first[1]!r} "
                               f"and {photo!r}; a part has one label, so its photos belong in one folder")
        part_of[photo] = part
    return part_of


def parts_in_order(images: Sequence[LabelledImage], root: Path, part_of: dict[str, str]) -> list[list[LabelledImage]]:
    """The photos of one folder grouped by part, each group in the order of ``images`` and the groups in the
    order of their first photo, so that with no parts file every photo is a group and the order is unchanged."""
    groups: dict[str, list[LabelledImage]] = {}
    for image in images:
        key = photo_key(image, root)
        groups.setdefault(part_of.get(key, "\0" + key), []).append(image)
    return list(groups.values())
