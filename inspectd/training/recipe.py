"""The one training door: a recipe runs data -> warm-up -> CGRO -> export -> eval -> publish.

    inspectd-train recipe --config models/recipes/tiny-cgro.yaml [--stop-after STAGE]
    accelerate launch --num_processes N -m inspectd.training.cli recipe --config RECIPE   # several GPUs

Stages, each written under ``work_dir/<stage>`` with a ``stage.json`` when it finishes, so an interrupted run
picks up at the first unfinished stage:

  warmup  build the tiny Qwen2.5-VL from the spec (untrained, seeded) or start from ``init`` (a bundle, or a
          Qwen2.5-VL checkpoint folder such as the downloaded 7B), then the supervised warm-up on images with
          "what and where" texts; ``warmup.steps: 0`` skips it (CGRO trains on ``init``)
  cgro    CGRO (GRPO + LoRA, vision frozen, base weights in ``cgro.base_precision``) on image-level labels
          only; an interrupted run resumes from its last checkpoint
  export  merge and quantize both the model CGRO started from and the CGRO model into bundles, thresholds
          calibrated on a held-out validation set
  eval    ``inspectd eval`` on a test set never trained on, both bundles (the Tab. 6 ablation), and
          zero-shot on real datasets
  publish the CGRO bundle with a model card holding every figure, to ``output``

Data: synthetic seeds, a labelled folder, or the reviewed rows of an inspectd store (exported once into
``work_dir/reviewed-data``). Everything is a function of the YAML and its seeds. The schema is in
``recipe_config.py``, the stages in ``train_stages.py`` and ``release_stages.py``. Training code: the daemon
never imports it; reading and validating a recipe loads no torch (a test holds it).
"""

from __future__ import annotations

import json
import logging
import shutil

from inspectd.errors import InspectdError
from inspectd.training.line_data import ReviewedStoreData
from inspectd.training.recipe_config import STAGES, TRAINING_STAGES, RecipeConfig, load_recipe
from inspectd.training.stage_record import Stage, everyone_here, is_main_process, processes
from inspectd.training.train_stages import spec as _spec  # benchmarks build the recipe's model with it

__all__ = ["STAGES", "RecipeConfig", "load_recipe", "run_recipe", "with_reviewed_rows", "_spec"]

log = logging.getLogger("inspectd.recipe")

REVIEWED_FOLDER = "reviewed-data"


def with_reviewed_rows(config: RecipeConfig) -> RecipeConfig:
    """``data.kind: reviewed_store``: the reviewed inspections exported once into ``work_dir/reviewed-data`` and
    read from there as a labelled folder. A rerun (or a resumed stage) reads the same export, so the split and
    the stages already done stay valid; a new ``work_dir`` takes the reviews made since. One process exports."""
    data = config.data
    if not isinstance(data, ReviewedStoreData) or data.path is not None:
        return config
    folder = config.work_dir / REVIEWED_FOLDER
    if not (folder / "export.json").is_file() and is_main_process():
        from inspectd.data.reviewed import export_reviewed_of

        done = export_reviewed_of(data.config, folder, data.since, data.camera, replace=True)
        facts = {"config": str(data.config), "since": data.since, "camera": data.camera, "good": done.good,
                 "defect": done.defect, "missing": list(done.missing), "changed": list(done.changed)}
        (folder / "export.json").write_text(json.dumps(facts, indent=2, default=str), encoding="utf-8")
        log.info("data: %d good and %d defective reviewed inspections exported to %s (%d without their photo, "
                 "%d whose photo changed since inspection: left out)", done.good, done.defect, folder,
                 len(done.missing), len(done.changed))
    everyone_here()
    facts = json.loads((folder / "export.json").read_text(encoding="utf-8"))
    if facts["good"] < 2 or facts["defect"] < 2:
        raise InspectdError(f"data: {facts['good']} good and {facts['defect']} defective reviewed inspections in "
                            f"{data.config}'s store; a recipe needs at least 2 of each (one to train on, one to "
                            "validate): review more in the console, or widen data.since / data.camera")
    return config.model_copy(update={"data": data.model_copy(update={"path": folder})})


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
    from inspectd.training.release_stages import run_publish
    from inspectd.training.seed_builds import build_seeds, choose_seed, seed_config

    if processes() > 1:
        raise InspectdError("seeds: a several-seed recipe starts a process per build itself; run it without "
                            "accelerate launch / torchrun")
    config.work_dir.mkdir(parents=True, exist_ok=True)
    build_seeds(config, "eval" if stop_after in (None, "publish") else stop_after, _build_seed)
    if stop_after not in (None, "publish"):
        return
    chosen, builds = choose_seed(config)
    stage = Stage(config, "publish")
    if stage.done and stage.record().get("seed") == chosen:
        log.info("publish: done earlier (%s), skipped", stage.record_path)
        return
    if stage.dir.exists():
        shutil.rmtree(stage.dir)
    stage.dir.mkdir(parents=True)
    run_publish(seed_config(config, chosen), stage, builds)
    log.info("publish: seed %d finished", chosen)


def _runners():
    from inspectd.training.release_stages import run_eval, run_export, run_publish
    from inspectd.training.train_stages import run_cgro, run_warmup

    return {"warmup": run_warmup, "cgro": run_cgro, "export": run_export, "eval": run_eval, "publish": run_publish}


def run_recipe(config: RecipeConfig, stop_after: str | None = None) -> None:
    """Every unfinished stage up to ``stop_after`` (all when None). Under ``accelerate launch`` every process
    runs the training stages; the main process alone goes on to export, evaluate and publish."""
    if config.init is not None:
        from inspectd.training.base_models import check_model_folder

        check_model_folder(config.init)
    if is_main_process():
        config.work_dir.mkdir(parents=True, exist_ok=True)
    everyone_here()
    config = with_reviewed_rows(config)
    if config.seeds:
        _run_seed_builds(config, stop_after)
        return
    runners = _runners()
    for name in STAGES:
        if name not in TRAINING_STAGES and not is_main_process():
            return  # one process exports, evaluates and publishes
        stage = Stage(config, name)
        if stage.done:
            log.info("%s: done earlier (%s), skipped", name, stage.record_path)
        else:
            if is_main_process():
                if stage.dir.exists() and name != "cgro":
                    shutil.rmtree(stage.dir)  # a half-finished stage starts over (cgro resumes from checkpoints)
                stage.dir.mkdir(parents=True, exist_ok=True)
            everyone_here()
            runners[name](config, stage)
            everyone_here()  # the record is whole before any process reads it
            log.info("%s: finished", name)
        if name == stop_after:
            return
