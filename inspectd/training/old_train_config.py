"""The training YAML of the old ``inspectd-train warmup|cgro`` door, recognised and answered with its recipe.

Until the recipe became the one training door, ``warmup`` and ``cgro`` read a second schema (``base``,
``output_dir``, ``seed``, ``data.kind: synthetic|labelled|mvtec|store``). Such a file is refused, not run:
the message holds the recipe that does the same run, to check and save, because what the old door left to
the user (where the bundle goes, which model CGRO starts from) a silent conversion would have to guess.
No torch here: it runs while a config is read.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from inspectd.training.stage_names import OLD_STAGE_NAMES, with_new_keys

OLD_ONLY_KEYS = {"base", "output_dir"}  # required by the old schema, unknown to the recipe
OLD_WARMUP_DEFAULTS = {"steps": 400, "learning_rate": 5.0e-4, "warmup_steps": 30}  # the old schema's defaults


def is_old_train_config(raw) -> bool:
    return isinstance(raw, dict) and bool(OLD_ONLY_KEYS & raw.keys()) and "work_dir" not in raw


def _data(old: dict) -> tuple[dict, list[str]]:
    """The recipe's ``data:`` section for the old one, and what the reader must still decide."""
    kind = old.get("kind", "synthetic")
    size = old.get("image_size", 168)
    if kind == "synthetic":
        offset, count = old.get("seed_offset", 1_000_000), old.get("count", 512)
        return {"kind": "synthetic", "image_size": size, "warmup_seed_offset": offset, "cgro_seed_offset": offset,
                "cgro_images": count}, []
    if kind == "labelled":
        return {"kind": "labelled_folder", "path": old.get("path"), "image_size": size}, [
            "data.image_size must be a multiple of 28; data.validation_fraction (0.15) of the folder is held out "
            "to calibrate the threshold and judge the maps"]
    if kind == "store":
        data = {"kind": "reviewed_store", "config": old.get("path"), "image_size": size}
        data.update({k: str(old[k]) for k in ("since", "camera") if old.get(k) is not None})
        return data, []
    return {"kind": "labelled_folder", "path": old.get("path"), "image_size": size}, [
        f"data.kind {kind}: the recipe trains on a labelled folder (good/ + one folder per defect kind); lay the "
        "MVTec folder's images out that way, or name it under zero_shot: to evaluate on it"]


def recipe_for(raw: dict, path: Path) -> tuple[dict, list[str]]:
    """The recipe that does the old file's run, and the notes the reader must check."""
    old = with_new_keys(raw, OLD_STAGE_NAMES)
    output_dir = str(old.get("output_dir", "runs/train"))
    data, notes = _data(dict(old.get("data") or {}))
    cgro = dict(old.get("cgro") or {})
    if "warmup" in old:
        warmup = {**OLD_WARMUP_DEFAULTS, **old["warmup"], "seed": old.get("seed", 0)}
    else:
        warmup = {"steps": 0, "seed": old.get("seed", 0)}
        notes.append("no warmup: section, so warmup.steps: 0 (CGRO on `init` as it is, as `inspectd-train cgro` "
                     "did); give the section to warm up first")
    recipe = {
        "name": Path(path).stem,
        "output": f"{output_dir.rstrip('/')}/bundle",
        "work_dir": output_dir,
        "init": str(old.get("base")),
        "data": data,
        "warmup": warmup,
        "cgro": cgro,
        "max_new_tokens": max(48, int(cgro.get("max_completion_length", 64))),
    }
    if cgro.get("use_cpu") is False:
        recipe["device"] = "cuda:0"
    return recipe, notes


def old_train_config_message(raw: dict, path: Path) -> str:
    """One line (the CLI prints errors so): what the file is, what to check, and the recipe in YAML flow style,
    which saves as it is."""
    recipe, notes = recipe_for(raw, path)
    checks = "".join(f" Check: {note}." for note in notes)
    flow = yaml.safe_dump(recipe, sort_keys=False, default_flow_style=True, width=10**9).strip()
    return (f"{path}: a training config of the old `inspectd-train warmup|cgro` (keys `base`, `output_dir`); the "
            "recipe is now the one training config (docs/training.md). Save the same run as a recipe file, then "
            "run `inspectd-train recipe --config NEW.yaml` (`--stop-after warmup` or `cgro` to stop early; a rerun "
            f"resumes).{checks} The recipe: {flow}")
