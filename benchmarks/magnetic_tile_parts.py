"""Write the parts file of the magnetic-tile training folder: which photos show the same tile.

The magnetic tile data set (Huang, Qiu and Yuan, 2020) photographed each tile
under up to six lightings; a photo is named ``exp<lighting>_num_<crop number>``
and the photos of one tile have close crop numbers (10-60 apart as a rule,
e.g. crack/exp1_num_342140 .. exp6_num_342249, all one crack). The rule here:
within one folder, sorted by crop number, a photo less than ``--gap`` (200)
after the previous one is the same tile. On the training folder that gives
216 parts for 598 photos; 11 of them hold one lighting twice, i.e. two tiles
taken as one, which only makes the split more careful. Used by a recipe as
``data.parts_file`` so that validation holds tiles the model never saw.

Usage: python benchmarks/magnetic_tile_parts.py FOLDER [--gap 200] > models/recipes/magnetic-tile-parts.csv
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from pathlib import Path

NAME = re.compile(r"exp(\d+)_num_(\d+)\.\w+")


def tile_parts(folder: Path, gap: int) -> list[tuple[str, str]]:
    """``(photo, part)`` rows, a part named after its folder and first crop number."""
    rows = []
    for kind in sorted(p for p in folder.iterdir() if p.is_dir()):
        numbered = sorted((int(m.group(2)), p.name) for p in kind.iterdir() if (m := NAME.fullmatch(p.name)))
        part, previous = "", None
        for number, name in numbered:
            if previous is None or number - previous >= gap:
                part = f"{kind.name}-{number}"
            rows.append((f"{kind.name}/{name}", part))
            previous = number
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--gap", type=int, default=200)
    args = parser.parse_args()
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(("photo", "part"))
    writer.writerows(tile_parts(args.folder, args.gap))


if __name__ == "__main__":
    main()
