"""``inspectd-train plan --config RECIPE``: before a run, how a labelled folder will be split (and how many
validation photos look like a training photo) and the recipe's CGRO stage's peak memory by component.

The plan reads the checkpoint CGRO will start from (its ``config.json`` and processor files are enough): the
warm-up's model once that stage is done, else ``init`` (the warm-up keeps its shape), or ``--base``. The
settings are the recipe's ``cgro:`` section and ``data.image_size``; ``memory_plan.py`` holds the formulas.
"""

from __future__ import annotations

from pathlib import Path

from inspectd.errors import InspectdError
from inspectd.training.recipe_config import RecipeConfig, from_folder


def planned_base(config: RecipeConfig, base: Path | None) -> Path:
    """The checkpoint the plan reads: ``base`` when given, else what the recipe's CGRO stage will load."""
    from inspectd.training.stage_record import Stage

    if base is not None:
        found = base
    elif config.warms_up and (Stage(config, "warmup").dir / "model" / "config.json").is_file():
        found = Stage(config, "warmup").dir / "model"
    elif config.init is not None:
        found = config.init
    else:
        raise InspectdError("plan: this recipe builds a fresh small model (no `init`), so there is no checkpoint to "
                            "read yet: run `inspectd-train recipe --config ... --stop-after warmup` first, or pass "
                            "--base FOLDER")
    if not (found / "config.json").is_file():
        raise InspectdError(f"plan: {found} has no config.json; point --base (or the recipe's init) at the checkpoint")
    return found


def _split_line(config: RecipeConfig) -> str:
    """The folder's split, or why it was not read: a memory plan is often made away from the photos (a GPU
    recipe planned on a laptop), so a folder that is not here does not stop it."""
    from inspectd.data.layouts import DatasetError
    from inspectd.training.line_data import split_folder
    from inspectd.training.recipe_card import split_sentence

    try:
        return split_sentence(config.data, split_folder(config.data))
    except DatasetError as error:
        return f"not read here ({error})"


def print_plan(config: RecipeConfig, base: Path | None, measure: bool) -> int:
    """Prints a labelled folder's split, then CGRO's planned peak memory (and with ``measure`` the measured one)."""
    import tempfile

    from inspectd.training.memory_plan import format_plan, model_shape, plan_cgro, prompt_tokens
    from inspectd.training.train_stages import recipe_manifest

    folder = planned_base(config, base)
    if from_folder(config) and config.data.path is not None:  # reviewed rows are exported by the run itself
        print(f"Split: {_split_line(config)}\n")
    size = (config.data.image_size, config.data.image_size)
    settings = config.cgro
    shape = model_shape(folder, settings.lora_targets, settings.lora_rank)
    prompt = recipe_manifest(config, "cgro").prompt
    plan = plan_cgro(shape, settings, size, prompt_tokens(folder, size, shape, prompt))
    measured = None
    if measure:
        from inspectd.training.memory_trace import measure_cgro_step

        with tempfile.TemporaryDirectory(prefix="inspectd-plan-") as scratch:
            measured = measure_cgro_step(folder, settings, size, Path(scratch)).peaks
    print(f"CGRO memory plan for {folder} ({settings.precision()} base weights, image {size[0]} x {size[1]}, "
          f"{settings.batch_size} prompts x {settings.generations} replies a step; one process)")
    print(format_plan(plan, measured))
    return 0
