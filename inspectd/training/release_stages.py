"""The recipe's release stages: ``export`` (both bundles, thresholds calibrated), ``eval`` (the Tab. 6 ablation
and zero-shot) and ``publish`` (the CGRO bundle with its model card).

Every data source gets all three: synthetic seeds, a labelled folder and the console's reviewed rows (exported
into a labelled folder first) are calibrated on their held-out part, evaluated and carded the same way. One
process runs them (the main one under ``accelerate launch``), on ``config.device``. Training code: the daemon
never imports it.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from inspectd.training.base_models import is_bundle
from inspectd.training.recipe_config import STAGES, RecipeConfig, from_folder
from inspectd.training.stage_record import Stage
from inspectd.training.train_stages import cgro_base, recipe_manifest, recipe_tiles

log = logging.getLogger("inspectd.recipe")


def _write_split(folder: Path, seed_offset: int, count: int, size: int) -> Path:
    from inspectd.data.synthetic import write_mvtec_layout

    write_mvtec_layout(folder, None, range(seed_offset, seed_offset + count), size)
    return folder


def run_export(config: RecipeConfig, stage: Stage) -> None:
    from inspectd.export.exporter import export_bundle

    splits = config.data
    if from_folder(config):
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
                          "calibration_image_auroc_interval": exported.calibration.image_auroc_interval,
                          "calibration_expected": exported.calibration.expected.describe(intervals=True),
                          "seconds": time.perf_counter() - started}
    stage.finish(**facts)


def export_request(config: RecipeConfig, variant: str, out: Path, validation: Path):
    """The export of one variant ("warmup": the model CGRO started from, alone; "cgro": with its adapter
    merged), calibrated on ``validation`` by the recipe's threshold rule."""
    from inspectd.export.exporter import ExportRequest

    base = cgro_base(config)
    manifest = recipe_manifest(config, "supervised warm-up" if config.warms_up else "untuned")
    return ExportRequest(
        base=base, adapter=Stage(config, "cgro").dir / "adapter" if variant == "cgro" else None, out=out,
        name=config.name if variant == "cgro" else f"{config.name}-warmup-only",
        quantization=config.quantization, real=config.real, score=config.score, calibration=validation,
        target_recall=config.calibration.target_recall if config.calibration is not None else None,
        image_size=manifest.image_size, max_new_tokens=config.max_new_tokens, device=config.device,
        base_model_name=None if is_bundle(base) else manifest.base_model,  # a bundle names its own
    )


def run_eval(config: RecipeConfig, stage: Stage) -> None:
    from inspectd.bundle.load import load_bundle
    from inspectd.data.layouts import read_mvtec
    from inspectd.evaluation.runner import evaluate, format_table
    from inspectd.inspection.inspector import Inspector, InspectorOptions

    splits = config.data
    if from_folder(config):
        from inspectd.training.line_data import split_folder, write_drawn_validation

        drawn = write_drawn_validation(splits, split_folder(splits), stage.dir / "drawn-validation",
                                       splits.validation_draw_seed(config.warmup.seed), tiles=recipe_tiles(config))
        suites = {"drawn_validation": [read_mvtec(drawn, name="drawn-validation")]}
    else:
        test = _write_split(stage.dir / "synthetic-test", splits.test_seed_offset, splits.test_images,
                            splits.image_size)
        suites = {"synthetic": [read_mvtec(test, name="synthetic-test")]}
    missing = [str(p) for p in config.zero_shot if not p.is_dir()]
    suites["zero_shot"] = [read_mvtec(p) for p in config.zero_shot if p.is_dir()]
    reports = {}
    for variant in ("warmup", "cgro"):
        bundle = load_bundle(Stage(config, "export").dir / variant, config.device)
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


def run_publish(config: RecipeConfig, stage: Stage, builds=()) -> None:
    """``config``'s CGRO bundle to ``output``; with several seed builds, ``config`` is the chosen seed's."""
    from inspectd.bundle.files import move_into_place, replace_model_card, staged_beside
    from inspectd.training.recipe_card import recipe_model_card

    export_dir = Stage(config, "export").dir
    # staged beside the output and renamed into place: a failed publish leaves the bundle there as it was
    with staged_beside(config.output, "partial") as staged:
        shutil.copytree(export_dir / "cgro", staged, dirs_exist_ok=True)
        card = recipe_model_card(config, {name: Stage(config, name) for name in STAGES[:-1]}, builds)
        replace_model_card(staged, card)
        move_into_place(staged, config.output)
    stage.finish(output=str(config.output), seed=config.warmup.seed,
                 builds={b.seed: b.selection_value for b in builds})
