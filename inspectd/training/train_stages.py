"""The recipe's training stages, ``warmup`` and ``cgro``: the one definition of each, whatever runs them.

``inspectd-train recipe`` runs them before the release stages; ``inspectd-train warmup|cgro`` (aliases) stop
after one of them. Under ``accelerate launch`` every process runs them (data parallel: each takes its own
examples of a step) and the main process writes. Each imports its trainer and torch itself: reading a recipe
loads none of them. Training code: the daemon never imports it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import time
from pathlib import Path

from inspectd.errors import InspectdError
from inspectd.training.base_models import is_bundle, parameter_count, saved_dtype
from inspectd.training.recipe_config import RecipeConfig, from_folder
from inspectd.training.stage_record import Stage, everyone_here, is_main_process
from inspectd.training.tile_geometry import TileGeometry, tile_geometry

log = logging.getLogger("inspectd.recipe")


def corpus(config: RecipeConfig) -> list[str]:
    """Every reasoning text the warm-up can teach."""
    if from_folder(config):
        from inspectd.training.line_data import reasoning_corpus, split_folder

        kinds = sorted({i.defect for i in split_folder(config.data).train if i.defect})
        return reasoning_corpus(config.data, kinds)
    from inspectd.data.synthetic import description_corpus

    return description_corpus()


def spec(config: RecipeConfig):
    """The recipe's small-model spec; its tokenizer learns every word the warm-up texts use."""
    return dataclasses.replace(config.model, extra_corpus=tuple(corpus(config)) * 20)


def cgro_base(config: RecipeConfig) -> Path:
    """The model CGRO trains on, and the export merges its adapter into: the warm-up's, or ``init`` itself
    when the recipe has no warm-up."""
    return Stage(config, "warmup").dir / "model" if config.warms_up or _quantized_init(config) else config.init


def _quantized_init(config: RecipeConfig) -> bool:
    """``init`` is a 4-bit or 8-bit bundle (a deployed one): LoRA cannot be merged into its quantized weights at
    export, so a recipe without warm-up trains on a float32 copy the warm-up stage writes (``_skip_warmup``)."""
    if config.init is None or not is_bundle(config.init):
        return False
    from inspectd.bundle.files import read_manifest

    return read_manifest(config.init).quantization != "none"


def recipe_manifest(config: RecipeConfig, stage: str):
    from inspectd.bundle.manifest import BundleManifest

    if config.init is None:
        start = "inspectd small Qwen2.5-VL trained from scratch"
    elif is_bundle(config.init):
        start = f"inspectd small Qwen2.5-VL started from {config.init.name}"
    else:
        start = config.init.name  # a downloaded checkpoint, e.g. Qwen2.5-VL-7B-Instruct
    return BundleManifest(
        name=config.name,
        base_model=f"{start} by the {config.name} recipe ({stage})",
        max_new_tokens=config.max_new_tokens,
        image_size=(config.data.image_size, config.data.image_size),
        real=config.real,
        score=config.score,
    )


def _initial_model(config: RecipeConfig):
    """A float32 model to warm up: a fresh small one, or ``init`` (a bundle or a checkpoint folder)."""
    if config.init is None:
        from inspectd.model.tiny import build_tiny_model

        return build_tiny_model(spec(config))
    from inspectd.training.base_models import float32_model

    return float32_model(config.init)


def _check_reply_fits(config: RecipeConfig, tokenizer) -> None:
    """A reply cut short does not parse: refuse a budget below the longest warm-up reply."""
    from inspectd.training.warmup_config import reply_text

    longest = max(len(tokenizer.encode(reply_text(text, True), add_special_tokens=False))
                  for text in corpus(config)) + 1  # + end of turn
    for field, budget in (("max_new_tokens", config.max_new_tokens),
                          ("cgro.max_completion_length", config.cgro.max_completion_length)):
        if budget < longest:
            raise InspectdError(f"{field} is {budget}, but the longest warm-up reply takes {longest} tokens")


def recipe_tiles(config: RecipeConfig) -> TileGeometry | None:
    """The tiles the recipe's bundle inspects (``score.tiles``), which its training data shows too; None =
    whole photos only."""
    return tile_geometry(config.score, config.data.image_size)


def warmup_identity(config: RecipeConfig) -> dict:
    """What the warm-up's model and examples are made from: a checkpoint of another identity is not resumed.

    A tiled recipe's examples differ from an untiled one's, so its tiles are part of it; an untiled recipe's
    identity is what it was before tiles existed (a warm-up interrupted then still resumes)."""
    identity = config.model_dump(mode="json", include={"init", "model", "data"})
    if recipe_tiles(config) is None:
        identity["data"].pop("tile_examples_share", None)  # shapes nothing without tiles
    else:
        identity["tiles"] = config.score.model_dump(mode="json", include={"tiles", "tile_share"})
    return identity


def _warmup_examples(config: RecipeConfig):
    if from_folder(config):
        from inspectd.training.line_data import split_folder, warmup_examples

        return warmup_examples(config.data, split_folder(config.data), config.warmup.seed,
                               tiles=recipe_tiles(config))
    from inspectd.data.synthetic import make_sample
    from inspectd.training.warmup_config import ReplyExample, reasoning_reply

    def example(i: int) -> ReplyExample:
        sample = make_sample(config.data.warmup_seed_offset + i, config.data.image_size)
        return ReplyExample(sample.image, reasoning_reply(sample))

    return example


def _skip_warmup(config: RecipeConfig, stage: Stage) -> None:
    """``warmup.steps: 0``: nothing trained; the record says what CGRO starts from, for the card. A quantized
    ``init`` bundle is written once as a float32 bundle under ``stage.dir/model`` for CGRO and the export."""
    if _quantized_init(config):
        from inspectd.bundle.save import save_bundle
        from inspectd.training.base_models import float32_model

        log.info("warm-up: none (warmup.steps 0): CGRO starts from a float32 copy of the quantized bundle %s",
                 config.init)
        if is_main_process():
            model, processor = float32_model(config.init)
            manifest = recipe_manifest(config, "untuned")
            save_bundle(model, processor, stage.dir / "model", manifest.model_copy(update={"dtype": "float32"}),
                        f"# {config.name} (float32 copy of {config.init.name})\n")
        everyone_here()
    else:
        log.info("warm-up: none (warmup.steps 0): CGRO starts from %s as it is", config.init)
    stage.finish(skipped=True, seconds=0.0, parameters=parameter_count(config.init), losses=[],
                 start=str(config.init), settings=config.warmup.model_dump())


def warmup_checkpoints(config: RecipeConfig) -> Path:
    """The warm-up's checkpoints: beside its stage folder, not in it, since ``run_recipe`` starts a half-finished
    stage's folder afresh (a half-written model must not survive); removed once the stage is recorded."""
    return config.work_dir / "warmup-checkpoints"


def run_warmup(config: RecipeConfig, stage: Stage) -> None:
    """The supervised warm-up; the model is saved as a bundle under ``stage.dir/model`` in float32, or in a
    checkpoint ``init``'s own dtype (a download's bfloat16: half of a float32 copy). A checkpoint every
    ``warmup.save_steps`` steps under ``warmup_checkpoints``: an interrupted run goes on from the newest."""
    if not config.warms_up:
        _skip_warmup(config, stage)
        return
    import torch

    from inspectd.bundle.save import save_bundle
    from inspectd.training.warmup import train_warmup

    model, processor = _initial_model(config)
    _check_reply_fits(config, processor.tokenizer)
    parameters = sum(p.numel() for p in model.parameters())
    log.info("warm-up: %s, %.2fM parameters, %d steps of %d", config.name, parameters / 1e6,
             config.warmup.steps, config.warmup.batch_size)
    manifest = recipe_manifest(config, "supervised warm-up")
    checkpoints = warmup_checkpoints(config)
    run = train_warmup(model, processor, manifest.prompt, _warmup_examples(config), config.warmup, log_every=50,
                       checkpoints=checkpoints, identity=warmup_identity(config))  # not resumed if changed
    dtype = "float32" if config.init is None or is_bundle(config.init) else saved_dtype(config.init)
    if is_main_process():  # every process trained the same weights; one writes them
        model.to(getattr(torch, dtype))
        save_bundle(model, processor, stage.dir / "model", manifest.model_copy(update={"dtype": dtype}),
                    f"# {config.name} (warm-up stage, {dtype})\n")
    stage.finish(seconds=run.seconds, parameters=parameters, losses=run.losses, settings=config.warmup.model_dump(),
                 resumed_from=run.resumed_from)
    everyone_here()
    if is_main_process():
        shutil.rmtree(checkpoints, ignore_errors=True)  # only once the stage is recorded: until then a rerun resumes


def _cgro_rows(config: RecipeConfig, prompt):
    """CGRO's rows (real images: labels only, no masks or texts) and the drawn defects' masks."""
    from inspectd.training.cgro import cgro_rows

    splits = config.data
    drawn = []
    if from_folder(config):
        from inspectd.training.line_data import cgro_images, drawn_cgro_images, split_folder

        split = split_folder(splits)
        labelled = cgro_images(splits, split)
        drawn = drawn_cgro_images(splits, split, config.warmup.seed,  # masks we drew, no human pixel label
                                  tiles=recipe_tiles(config))
    else:
        from inspectd.data.synthetic import make_sample

        samples = (make_sample(splits.cgro_seed_offset + i, splits.image_size) for i in range(splits.cgro_images))
        labelled = [(s.image, s.anomalous) for s in samples]
    return cgro_rows(labelled, prompt, drawn), [mask for _, mask in drawn]


def run_cgro(config: RecipeConfig, stage: Stage) -> None:
    """CGRO on ``cgro_base``, its frozen weights in ``cgro.base_precision`` (nf4 = QLoRA on a small GPU); an
    interrupted run resumes from its last checkpoint under ``stage.dir/checkpoints``."""
    from inspectd.training.base_models import processor_of
    from inspectd.training.cgro import check_device, load_policy_base, train_cgro

    check_device(config.cgro)  # before the rows are drawn and the model loads
    base = cgro_base(config)
    prompt = recipe_manifest(config, "cgro").prompt
    rows, masks = _cgro_rows(config, prompt)
    model = load_policy_base(base, config.cgro)
    log.info("cgro: %s in %s, %d rows, %d steps", base, config.cgro.precision(), len(rows), config.cgro.max_steps)
    checkpoints = stage.dir / "checkpoints"
    started = time.perf_counter()
    history = train_cgro(model, processor_of(base), rows, config.cgro, prompt, config.real, checkpoints,
                         stage.dir / "adapter", seed=config.warmup.seed, resume=True,  # an interrupted run goes on
                         masks=masks)
    seconds = time.perf_counter() - started
    stage.finish(seconds=seconds, settings=config.cgro.model_dump(), precision=config.cgro.precision(),
                 rewards=reward_summary(history), log_history=history)
    everyone_here()
    if is_main_process():
        shutil.rmtree(checkpoints, ignore_errors=True)  # only once the stage is recorded: until then a rerun resumes


def reward_summary(history: list[dict]) -> dict[str, list[float]]:
    """Mean of each logged reward over the first and the last quarter of the steps.

    A reward that scored no row of a step (the localization reward when the step drew no drawn-defect row) is
    logged as None or NaN there; such steps are left out of that reward's mean."""
    steps = [entry for entry in history if "reward" in entry]
    quarter = max(1, len(steps) // 4)
    keys = sorted({k for entry in steps for k in entry if k.startswith("rewards/") and k.endswith("/mean")})

    def mean(rows: list[dict], key: str) -> float:
        values = [float(r[key]) for r in rows if r.get(key) is not None and math.isfinite(float(r[key]))]
        return sum(values) / len(values) if values else float("nan")

    return {key: [mean(steps[:quarter], key), mean(steps[-quarter:], key)] for key in keys + ["reward"]}
