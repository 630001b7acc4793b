"""A small labelled OK/NG folder (good/ + one folder per defect kind) of synthetic photos, for the line-data tests."""

from __future__ import annotations

from pathlib import Path

from inspectd.data.synthetic import make_sample

SMALL_LINE = {"good": 20, "blowhole": 6, "uneven": 4}


def write_line_folder(root: Path, counts: dict[str, int] = SMALL_LINE) -> Path:
    """Photos of several widths (80-119 px) by 96 px, as a camera's crops come: the hashes of
    ``test_tile_data`` were taken on exactly this folder."""
    for kind, count in counts.items():
        (root / kind).mkdir(parents=True)
        for i in range(count):
            sample = make_sample(100 + i, 96, anomalous=kind != "good")
            sample.image.convert("L").resize((80 + 7 * i % 40, 96)).save(root / kind / f"{kind}-{i}.png")
    return root
