"""One-command recipe for a small CGRO-tuned Qwen2.5-VL: data, warm-up, CGRO, export, eval.

    inspectd-train recipe --config models/recipes/tiny-cgro.yaml [--stop-after STAGE]

Stages, each written under ``work_dir/<stage>`` with a ``stage.json`` when it
finishes, so an interrupted run picks up at the first unfinished stage:

  warmup  build the tiny Qwen2.5-VL from the spec (untrained, seeded) or start from
          ``init``, then the supervised warm-up on images with "what and where" texts
  cgro    CGRO (GRPO + LoRA, vision frozen) on image-level labels only; an
          interrupted run resumes from its last checkpoint
  export  merge and quantize both the warm-up model and the CGRO model into
          bundles, thresholds calibrated on a held-out synthetic validation set
  eval    ``inspectd eval`` on a synthetic test set (seeds never trained on),
          both bundles (the Tab. 6 ablation), and zero-shot on real datasets
  publish the CGRO bundle with a model card holding every figure, to ``output``

Everything is a function of the YAML and its seeds. Training code: the daemon
never imports it. Each stage imports its trainer, torch and the data generators
itself: reading and validating a recipe loads none of them (a test holds it).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from inspectd.config import resolve_beside, validated_yaml
from inspectd.bundle.manifest import ScoreSpec
from inspectd.errors import InspectdError
from inspectd.model.tiny_spec import TinySpec
from inspectd.real.params import RealParams
from inspectd.strict_model import StrictModel
from inspectd.training.cgro_config import CgroSettings
from inspectd.training.line_data import LabelledFolderData, ReviewedStoreData
from inspectd.training.stage_names import OLD_STAGE_NAMES, OLD_SYNTHETIC_KEYS, stage_folder, with_new_keys
from inspectd.training.warmup_config import WarmupSettings

log = logging.getLogger("inspectd.recipe")

STAGES = ("warmup", "cgro", "export", "eval", "publish")


class SyntheticSplits(StrictModel):
    """Seed ranges of the synthetic generator; they never overlap."""

    kind: Literal["synthetic"] = "synthetic"
    image_size: int = Field(168, ge=28)
    warmup_seed_offset: int = 1_000_000
    cgro_seed_offset: int = 2_000_000
    cgro_images: int = Field(512, ge=1)
    validation_seed_offset: int = 500_000
    validation_images: int = Field(200, ge=2)
    test_seed_offset: int = 0
    test_images: int = Field(300, ge=2)

    @model_validator(mode="before")
    @classmethod
    def _old_key_names(cls, raw):
        return with_new_keys(raw, OLD_SYNTHETIC_KEYS, "data.")


def _data_kind(value) -> str:
    return (value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)) or "synthetic"


RecipeData = Annotated[
    Annotated[SyntheticSplits, Tag("synthetic")] | Annotated[LabelledFolderData, Tag("labelled_folder")]
    | Annotated[ReviewedStoreData, Tag("reviewed_store")],
    Discriminator(_data_kind),
]


class RecipeCalibration(StrictModel):
    """How the export stage chooses both bundles' thresholds on the validation images."""

    target_recall: float = Field(gt=0, le=1, description=(
        "the highest threshold that flags at least this share of the validation defects, e.g. 0.95 "
        "(inspectd-export --target-recall)"))


class RecipeConfig(StrictModel):
    name: str
    output: Path = Field(description="where the finished bundle is published")
    work_dir: Path
    threads: int = Field(2, ge=1)
    init: Path | None = Field(None, description="bundle whose weights and tokenizer the warm-up starts from; "
                                                "null = build a fresh small model from `model`")
    model: TinySpec = Field(TinySpec(), description="dimensions of the small Qwen2.5-VL (when not `init`)")
    data: RecipeData = SyntheticSplits()
    warmup: WarmupSettings = WarmupSettings()
    cgro: CgroSettings = CgroSettings()
    real: RealParams = RealParams()
    score: ScoreSpec = Field(ScoreSpec(), description="how the bundle scores an image (see ScoreSpec)")
    max_new_tokens: int = Field(48, ge=8)
    quantization: Literal["nf4", "quanto-int8", "quanto-int4", "bfloat16", "float32"] = "nf4"
    calibration: RecipeCalibration | None = Field(None, description=(
        "threshold rule of the export stage on the validation images, e.g. {target_recall: 0.95}; "
        "null = maximum balanced accuracy"))
    zero_shot: list[Path] = Field(default_factory=list, description="MVTec-layout datasets evaluated, never trained on")
    seeds: list[int] = Field(default_factory=list, description=(
        "warm-up seeds built side by side (labelled folders); the build whose CGRO model has the highest pooled "
        "pixel AUROC on the drawn validation is published. Empty = warmup.seed alone"))
    parallel_builds: int = Field(2, ge=1, description="seed builds at once, each in its own process on `threads`")
    card_notes: list[str] = Field(default_factory=list, description=(
        "paragraphs for the model card's Notes: how this recipe's settings were chosen and what was seen "
        "before choosing them, which the figures alone do not say"))

    @model_validator(mode="before")
    @classmethod
    def _old_section_names(cls, raw):
        return with_new_keys(raw, OLD_STAGE_NAMES)

    @model_validator(mode="after")
    def _check_seeds(self) -> RecipeConfig:
        if not self.seeds:
            return self
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds {self.seeds} repeat a seed")
        if not isinstance(self.data, LabelledFolderData):
            raise ValueError("seeds needs data.kind labelled_folder: builds are chosen on its drawn validation")
        if self.data.drawn_validation_seed is None:
            raise ValueError("seeds needs data.drawn_validation_seed: otherwise each seed's build is judged on a "
                             "validation set of its own")
        return self


def load_recipe(path: Path) -> RecipeConfig:
    config = validated_yaml(Path(path), RecipeConfig, "recipe")
    base = Path(path).resolve().parent
    update = {"output": resolve_beside(base, config.output), "work_dir": resolve_beside(base, config.work_dir),
              "zero_shot": [resolve_beside(base, p) for p in config.zero_shot],
              "init": resolve_beside(base, config.init)}
    if isinstance(config.data, LabelledFolderData):
        update["data"] = config.data.model_copy(update={"path": resolve_beside(base, config.data.path)})
    if isinstance(config.data, ReviewedStoreData):
        update["data"] = update["data"].model_copy(update={"config": resolve_beside(base, config.data.config)})
    return config.model_copy(update=update)


REVIEWED_FOLDER = "reviewed-data"


def with_reviewed_rows(config: RecipeConfig) -> RecipeConfig:
    """``data.kind: reviewed_store``: the reviewed inspections exported once into ``work_dir/reviewed-data`` and
    read from there as a labelled folder. A rerun (or a resumed stage) reads the same export, so the split and
    the stages already done stay valid; a new ``work_dir`` takes the reviews made since."""
    data = config.data
    if not isinstance(data, ReviewedStoreData) or data.path is not None:
        return config
    folder = config.work_dir / REVIEWED_FOLDER
    if not (folder / "export.json").is_file():
        from inspectd.data.reviewed import export_reviewed_of

        done = export_reviewed_of(data.config, folder, data.since, data.camera, replace=True)
        facts = {"config": str(data.config), "since": data.since, "camera": data.camera, "good": done.good,
                 "defect": done.defect, "missing": list(done.missing), "changed": list(done.changed)}
        (folder / "export.json").write_text(json.dumps(facts, indent=2, default=str), encoding="utf-8")
        log.info("data: %d good and %d defective reviewed inspections exported to %s (%d without their photo, "
                 "%d whose photo changed since inspection: left out)", done.good, done.defect, folder,
                 len(done.missing), len(done.changed))
    facts = json.loads((folder / "export.json").read_text(encoding="utf-8"))
    if facts["good"] < 2 or facts["defect"] < 2:
        raise InspectdError(f"data: {facts['good']} good and {facts['defect']} defective reviewed inspections in "
                            f"{data.config}'s store; a recipe needs at least 2 of each (one to train on, one to "
                            "validate): review more in the console, or widen data.since / data.camera")
    return config.model_copy(update={"data": data.model_copy(update={"path": folder})})


def _from_folder(config: RecipeConfig) -> bool:
    return isinstance(config.data, LabelledFolderData)


class _Stage:
    """A stage's folder and its completion record."""

    def __init__(self, config: RecipeConfig, name: str) -> None:
        self.name = name
        self.dir = stage_folder(config.work_dir, name)  # a work folder from before the rename goes on
        self.record_path = self.dir / "stage.json"

    @property
    def done(self) -> bool:
        return self.record_path.is_file()

    def record(self) -> dict:
        return json.loads(self.record_path.read_text(encoding="utf-8"))

    def finish(self, **facts) -> None:
        self.record_path.write_text(json.dumps(facts, indent=2, default=str), encoding="utf-8")


def _corpus(config: RecipeConfig) -> list[str]:
    """Every reasoning text the warm-up can teach."""
    if _from_folder(config):
        from inspectd.training.line_data import reasoning_corpus, split_folder

        kinds = sorted({i.defect for i in split_folder(config.data).train if i.defect})
        return reasoning_corpus(config.data, kinds)
    from inspectd.data.synthetic import description_corpus

    return description_corpus()


def _spec(config: RecipeConfig) -> TinySpec:
    """The recipe's model spec; its tokenizer learns every word the warm-up texts use."""
    return dataclasses.replace(config.model, extra_corpus=tuple(_corpus(config)) * 20)


def _initial_model(config: RecipeConfig):
    """A float32 model to warm up: a fresh small one, or the weights of ``init`` (4-bit dequantized)."""
    if config.init is None:
        from inspectd.model.tiny import build_tiny_model

        return build_tiny_model(_spec(config))
    from inspectd.bundle.load import load_bundle
    from inspectd.training.float_copy import float32_copy

    bundle = load_bundle(config.init, "cpu")
    return float32_copy(bundle.model), bundle.processor


def _manifest(config: RecipeConfig, stage: str):
    from inspectd.bundle.manifest import BundleManifest

    start = "trained from scratch" if config.init is None else f"started from {config.init.name}"
    return BundleManifest(
        name=config.name,
        base_model=f"inspectd small Qwen2.5-VL {start} by the {config.name} recipe ({stage})",
        max_new_tokens=config.max_new_tokens,
        image_size=(config.data.image_size, config.data.image_size),
        real=config.real,
        score=config.score,
    )


def _check_reply_fits(config: RecipeConfig, tokenizer) -> None:
    """A reply cut short does not parse: refuse a budget below the longest warm-up reply."""
    from inspectd.training.warmup_config import reply_text

    longest = max(len(tokenizer.encode(reply_text(text, True), add_special_tokens=False))
                  for text in _corpus(config)) + 1  # + end of turn
    for field, budget in (("max_new_tokens", config.max_new_tokens),
                          ("cgro.max_completion_length", config.cgro.max_completion_length)):
        if budget < longest:
            raise InspectdError(f"{field} is {budget}, but the longest warm-up reply takes {longest} tokens")


def _warmup_examples(config: RecipeConfig):
    if _from_folder(config):
        from inspectd.training.line_data import split_folder, warmup_examples

        return warmup_examples(config.data, split_folder(config.data), config.warmup.seed)
    from inspectd.data.synthetic import make_sample
    from inspectd.training.warmup_config import ReplyExample, reasoning_reply

    def example(i: int) -> ReplyExample:
        sample = make_sample(config.data.warmup_seed_offset + i, config.data.image_size)
        return ReplyExample(sample.image, reasoning_reply(sample))

    return example


def run_warmup(config: RecipeConfig, stage: _Stage) -> None:
    from inspectd.bundle.save import save_bundle
    from inspectd.training.warmup import supervised_warmup

    model, processor = _initial_model(config)
    _check_reply_fits(config, processor.tokenizer)
    parameters = sum(p.numel() for p in model.parameters())
    log.info("warm-up: %s, %.2fM parameters, %d steps of %d", config.name, parameters / 1e6,
             config.warmup.steps, config.warmup.batch_size)
    manifest = _manifest(config, "supervised warm-up")
    started = time.perf_counter()
    example = _warmup_examples(config)
    losses = supervised_warmup(model, processor, manifest.prompt, example, config.warmup, log_every=50)
    seconds = time.perf_counter() - started
    save_bundle(model, processor, stage.dir / "model", manifest, f"# {config.name} (warm-up stage, float32)\n")
    stage.finish(seconds=seconds, parameters=parameters, losses=losses, settings=config.warmup.model_dump())


def run_cgro(config: RecipeConfig, stage: _Stage) -> None:
    from inspectd.bundle.load import load_bundle
    from inspectd.data.synthetic import make_sample
    from inspectd.training.cgro import cgro_rows, train_cgro

    warmed = load_bundle(_Stage(config, "warmup").dir / "model", "cpu")
    manifest = warmed.manifest
    splits = config.data
    drawn = []
    if _from_folder(config):
        from inspectd.training.line_data import cgro_images, drawn_cgro_images, split_folder

        split = split_folder(splits)
        labelled = cgro_images(splits, split)
        drawn = drawn_cgro_images(splits, split, config.warmup.seed)  # masks we drew, no human pixel label
    else:
        samples = (make_sample(splits.cgro_seed_offset + i, splits.image_size) for i in range(splits.cgro_images))
        labelled = [(s.image, s.anomalous) for s in samples]
    rows = cgro_rows(labelled, manifest.prompt, drawn)  # real images: labels only, no masks or texts
    checkpoints = stage.dir / "checkpoints"
    started = time.perf_counter()
    history = train_cgro(warmed.model, warmed.processor, rows, config.cgro, manifest.prompt, config.real, checkpoints,
                         stage.dir / "adapter", seed=config.warmup.seed, resume=True,  # an interrupted run goes on
                         masks=[mask for _, mask in drawn])
    seconds = time.perf_counter() - started
    stage.finish(seconds=seconds, settings=config.cgro.model_dump(), rewards=_reward_summary(history),
                 log_history=history)
    shutil.rmtree(checkpoints, ignore_errors=True)  # only once the stage is recorded: until then a rerun resumes


def _reward_summary(history: list[dict]) -> dict[str, list[float]]:
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


def _write_split(folder: Path, seed_offset: int, count: int, size: int) -> Path:
    from inspectd.data.synthetic import write_mvtec_layout

    write_mvtec_layout(folder, None, range(seed_offset, seed_offset + count), size)
    return folder


def run_export(config: RecipeConfig, stage: _Stage) -> None:
    from inspectd.export.exporter import export_bundle

    splits = config.data
    if _from_folder(config):
        from inspectd.training.line_data import split_folder, write_validation_folder

        validation = write_validation_folder(split_folder(splits), stage.dir / "validation")
    else:
        validation = _write_split(stage.dir / "validation", splits.validation_seed_offset,
                                  splits.validation_images, splits.image_size)
    facts = {}
    for variant in ("warmup", "cgro"):
        started = time.perf_counter()
        exported = export_bundle(export_request(config, variant, stage.dir / variant, validation))
        facts[variant] = {"threshold": exported.manifest.threshold, "drift": exported.drift,
                          "calibration_images": exported.calibration.images,
                          "calibration_image_auroc": exported.calibration.image_auroc,
                          "calibration_balanced_accuracy": exported.calibration.balanced_accuracy,
                          "calibration_rule": exported.calibration.rule,
                          "calibration_expected": exported.calibration.expected.describe(),
                          "seconds": time.perf_counter() - started}
    stage.finish(**facts)


def export_request(config: RecipeConfig, variant: str, out: Path, validation: Path):
    """The export of one variant ("warmup": the warm-up model alone, "cgro": with its adapter merged),
    calibrated on ``validation`` by the recipe's threshold rule."""
    from inspectd.export.exporter import ExportRequest

    warmup, cgro = _Stage(config, "warmup"), _Stage(config, "cgro")
    return ExportRequest(
        base=warmup.dir / "model", adapter=cgro.dir / "adapter" if variant == "cgro" else None, out=out,
        name=config.name if variant == "cgro" else f"{config.name}-warmup-only",
        quantization=config.quantization, real=config.real, score=config.score, calibration=validation,
        target_recall=config.calibration.target_recall if config.calibration is not None else None,
    )


def run_eval(config: RecipeConfig, stage: _Stage) -> None:
    from inspectd.bundle.load import load_bundle
    from inspectd.data.layouts import read_mvtec
    from inspectd.evaluation.runner import evaluate, format_table
    from inspectd.inspection.inspector import Inspector, InspectorOptions

    splits = config.data
    if _from_folder(config):
        from inspectd.training.line_data import split_folder, write_drawn_validation

        drawn = write_drawn_validation(splits, split_folder(splits), stage.dir / "drawn-validation",
                                       splits.validation_draw_seed(config.warmup.seed))
        suites = {"drawn_validation": [read_mvtec(drawn, name="drawn-validation")]}
    else:
        test = _write_split(stage.dir / "synthetic-test", splits.test_seed_offset, splits.test_images,
                            splits.image_size)
        suites = {"synthetic": [read_mvtec(test, name="synthetic-test")]}
    missing = [str(p) for p in config.zero_shot if not p.is_dir()]
    suites["zero_shot"] = [read_mvtec(p) for p in config.zero_shot if p.is_dir()]
    reports = {}
    for variant in ("warmup", "cgro"):
        bundle = load_bundle(_Stage(config, "export").dir / variant, "cpu")
        inspector = Inspector(bundle, bundle.manifest.real, InspectorOptions(batch_size=8))
        for suite, datasets in suites.items():
            if not datasets:
                continue
            report = evaluate(inspector, datasets, by_defect=True, progress=lambda r: log.info(
                "eval %s/%s: image AUROC %.3f, pixel AUROC %.3f (%d images, %.0f s)", r.dataset, r.category,
                r.metrics["image_auroc"], r.metrics["pixel_auroc"], r.images, r.seconds))
            name = f"{variant}-{suite}"
            (stage.dir / f"{name}.json").write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
            (stage.dir / f"{name}.txt").write_text(format_table(report) + "\n", encoding="utf-8")
            reports[name] = report.overall
            log.info("%s:\n%s", name, format_table(report))
    stage.finish(overall=reports, zero_shot_missing=missing)


def run_publish(config: RecipeConfig, stage: _Stage, builds=()) -> None:
    """``config``'s CGRO bundle to ``output``; with several seed builds, ``config`` is the chosen seed's."""
    from inspectd.bundle.files import move_into_place, replace_model_card, staged_beside
    from inspectd.training.recipe_card import recipe_model_card

    export_dir = _Stage(config, "export").dir
    # staged beside the output and renamed into place: a failed publish leaves the bundle there as it was
    with staged_beside(config.output, "partial") as staged:
        shutil.copytree(export_dir / "cgro", staged, dirs_exist_ok=True)
        card = recipe_model_card(config, {name: _Stage(config, name) for name in STAGES[:-1]}, builds)
        replace_model_card(staged, card)
        move_into_place(staged, config.output)
    stage.finish(output=str(config.output), seed=config.warmup.seed,
                 builds={b.seed: b.selection_value for b in builds})


def _build_seed(config_json: str, seed: int, stop_after: str) -> None:
    """A spawned process of a several-seed recipe: one seed's build up to ``stop_after``, on ``threads``."""
    import torch

    from inspectd.logs import offline
    from inspectd.training.seed_builds import seed_config

    logging.basicConfig(level=logging.INFO, force=True,
                        format=f"%(asctime)s %(levelname)s %(name)s [seed {seed}]: %(message)s")
    offline(quiet_transformers=False)
    config = RecipeConfig.model_validate_json(config_json)
    torch.set_num_threads(config.threads)
    run_recipe(seed_config(config, seed), stop_after)


def _run_seed_builds(config: RecipeConfig, stop_after: str | None) -> None:
    """Each seed's build in ``work_dir/seed-<seed>`` up to eval, then the best one published."""
    from inspectd.training.seed_builds import build_seeds, choose_seed, seed_config

    config.work_dir.mkdir(parents=True, exist_ok=True)
    build_seeds(config, "eval" if stop_after in (None, "publish") else stop_after, _build_seed)
    if stop_after not in (None, "publish"):
        return
    chosen, builds = choose_seed(config)
    stage = _Stage(config, "publish")
    if stage.done and stage.record().get("seed") == chosen:
        log.info("publish: done earlier (%s), skipped", stage.record_path)
        return
    if stage.dir.exists():
        shutil.rmtree(stage.dir)
    stage.dir.mkdir(parents=True)
    run_publish(seed_config(config, chosen), stage, builds)
    log.info("publish: seed %d finished", chosen)


def run_recipe(config: RecipeConfig, stop_after: str | None = None) -> None:
    config.work_dir.mkdir(parents=True, exist_ok=True)
    config = with_reviewed_rows(config)
    if config.seeds:
        _run_seed_builds(config, stop_after)
        return
    runners = {"warmup": run_warmup, "cgro": run_cgro, "export": run_export, "eval": run_eval, "publish": run_publish}
    config.work_dir.mkdir(parents=True, exist_ok=True)
    for name in STAGES:
        stage = _Stage(config, name)
        if stage.done:
            log.info("%s: done earlier (%s), skipped", name, stage.record_path)
        else:
            if stage.dir.exists() and name != "cgro":
                shutil.rmtree(stage.dir)  # a half-finished stage starts over (cgro resumes from checkpoints)
            stage.dir.mkdir(parents=True, exist_ok=True)
            runners[name](config, stage)
            log.info("%s: finished", name)
        if name == stop_after:
            return

