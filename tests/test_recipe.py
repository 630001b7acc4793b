"""The model recipe end to end on a micro configuration: every stage, the card, resuming."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from inspectd.bundle.files import verify_bundle
from inspectd.data.synthetic import make_sample, write_mvtec_layout
from inspectd.errors import InspectdError
from inspectd.training.recipe import STAGES, load_recipe, run_recipe

pytestmark = pytest.mark.slow

MICRO = {
    "name": "micro",
    "output": "out/micro",
    "work_dir": "work",
    "threads": 2,
    "model": {"text_hidden": 64, "text_layers": 2, "text_heads": 2, "text_kv_heads": 1, "text_intermediate": 128,
              "vision_hidden": 32, "vision_depth": 2, "vision_heads": 2, "vision_intermediate": 64,
              "fullatt_blocks": [1], "seed": 1},
    "data": {"image_size": 112, "cgro_images": 8, "validation_images": 8, "test_images": 8},
    "warmup": {"steps": 150, "batch_size": 8, "learning_rate": 3e-3, "warmup_steps": 10},
    "cgro": {"max_steps": 2, "batch_size": 2, "generations": 2, "max_completion_length": 32, "save_steps": 1,
             "gradient_checkpointing": False},
    "real": {"layer_start": 0},
    "max_new_tokens": 32,
    "quantization": "nf4",
    "zero_shot": ["real", "not-here"],
}


def _write_recipe(folder: Path, **overrides) -> Path:
    path = folder / "micro.yaml"
    path.write_text(yaml.safe_dump({**MICRO, **overrides}), encoding="utf-8")
    return path


def test_recipe_builds_a_verified_bundle_with_its_card_and_resumes(tmp_path):
    write_mvtec_layout(tmp_path / "real", "tile", range(900, 906), 96)  # stands in for a real dataset
    config = load_recipe(_write_recipe(tmp_path))

    run_recipe(config, stop_after="cgro")
    assert (config.work_dir / "cgro" / "adapter" / "adapter_config.json").is_file()
    assert not (config.work_dir / "export").exists()
    warmup_record = json.loads((config.work_dir / "warmup" / "stage.json").read_text())
    assert len(warmup_record["losses"]) == 150

    run_recipe(config)  # picks up at export; warm-up and CGRO are not redone
    assert json.loads((config.work_dir / "warmup" / "stage.json").read_text()) == warmup_record
    manifest = verify_bundle(config.output)
    assert manifest.quantization == "nf4" and manifest.name == "micro"
    assert manifest.image_size == (112, 112)
    card = (config.output / "MODEL_CARD.md").read_text()
    assert "not** a replacement for a CGRO-tuned Qwen2.5-VL-7B" in card
    assert "warm-up only" in card and "warm-up + CGRO (shipped)" in card
    export = json.loads((config.work_dir / "export" / "stage.json").read_text())
    assert export["cgro"]["calibration_rule"] == "maximum balanced accuracy"  # no calibration key: as before
    assert "(maximum balanced accuracy on the calibration set;" in card
    assert f"Expected there at that threshold: {export['cgro']['calibration_expected']}. " in card
    assert export["cgro"]["calibration_expected"].startswith("misses ")
    assert "real, zero-shot" in card and "not-here" in card  # the missing dataset is named, not hidden
    evaluation = json.loads((config.work_dir / "eval" / "stage.json").read_text())
    assert set(evaluation["overall"]) == {"warmup-synthetic", "cgro-synthetic", "warmup-zero_shot", "cgro-zero_shot"}
    for figures in evaluation["overall"].values():
        assert 0.0 <= figures["image_auroc"] <= 1.0 and 0.0 <= figures["pixel_auroc"] <= 1.0
    assert all((config.work_dir / stage / "stage.json").is_file() for stage in STAGES)


def test_recipe_rejects_unknown_keys_naming_them(tmp_path):
    path = _write_recipe(tmp_path, warmup={"steps": 2, "learnig_rate": 1e-3})
    with pytest.raises(InspectdError, match=r"warmup\.learnig_rate"):
        load_recipe(path)


FOLDER_DATA = {"kind": "labelled_folder", "path": "line", "image_size": 56, "surface": "tile",
               "validation_fraction": 0.25, "drawn_validation_images": 6}


def _line_folder(tmp_path: Path) -> Path:
    """A small OK/NG folder (good/ + two defect kinds) and an MVTec-layout dev set beside it."""
    line = tmp_path / "line"
    for kind, seeds in (("good", range(0, 24)), ("scratch", range(24, 32)), ("hole", range(32, 38))):
        (line / kind).mkdir(parents=True)
        for seed in seeds:
            make_sample(seed, 96, anomalous=kind != "good").image.convert("L").save(line / kind / f"{seed}.png")
    write_mvtec_layout(tmp_path / "dev", "tile", range(900, 908), 96)
    return line


def test_recipe_learns_from_a_labelled_folder_and_publishes_its_card(tmp_path):
    _line_folder(tmp_path)
    path = _write_recipe(
        tmp_path,
        data={**FOLDER_DATA, "cgro_drawn_images": 4},
        score={"method": "reasoning_branch", "branches": 2, "views": 2},  # calibration and eval see both views
        real={"layer_start": 0, "map_scaling": "score_gated"},
        zero_shot=["dev"],
        warmup={"steps": 150, "batch_size": 8, "learning_rate": 3e-3, "warmup_steps": 10},
        card_notes=["Seed 3 replaced the build of last week: it leads on every validation figure."],
    )
    config = load_recipe(path)
    run_recipe(config)
    manifest = verify_bundle(config.output)
    assert manifest.score.method == "reasoning_branch" and manifest.real.map_scaling == "score_gated"
    assert manifest.score.views == 2 and '"views": 2' in (config.output / "MODEL_CARD.md").read_text()
    assert manifest.image_size == (56, 56)
    card = (config.output / "MODEL_CARD.md").read_text()
    assert "learnt one production line" in card
    assert "training 18 good + 10 defective, validation 6 good + 4 defective" in card
    assert "held out, photo by photo: no `data.parts_file`): training" in card
    assert re.search(r"\d+ of the 10 validation photos look like a training photo \(48 px grey correlation", card)
    assert "held-out good images + drawn defects" in card and "real dev subset" in card
    # the card says what CGRO was given and rewarded with, drawn-defect rows included
    assert "and 4 good training images with a drawn defect" in card
    assert "+ localization (drawn-defect rows only)" in card and "sampling temperature 1.0" in card
    # why this build was published is on the card; the limits say what the mirror views cost
    assert "## Notes\n\nSeed 3 replaced the build of last week" in card
    assert "over 2 mirror views, so 2 model runs per image" in card
    evaluation = json.loads((config.work_dir / "eval" / "stage.json").read_text())
    assert set(evaluation["overall"]) == {"warmup-drawn_validation", "cgro-drawn_validation",
                                          "warmup-zero_shot", "cgro-zero_shot"}
    report = json.loads((config.work_dir / "eval" / "cgro-zero_shot.json").read_text())
    assert any(c["category"].startswith("tile/") for c in report["categories"])  # per defect kind
    calibration = config.work_dir / "export" / "validation"
    assert sorted(p.name for p in calibration.iterdir()) == ["good", "hole", "scratch"]
    export = json.loads((config.work_dir / "export" / "stage.json").read_text())
    assert export["cgro"]["calibration_images"] == 10  # the held-out real images
    low, high = export["cgro"]["calibration_image_auroc_interval"]  # a plant sees how far 10 images can be trusted
    assert (f"On those 10 calibration images the score's image AUROC is "
            f"{100 * export['cgro']['calibration_image_auroc']:.1f} (95 % interval {100 * low:.1f}-{100 * high:.1f}; "
            "balanced accuracy") in card
    assert "95 % interval" in export["cgro"]["calibration_expected"]
    assert "95 % intervals (AUROC and AUPR: bootstrap over the images" in card  # under each eval table


def test_a_recipe_with_tiles_trains_on_tiles_and_publishes_a_bundle_that_inspects_them(tmp_path):
    """score.tiles in a recipe: the bundle inspects tiles (its manifest says so), its drawn validation is drawn at
    the tiles' source size, calibration and eval ran tiled inspection (each result has its tiles), the card says
    what it costs."""
    from PIL import Image

    from inspectd.bundle.load import load_bundle
    from inspectd.inspection.inspector import Inspector, InspectorOptions

    _line_folder(tmp_path)
    path = _write_recipe(
        tmp_path, data={**FOLDER_DATA, "cgro_drawn_images": 4}, real={"layer_start": 0, "map_scaling": "score_gated"},
        score={"method": "answer", "tiles": 2, "tile_share": 0.6, "tile_score": "max"},
        warmup={"steps": 150, "batch_size": 8, "learning_rate": 3e-3, "warmup_steps": 10})
    config = load_recipe(path)
    run_recipe(config)
    manifest = verify_bundle(config.output)
    assert (manifest.score.tiles, manifest.score.tile_share, manifest.score.tile_score) == (2, 0.6, "max")
    drawn = sorted((config.work_dir / "eval" / "drawn-validation").rglob("*.png"))
    assert drawn and {Image.open(p).size for p in drawn} == {(93, 93)}  # 56 px / 0.6: a tile is 56 px
    report = json.loads((config.work_dir / "eval" / "cgro-drawn_validation.json").read_text())
    assert report["overall"]["pixel_auroc"] >= 0 and report["overall"]["peak_on_defect"] >= 0
    card = (config.output / "MODEL_CARD.md").read_text()
    assert "2x2 tiles of 60% of the photo's side" in card and "tile examples" in card
    inspector = Inspector(bundle := load_bundle(config.output, "cpu"), bundle.manifest.real, InspectorOptions())
    (result,) = inspector.inspect_files([drawn[0]])
    assert len(result.tiles) == 4 and result.anomaly_map.shape == (93, 93)


def test_recipe_with_several_seeds_builds_each_and_publishes_the_best_on_validation(tmp_path):
    _line_folder(tmp_path)
    config = load_recipe(_write_recipe(
        tmp_path, threads=1, seeds=[3, 4], parallel_builds=2, zero_shot=["dev"],
        data={**FOLDER_DATA, "drawn_validation_seed": 5}, real={"layer_start": 0, "map_scaling": "score_gated"},
        warmup={"steps": 150, "batch_size": 8, "learning_rate": 3e-3, "warmup_steps": 10}))
    run_recipe(config)

    builds = {seed: config.work_dir / f"seed-{seed}" for seed in (3, 4)}
    losses = {seed: json.loads((folder / "warmup" / "stage.json").read_text())["losses"]
              for seed, folder in builds.items()}
    assert losses[3] != losses[4]  # two warm-ups, one per seed
    drawn = {seed: sorted((p.relative_to(folder), p.read_bytes()) for p in
                          (folder / "eval" / "drawn-validation").rglob("*.png")) for seed, folder in builds.items()}
    assert drawn[3] == drawn[4]  # both judged on the one validation set drawn with seed 5
    figures = {seed: json.loads((folder / "eval" / "stage.json").read_text())["overall"]
               for seed, folder in builds.items()}
    best = max((3, 4), key=lambda seed: figures[seed]["cgro-drawn_validation"]["pixel_auroc"])
    published = json.loads((config.work_dir / "publish" / "stage.json").read_text())
    assert published["seed"] == best
    assert verify_bundle(config.output).name == "micro"
    assert (config.output / "model.safetensors").read_bytes() == (
        builds[best] / "export" / "cgro" / "model.safetensors").read_bytes()
    card = (config.output / "MODEL_CARD.md").read_text()
    assert "## Builds" in card and f"| {best} (published) | + CGRO |" in card
    assert f"Warm-up (seed {best})" in card and "2 were built side by side" in card

    stamps = {p: p.stat().st_mtime_ns for p in config.work_dir.rglob("stage.json")}
    run_recipe(config)  # every build and the publication are done: nothing runs again
    assert {p: p.stat().st_mtime_ns for p in config.work_dir.rglob("stage.json")} == stamps


def test_several_seeds_need_one_drawn_validation_set_and_a_labelled_folder(tmp_path):
    with pytest.raises(InspectdError, match="drawn_validation_seed"):
        load_recipe(_write_recipe(tmp_path, seeds=[1, 2], data=FOLDER_DATA))
    with pytest.raises(InspectdError, match="labelled_folder"):
        load_recipe(_write_recipe(tmp_path, seeds=[1, 2]))
    with pytest.raises(InspectdError, match="repeat"):
        load_recipe(_write_recipe(tmp_path, seeds=[1, 1], data={**FOLDER_DATA, "drawn_validation_seed": 1}))


def test_the_recipe_calibration_key_sets_the_exports_threshold_rule(tmp_path):
    """`calibration: {target_recall: ...}` reaches both exports; without it, balanced accuracy as before."""
    from inspectd.training.release_stages import export_request

    default = load_recipe(_write_recipe(tmp_path))
    assert default.calibration is None
    for variant in ("warmup", "cgro"):
        assert export_request(default, variant, tmp_path / variant, tmp_path / "val").target_recall is None
    targeted = load_recipe(_write_recipe(tmp_path, calibration={"target_recall": 0.95}))
    request = export_request(targeted, "cgro", tmp_path / "cgro", tmp_path / "val")
    assert request.target_recall == 0.95 and request.calibration == tmp_path / "val"
    assert request.adapter == targeted.work_dir / "cgro" / "adapter"
    assert export_request(targeted, "warmup", tmp_path / "w", tmp_path / "val").adapter is None
    for bad in (0, 1.5):
        with pytest.raises(InspectdError, match=r"calibration\.target_recall"):
            load_recipe(_write_recipe(tmp_path, calibration={"target_recall": bad}))


def _reviewed_store(tmp_path: Path) -> Path:
    """An inspectd config whose store holds 24 inspected, archived photos and the engineers' reviews of 23 of
    them (some overruling the model); one photo was rewritten after its inspection. Returns the config."""
    import hashlib
    import time

    from inspectd.config import AlertSettings, ArchiveSettings
    from inspectd.daemon.archive import Archiver
    from inspectd.daemon.items import ReadyFile
    from inspectd.daemon.recorder import InspectionRecorder, Processed
    from inspectd.real.params import RealParams
    from inspectd.store.database import migrate, open_engine
    from inspectd.store.reviews import add_review
    from inspectd.verdict import Verdict
    from tests.test_store_cli import _result

    config = tmp_path / "plant.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"bundle": "bundle"}, "store": {"url": f"sqlite:///{tmp_path / 'var' / 'store.db'}"},
        "watch": {"folders": [{"path": str(tmp_path / "drop"), "camera": "line1"}]},
        "archive": {"folder": str(tmp_path / "archive"), "failed_folder": str(tmp_path / "failed")}}))
    engine = open_engine(f"sqlite:///{tmp_path / 'var' / 'store.db'}")
    migrate(engine)
    recorder = InspectionRecorder(engine, None, RealParams(), Archiver(ArchiveSettings(
        folder=tmp_path / "archive", failed_folder=tmp_path / "failed")), AlertSettings(), save_maps=True)
    drop = tmp_path / "drop"
    drop.mkdir()
    ids = {}
    for seed in range(24):
        defective = seed % 3 == 0  # 8 defective, 16 good
        path = drop / f"part-{seed}.png"
        make_sample(seed, 96, anomalous=defective).image.convert("L").save(path)
        model_says = Verdict.ANOMALOUS if (defective != (seed in (3, 4))) else Verdict.NORMAL  # two model errors
        ready = ReadyFile(path, "line1", time.time())
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        ids[seed] = recorder.record(Processed(ready, sha, 100, _result(str(path), model_says, 0.7), time.time()))
    for seed, inspection_id in ids.items():
        if seed != 23:  # one part nobody reviewed
            add_review(engine, inspection_id, "defect" if seed % 3 == 0 else "good", "", "ann")
    with engine.connect() as connection:
        from sqlalchemy import text

        rewritten = connection.execute(text("SELECT archived_path FROM inspections WHERE id = :i"),
                                       {"i": ids[1]}).scalar_one()
    with open(rewritten, "r+b") as handle:  # the camera rewrote it after the inspection
        handle.seek(100)
        handle.write(b"\x00" * 8)
    engine.dispose()
    return config


def test_recipe_learns_from_the_reviews_in_the_store(tmp_path):
    """The loop closes through the recipe: reviewed rows (label = newest review, whatever the model said) are
    exported once, split into training and validation, trained on, calibrated, evaluated and carded."""
    plant = _reviewed_store(tmp_path)
    path = _write_recipe(
        tmp_path,
        data={**FOLDER_DATA, "kind": "reviewed_store", "config": "plant.yaml", "path": None,
              "validation_fraction": 0.25},
        warmup={"steps": 150, "batch_size": 8, "learning_rate": 3e-3, "warmup_steps": 10},
        zero_shot=[],
    )
    config = load_recipe(path)
    assert config.data.config == plant
    run_recipe(config)
    export = json.loads((config.work_dir / "reviewed-data" / "export.json").read_text())
    assert (export["good"], export["defect"], len(export["changed"])) == (14, 8, 1)  # 23 reviewed, 1 rewritten
    card = (config.output / "MODEL_CARD.md").read_text()
    assert "the inspections its engineers reviewed in the console (the store of `plant.yaml`" in card
    assert "training 10 good + 6 defective, validation 4 good + 2 defective" in card
    exported = json.loads((config.work_dir / "export" / "stage.json").read_text())
    assert exported["cgro"]["calibration_images"] == 6  # the held-out reviewed rows calibrate the threshold
    verify_bundle(config.output)


def test_a_recipe_on_too_few_reviews_says_so(tmp_path):
    plant = _reviewed_store(tmp_path)
    path = _write_recipe(tmp_path, data={**FOLDER_DATA, "kind": "reviewed_store", "config": str(plant),
                                         "path": None, "camera": "line9"})
    with pytest.raises(InspectdError, match="0 good and 0 defective reviewed inspections"):
        run_recipe(load_recipe(path))


@pytest.fixture(scope="module")
def checkpoint_folder(format_bundle, tmp_path_factory) -> Path:
    """A Qwen2.5-VL checkpoint folder as a download has it (config.json, bfloat16 safetensors, tokenizer and
    processor files; no inspectd manifest), holding the tiny format model's weights so that it replies in
    the R1 format: the 7B path at test size."""
    import torch

    from inspectd.bundle.load import load_bundle

    folder = tmp_path_factory.mktemp("download") / "Qwen2.5-VL-tiny-Instruct"
    bundle = load_bundle(format_bundle, "cpu")
    bundle.model.to(torch.bfloat16).save_pretrained(folder, safe_serialization=True)
    bundle.processor.tokenizer.padding_side = "right"  # as a download's tokenizer pads
    bundle.processor.save_pretrained(folder)
    assert not (folder / "bundle.json").exists()
    return folder


def test_recipe_warms_up_a_checkpoint_folder_and_runs_cgro_on_it(checkpoint_folder, tmp_path):
    """``init`` a checkpoint folder (not a bundle): the warm-up trains float32 master weights and saves its
    model in the checkpoint's own dtype (a 7B download: bfloat16); CGRO loads it in cgro.base_precision."""
    from safetensors import safe_open

    config = load_recipe(_write_recipe(
        tmp_path, init=str(checkpoint_folder), warmup={"steps": 4, "batch_size": 2, "warmup_steps": 1},
        cgro={**MICRO["cgro"], "base_precision": "bfloat16"}))
    run_recipe(config, stop_after="cgro")
    model = config.work_dir / "warmup" / "model"
    manifest = verify_bundle(model)
    assert manifest.dtype == "bfloat16" and manifest.base_model.startswith("Qwen2.5-VL-tiny-Instruct by the micro")
    with safe_open(str(model / "model.safetensors"), "pt") as weights:
        assert {weights.get_slice(name).get_dtype() for name in weights.keys()} == {"BF16"}
    assert len(json.loads((config.work_dir / "warmup" / "stage.json").read_text())["losses"]) == 4
    cgro = json.loads((config.work_dir / "cgro" / "stage.json").read_text())
    assert cgro["precision"] == "bfloat16" and "rewards/format_reward/mean" in cgro["rewards"]
    assert (config.work_dir / "cgro" / "adapter" / "adapter_config.json").is_file()
    assert not (config.work_dir / "cgro" / "checkpoints").exists(), "removed once the stage is recorded"


def test_recipe_without_warmup_tunes_the_checkpoint_itself_and_publishes_its_card(checkpoint_folder, tmp_path):
    """``warmup.steps: 0`` (the 7B path): CGRO trains on the checkpoint as it is, both bundles are exported
    from it (the "warm-up only" one is the untuned checkpoint), calibrated, evaluated and carded."""
    config = load_recipe(_write_recipe(tmp_path, init=str(checkpoint_folder), warmup={"steps": 0}, zero_shot=[]))
    run_recipe(config)
    assert json.loads((config.work_dir / "warmup" / "stage.json").read_text())["skipped"] is True
    assert not (config.work_dir / "warmup" / "model").exists(), "nothing copied: CGRO read the checkpoint"
    manifest = verify_bundle(config.output)
    assert manifest.base_model == "Qwen2.5-VL-tiny-Instruct by the micro recipe (untuned)"
    assert manifest.image_size == (112, 112) and manifest.max_new_tokens == 32
    card = (config.output / "MODEL_CARD.md").read_text()
    assert "Warm-up: none (`warmup.steps: 0`); CGRO started from `Qwen2.5-VL-tiny-Instruct` as it was" in card
    assert "(the checkpoint's own tokenizer)" in card and "started from the weights of" in card
    evaluation = json.loads((config.work_dir / "eval" / "stage.json").read_text())
    assert set(evaluation["overall"]) == {"warmup-synthetic", "cgro-synthetic"}


def test_plan_reads_the_checkpoint_the_recipes_cgro_stage_loads(checkpoint_folder, tmp_path, capsys):
    from inspectd.training.cli import main

    path = _write_recipe(tmp_path, init=str(checkpoint_folder), warmup={"steps": 0})
    assert main(["plan", "--config", str(path)]) == 0
    table = capsys.readouterr().out
    assert f"CGRO memory plan for {checkpoint_folder} (float32 base weights, image 112 x 112" in table
    assert "KV cache" in table and "peak (" in table
    fresh = _write_recipe(tmp_path)  # a fresh small model: no checkpoint until the warm-up ran
    assert main(["plan", "--config", str(fresh)]) == 2
    assert "--stop-after warmup" in capsys.readouterr().err


def test_a_recipe_without_warmup_needs_init(tmp_path):
    with pytest.raises(InspectdError, match="warmup.steps 0 .* needs `init`"):
        load_recipe(_write_recipe(tmp_path, warmup={"steps": 0}))
    with pytest.raises(InspectdError, match="init: .* has no config.json"):
        run_recipe(load_recipe(_write_recipe(tmp_path, init="nowhere")))


# --- resuming a stage after a real interruption (SIGKILL) ------------------------------------------------------------


def _recipe_process(path: Path, stop_after: str, log: Path):
    """``inspectd-train recipe --config path --stop-after stop_after`` in a subprocess, its output to ``log``."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    with open(log, "wb") as output:
        return subprocess.Popen([sys.executable, "-m", "inspectd.training.cli", "recipe", "--config", str(path),
                                 "--stop-after", stop_after], cwd=REPO, env=env, stdout=output,
                                stderr=subprocess.STDOUT, start_new_session=True)  # its own group to signal


def _kill_when(process, ready, log: Path, timeout: float = 300) -> None:
    """SIGKILL ``process`` as soon as ``ready()``; fails if it ended or took too long first."""
    import time

    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if process.poll() is not None:
                pytest.fail(f"the run ended ({process.returncode}) before it could be interrupted:\n"
                            + log.read_text(errors="replace")[-3000:])
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint to interrupt after in time:\n" + log.read_text(errors="replace")[-3000:])
            time.sleep(0.02)
    finally:
        process.kill()  # SIGKILL: no handler runs, as when a box is switched off
        process.wait(timeout=60)


def test_an_interrupted_warmup_goes_on_exactly_where_it_stopped(tmp_path, caplog):
    """A warm-up killed mid-stage and run again goes on from its newest checkpoint: the losses of every step
    and the final weights are those of a run never interrupted (on the CPU, bit for bit)."""
    import torch
    from safetensors.torch import load_file

    from inspectd.training.train_stages import warmup_checkpoints
    from inspectd.training.warmup import newest_checkpoint

    warmup = {"steps": 60, "batch_size": 2, "learning_rate": 3e-3, "warmup_steps": 5, "save_steps": 5,
              "device": "cpu"}
    overrides = {"threads": 1, "warmup": warmup, "data": {**MICRO["data"], "image_size": 56}}
    configs = {}
    for name in ("whole", "cut"):
        (tmp_path / name).mkdir()
        configs[name] = load_recipe(_write_recipe(tmp_path / name, **overrides))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the recipe's subprocess runs (threads: 1): float sums in one order
    try:
        run_recipe(configs["whole"], stop_after="warmup")
        checkpoints = warmup_checkpoints(configs["cut"])

        def step_of(folder):
            return int(folder.name.split("-")[1]) if folder else 0

        log = tmp_path / "cut.log"
        process = _recipe_process(tmp_path / "cut" / "micro.yaml", "warmup", log)
        _kill_when(process, lambda: step_of(newest_checkpoint(checkpoints)) >= 10, log)
        warmup_stage = configs["cut"].work_dir / "warmup"
        assert not (warmup_stage / "stage.json").exists(), "killed mid-stage"
        killed_at = step_of(newest_checkpoint(checkpoints))
        assert 10 <= killed_at < 60  # the older one may be there too: killed between renaming and removing

        with caplog.at_level("INFO", logger="inspectd.train"):
            run_recipe(configs["cut"], stop_after="warmup")
    finally:
        torch.set_num_threads(threads)
    assert f"resuming from the checkpoint at step {killed_at} of 60" in caplog.text
    whole, cut = (json.loads((c.work_dir / "warmup" / "stage.json").read_text()) for c in configs.values())
    assert cut["resumed_from"] == killed_at and whole["resumed_from"] is None
    assert len(cut["losses"]) == 60 and cut["losses"] == whole["losses"]
    weights = {name: c.work_dir / "warmup" / "model" / "model.safetensors" for name, c in configs.items()}
    assert weights["cut"].read_bytes() == weights["whole"].read_bytes(), {
        k: float((v - load_file(weights["whole"])[k]).abs().max()) for k, v in load_file(weights["cut"]).items()}
    assert not checkpoints.exists(), "removed once the stage is recorded"
    assert not warmup_checkpoints(configs["whole"]).exists()


def test_an_interrupted_cgro_stage_goes_on_from_its_checkpoint(tmp_path, caplog):
    """CGRO killed after its second checkpoint and run again goes on from that checkpoint (trl's state says
    so, its first steps' log entries kept), records max_steps steps, then removes its checkpoints."""
    from transformers.utils import logging as hf_logging

    config = load_recipe(_write_recipe(
        tmp_path, threads=1, data={**MICRO["data"], "image_size": 56},
        warmup={"steps": 4, "batch_size": 2, "warmup_steps": 1, "device": "cpu"},
        cgro={**MICRO["cgro"], "max_steps": 4, "save_steps": 1}))
    run_recipe(config, stop_after="warmup")
    checkpoints = config.work_dir / "cgro" / "checkpoints"
    second = checkpoints / "checkpoint-2" / "trainer_state.json"  # trl writes it last

    def second_saved() -> bool:
        try:
            return json.loads(second.read_text())["global_step"] == 2
        except (OSError, ValueError):
            return False

    log = tmp_path / "cgro.log"
    _kill_when(_recipe_process(tmp_path / "micro.yaml", "cgro", log), second_saved, log)
    assert not (config.work_dir / "cgro" / "stage.json").exists(), "killed mid-stage"
    before = [e for e in json.loads(second.read_text())["log_history"] if "reward" in e]
    assert [e["step"] for e in before] == [1, 2]

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_info()
    hf_logging.enable_propagation()
    try:
        with caplog.at_level("INFO"):
            run_recipe(config, stop_after="cgro")
    finally:
        hf_logging.disable_propagation()
        hf_logging.set_verbosity(verbosity)
    resumed = re.findall(r"Resuming training from checkpoint with epoch \d+ and global step (\d+)", caplog.text)
    assert resumed and set(resumed) == {"2"}, "trl's trainer went on from checkpoint-2"
    record = json.loads((config.work_dir / "cgro" / "stage.json").read_text())
    steps = [e for e in record["log_history"] if "reward" in e]
    assert [e["step"] for e in steps] == [1, 2, 3, 4]  # max_steps, each once: went on, did not start over
    assert steps[:2] == before, "the killed run's first two steps as its checkpoint logged them (step_time too)"
    assert (config.work_dir / "cgro" / "adapter" / "adapter_config.json").is_file()
    assert not checkpoints.exists(), "removed once the stage is recorded"


def _reply_example(i: int):
    """The i-th synthetic warm-up example (image and reasoning reply) of the warm-up tests below."""
    from inspectd.training.warmup_config import ReplyExample, reasoning_reply

    s = make_sample(7_000 + i, 56)
    return ReplyExample(s.image, reasoning_reply(s))


def test_a_warmup_checkpoint_of_other_settings_is_not_resumed(tmp_path, caplog):
    """``train_warmup`` on a folder with a checkpoint: the same settings go on from it (same losses as the run
    that wrote it); changed settings or data start at step 0, with a warning, and replace it."""
    from inspectd.bundle.manifest import PromptSpec
    from inspectd.model.tiny import build_tiny_model
    from inspectd.model.tiny_spec import TinySpec
    from inspectd.training.warmup import newest_checkpoint, train_warmup
    from inspectd.training.warmup_config import WarmupSettings

    def train(identity=None, **changes):
        model, processor = build_tiny_model(TinySpec(**MICRO["model"]))
        settings = WarmupSettings(steps=6, batch_size=2, warmup_steps=1, save_steps=2, device="cpu", **changes)
        return train_warmup(model, processor, PromptSpec(), _reply_example, settings, checkpoints=tmp_path / "ck",
                            identity=identity or {"data": 1})

    first = train()
    assert first.resumed_from is None and [p.name for p in (tmp_path / "ck").iterdir()] == ["step-00000004"]
    again = train()  # the newest checkpoint only is kept; the last step saves none (the stage saves the model)
    assert again.resumed_from == 4 and again.losses == first.losses
    with caplog.at_level("WARNING", logger="inspectd.train"):
        other = train(learning_rate=1e-3)
        assert other.resumed_from is None and len(other.losses) == 6 and "not resumed" in caplog.text
        assert train(identity={"data": 2}).resumed_from is None
    assert newest_checkpoint(tmp_path / "ck").name == "step-00000004"  # rewritten by the last run
    assert train(identity={"data": 2}).resumed_from == 4


def test_the_warmup_log_says_how_long_the_stage_has_left(tmp_path, caplog):
    """A warm-up of hours on a CPU: each progress line gives the time left at this run's pace (a resumed run
    counts only its own steps), in the unit an operator reads; the last line has none."""
    import re

    from inspectd.bundle.manifest import PromptSpec
    from inspectd.model.tiny import build_tiny_model
    from inspectd.model.tiny_spec import TinySpec
    from inspectd.training.warmup import time_left, train_warmup
    from inspectd.training.warmup_config import WarmupSettings

    assert time_left(100.0, 50, 3950) == ", 2 h 12 min left"  # 2 s a step
    assert time_left(100.0, 50, 20) == ", 40 s left"
    assert time_left(100.0, 50, 300) == ", 10 min left"
    assert time_left(100.0, 50, 0) == "" and time_left(0.0, 0, 10) == ""

    model, processor = build_tiny_model(TinySpec(**MICRO["model"]))
    with caplog.at_level("INFO", logger="inspectd.train"):
        train_warmup(model, processor, PromptSpec(), _reply_example,
                     WarmupSettings(steps=3, batch_size=2, warmup_steps=1, save_steps=0, device="cpu"), log_every=1)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("warm-up step")]
    assert [line.split(" loss")[0] for line in lines] == ["warm-up step 1/3", "warm-up step 2/3", "warm-up step 3/3"]
    assert all(re.search(r"\(\d+ s, \d+ (s|min) left\)$", line) for line in lines[:2]), lines
    assert re.search(r"\(\d+ s\)$", lines[2]), lines


WARMUP_UNDER_TORCHRUN = '''
import json, sys
from pathlib import Path
import torch
from inspectd.bundle.manifest import PromptSpec
from inspectd.data.synthetic import make_sample
from inspectd.model.tiny import build_tiny_model
from inspectd.model.tiny_spec import TinySpec
from inspectd.training.stage_record import is_main_process, leave_the_processes
from inspectd.training.warmup import train_warmup
from inspectd.training.warmup_config import ReplyExample, WarmupSettings, reasoning_reply

def sample(i):
    s = make_sample(7_000 + i, 56)
    return ReplyExample(s.image, reasoning_reply(s))

out, run_name = Path(sys.argv[1]), sys.argv[2]
model, processor = build_tiny_model(TinySpec(**json.loads(sys.argv[3])))
run = train_warmup(model, processor, PromptSpec(), sample,
                   WarmupSettings(steps=6, batch_size=2, warmup_steps=1, save_steps=2, device="cpu"),
                   checkpoints=out / "checkpoints")
if is_main_process():
    (out / f"{run_name}.json").write_text(json.dumps({"losses": run.losses, "resumed_from": run.resumed_from}))
    torch.save(model.state_dict(), out / f"{run_name}.pt")
leave_the_processes()  # as inspectd-train does: else a rank may abort at exit (seen once in CI)
'''


def test_a_warmup_under_two_processes_resumes_from_its_checkpoint(tmp_path):
    """Under torchrun (two CPU processes, gloo) rank 0 writes the checkpoint and both ranks go on from it: the
    resumed run's losses and weights are the run's that wrote it."""
    import os
    import subprocess
    import sys

    import torch

    from tests.conftest import REPO
    from tests.test_warmup_distributed import _free_port

    script = tmp_path / "warmup.py"
    script.write_text(WARMUP_UNDER_TORCHRUN)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    for name in ("first", "resumed"):
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(script),
                               str(tmp_path), name, json.dumps(MICRO["model"])],
                              capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000004"]
    first, resumed = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("first", "resumed"))
    assert (first["resumed_from"], resumed["resumed_from"]) == (None, 4)
    assert len(resumed["losses"]) == 6 and resumed["losses"] == first["losses"]
    weights = [torch.load(tmp_path / f"{name}.pt") for name in ("first", "resumed")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_recipe_without_warmup_tunes_a_quantized_bundle_through_a_float32_copy(format_bundle, tmp_path):
    """``init`` a deployed 4-bit bundle with ``warmup.steps: 0`` (retraining the line's model on its reviews):
    LoRA cannot be merged into NF4 weights, so the skipped warm-up writes a float32 copy once and CGRO and the
    export start from it; the published bundle verifies."""
    from inspectd.bundle.files import read_manifest
    from inspectd.export.exporter import ExportRequest, export_bundle

    deployed = tmp_path / "deployed"
    export_bundle(ExportRequest(base=format_bundle, out=deployed, name="deployed", quantization="nf4"))
    assert read_manifest(deployed).quantization == "nf4"
    config = load_recipe(_write_recipe(tmp_path, init=str(deployed), warmup={"steps": 0}, zero_shot=[]))
    run_recipe(config)
    copy = read_manifest(config.work_dir / "warmup" / "model")
    assert copy.quantization == "none" and copy.dtype == "float32"
    manifest = verify_bundle(config.output)
    assert manifest.quantization == "nf4" and manifest.image_size == (112, 112)
    assert json.loads((config.work_dir / "warmup" / "stage.json").read_text())["skipped"] is True


# --- a several-seed recipe's build processes end with it --------------------------------------------------------------


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie (a container's init may leave orphans unreaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL", "SIGTERM while stopped"])
def test_stopping_a_several_seed_recipe_stops_its_builds(tmp_path, how):
    """systemctl stop (SIGTERM) or a kill -9 of the recipe must not leave its seed builds training unseen,
    writing into the work folder that the next run resumes from; nor must a shell's ``kill %1`` of a recipe
    stopped with Ctrl-Z (SIGTERM to the stopped process group, then SIGCONT: any of the recipe's threads may
    take the signal, and a recipe whose main thread waited without end went on building)."""
    import signal
    import time

    _line_folder(tmp_path)
    path = _write_recipe(tmp_path, threads=1, seeds=[3, 4], parallel_builds=2, data={**FOLDER_DATA,
                         "drawn_validation_seed": 5}, warmup={"steps": 100_000, "batch_size": 2, "save_steps": 50})
    log = tmp_path / "recipe.log"
    process = _recipe_process(path, "warmup", log)
    builds: list[int] = []
    deadline = time.monotonic() + 300
    try:
        while log.read_text(errors="replace").count("warm-up step 1/") < 2:  # both builds are training
            assert process.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the builds did not start:\n" + log.read_text(errors="replace")
            time.sleep(0.2)
        builds = [pid for pid in _children(process.pid) if _running(pid)]
        assert len(builds) >= 2, builds  # the two builds (and multiprocessing's resource tracker)
        if how == "SIGTERM while stopped":
            group = os.getpgid(process.pid)
            os.killpg(group, signal.SIGSTOP)
            time.sleep(0.5)
            os.killpg(group, signal.SIGTERM)
            os.killpg(group, signal.SIGCONT)
        else:
            process.send_signal(getattr(signal, how))
        process.wait(timeout=60)
        deadline = time.monotonic() + 30
        while any(_running(pid) for pid in builds) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in builds if _running(pid)], log.read_text(errors="replace")[-3000:]
    finally:
        process.kill()
        for pid in builds:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
    if how == "SIGKILL":
        assert "ended: this build stops" in log.read_text(errors="replace")
