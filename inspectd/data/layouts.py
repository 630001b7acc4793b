"""Readers for labelled image folders: the MVTec AD layout and a plain good/other layout.

MVTec AD (also WFDD, SDD, DTD-Synthetic conversions):
``<category>/test/<good|defect>/<name>.<ext>`` with
``<category>/ground_truth/<defect>/<name>_mask.png``. A dataset root may hold
several categories, or be a single category folder itself.

Plain labelled folder (image-level labels only: what a plant has, for
training and for ``inspectd eval``): ``<root>/good/*`` is normal, every other
subfolder is anomalous, its name the defect kind (``defect/`` alone is one
kind). Only ``good`` means normal (an ``ok/`` folder beside it is one more
defect kind); a folder without ``good/`` is refused, never guessed.

Handling, documented: files whose extension is not an image format are
skipped and reported in ``skipped``; a defect image without its mask, or a
mask whose size differs from its image, is an error naming both files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from inspectd.errors import InspectdError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
GOOD = "good"


class DatasetError(InspectdError):
    """A dataset folder does not follow its layout; the message names the file."""


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    anomalous: bool
    category: str
    defect: str | None
    mask_path: Path | None = None


MVTEC = "mvtec"
LABELLED = "labelled"


@dataclass(frozen=True)
class Dataset:
    """``layout``: ``mvtec`` (every defect image has its mask) or ``labelled`` (no masks)."""

    name: str
    images: tuple[LabelledImage, ...]
    skipped: tuple[Path, ...] = field(default_factory=tuple)
    layout: str = MVTEC

    def categories(self) -> list[str]:
        return sorted({image.category for image in self.images})


def _images_in(folder: Path, skipped: list[Path]) -> list[Path]:
    found = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            found.append(path)
        elif path.is_file():
            skipped.append(path)
    return found


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, SyntaxError) as exc:
        raise DatasetError(f"{path}: cannot read image header ({exc})") from exc


def _mvtec_category(folder: Path, skipped: list[Path], check_sizes: bool) -> list[LabelledImage]:
    test = folder / "test"
    if not test.is_dir():
        raise DatasetError(f"{folder}: no test/ folder; not an MVTec-layout category")
    images = []
    for kind in sorted(p for p in test.iterdir() if p.is_dir()):
        anomalous = kind.name != GOOD
        for path in _images_in(kind, skipped):
            mask = None
            if anomalous:
                mask = folder / "ground_truth" / kind.name / f"{path.stem}_mask.png"
                if not mask.is_file():
                    raise DatasetError(f"{path}: defect image without its mask (expected {mask})")
                if check_sizes and _image_size(mask) != _image_size(path):
                    raise DatasetError(
                        f"{mask}: mask is {_image_size(mask)} but {path.name} is {_image_size(path)} (width, height)"
                    )
            images.append(LabelledImage(path, anomalous, folder.name, kind.name if anomalous else None, mask))
    return images


def read_mvtec(root: Path, name: str | None = None, check_sizes: bool = True) -> Dataset:
    """A dataset root with category folders, or one category folder."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder does not exist")
    skipped: list[Path] = []
    if (root / "test").is_dir():
        categories = [root]
    else:
        categories = sorted(p for p in root.iterdir() if p.is_dir() and (p / "test").is_dir())
        if not categories:
            raise DatasetError(f"{root}: neither a category (test/ inside) nor a root of categories")
    images = [image for category in categories for image in _mvtec_category(category, skipped, check_sizes)]
    if not images:
        raise DatasetError(f"{root}: no images found")
    return Dataset(name or root.name, tuple(images), tuple(skipped))


def read_labelled_folder(root: Path, name: str | None = None) -> Dataset:
    """``good/`` = normal, any other subfolder = anomalous; no masks."""
    root = Path(root)
    if not (root / GOOD).is_dir():
        raise DatasetError(f"{root}: no good/ folder; a labelled folder needs good/ and one folder per defect kind")
    skipped: list[Path] = []
    images = []
    for kind in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        anomalous = kind.name != GOOD
        for path in _images_in(kind, skipped):
            images.append(LabelledImage(path, anomalous, root.name, kind.name if anomalous else None))
    if not any(i.anomalous for i in images) or all(i.anomalous for i in images):
        raise DatasetError(f"{root}: needs both normal (good/) and anomalous images")
    return Dataset(name or root.name, tuple(images), tuple(skipped), LABELLED)


def _holds_mvtec(root: Path) -> bool:
    return (root / "test").is_dir() or any((p / "test").is_dir() for p in root.iterdir() if p.is_dir())


def read_dataset(root: Path, name: str | None = None, check_sizes: bool = True) -> Dataset:
    """Either layout, told apart by its folders: ``test/`` (in the folder or its subfolders) is MVTec, ``good/``
    a labelled folder. What ``inspectd eval`` reads, so that a plant's OK/NG folder is scored as it is trained."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder does not exist")
    if _holds_mvtec(root):
        return read_mvtec(root, name, check_sizes)
    if (root / GOOD).is_dir():
        return read_labelled_folder(root, name)
    found = sorted(p.name + "/" for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    raise DatasetError(
        f"{root}: neither an MVTec-layout dataset (a category with test/ inside, or a root of such categories) nor "
        f"a labelled folder (good/ for normal images and one folder per defect kind); subfolders found: "
        f"{', '.join(found) or 'none'}"
    )
