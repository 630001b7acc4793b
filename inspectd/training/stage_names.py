"""One name per training stage: ``warmup`` (supervised, on reasoning texts) and ``cgro`` (the method; trl's
GRPO runs underneath it).

Configs, commands and recipe work folders written before the rename said ``sft`` and ``grpo``; they are still
read, with a warning, so a plant's training YAML and a half-finished recipe run go on as they were.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("inspectd.train")

OLD_STAGE_NAMES = {"sft": "warmup", "grpo": "cgro"}
OLD_SYNTHETIC_KEYS = {"sft_seed_offset": "warmup_seed_offset", "grpo_seed_offset": "cgro_seed_offset",
                      "grpo_images": "cgro_images"}


def with_new_keys(raw, old_to_new: dict[str, str], section: str = ""):
    """``raw`` (a YAML mapping) with old keys under their new names; both spelled is an error naming the two."""
    if not isinstance(raw, dict) or not old_to_new.keys() & raw.keys():
        return raw
    out = dict(raw)
    for old, new in old_to_new.items():
        if old not in out:
            continue
        if new in out:
            raise ValueError(f"both `{section}{old}` and `{section}{new}` are given; `{old}` is the old name of "
                             f"`{new}`: keep `{new}` only")
        log.warning("`%s%s` is the old name of `%s%s`; read as `%s%s` (rename it in the file)",
                    section, old, section, new, section, new)
        out[new] = out.pop(old)
    return out


def stage_name(name: str) -> str:
    """A stage named on the command line; an old name is taken with a warning."""
    if name in OLD_STAGE_NAMES:
        log.warning("stage `%s` is now called `%s`", name, OLD_STAGE_NAMES[name])
        return OLD_STAGE_NAMES[name]
    return name


def stage_folder(parent: Path, name: str) -> Path:
    """``parent/name``; a folder left under the stage's old name by an earlier run is moved there first."""
    folder = Path(parent) / name
    old = next((Path(parent) / o for o, n in OLD_STAGE_NAMES.items() if n == name), None)
    if old is not None and old.is_dir() and not folder.exists():
        log.warning("%s: the %s stage's folder from an earlier run; moved to %s", old, name, folder)
        old.rename(folder)
    return folder
