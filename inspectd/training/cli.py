"""``inspectd-train``: supervised warm-up and CGRO from one YAML file.

    inspectd-train warmup --config train.yaml   # supervised cold start on reasoning texts
    inspectd-train cgro   --config train.yaml [--resume]
    inspectd-train recipe --config models/recipes/tiny-cgro.yaml [--stop-after STAGE]
                                            # build a small model end to end (inspectd.training.recipe)
    inspectd-train plan   --config train.yaml [--base FOLDER] [--measure]
                                            # CGRO's peak GPU memory by component, before a run

Multi-GPU: ``accelerate launch --num_processes N -m inspectd.training.cli warmup|cgro --config ...``
(distributed data parallel, ``batch_size`` is per process; cgro: set ``use_cpu: false``).
The stages' old names, ``sft`` and ``grpo``, are still taken (commands and YAML sections), with a warning.
"""

from __future__ import annotations

import argparse
import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from inspectd.cli.common import run_command
from inspectd.logs import offline, setup_logging
from inspectd.config import resolve_beside, validated_yaml
from inspectd.errors import InspectdError
from inspectd.strict_model import StrictModel
from inspectd.training.cgro_config import CgroSettings
from inspectd.training.recipe import STAGES, load_recipe, run_recipe
from inspectd.training.stage_names import OLD_STAGE_NAMES, stage_folder, stage_name, with_new_keys
from inspectd.training.warmup_config import WarmupSettings

log = logging.getLogger("inspectd.train")


class DataConfig(StrictModel):
    kind: Literal["synthetic", "labelled", "mvtec", "store"] = "synthetic"
    path: Path | None = Field(None, description="the folder; for kind store, the inspectd config whose store and "
                                                "archive hold the reviewed inspections")
    since: datetime | None = Field(None, description="kind store: only inspections since (UTC)")
    camera: str | None = Field(None, description="kind store: only this camera")
    count: int = Field(512, ge=1, description="synthetic images")
    seed_offset: int = Field(1_000_000, ge=0, description="synthetic seeds start here; keep eval seeds below")
    image_size: int = Field(168, ge=28)


class TrainConfig(StrictModel):
    base: Path = Field(description="model folder: a bundle or a local Qwen2.5-VL checkpoint")
    output_dir: Path
    seed: int = 0
    data: DataConfig = DataConfig()
    warmup: WarmupSettings = WarmupSettings(steps=400, learning_rate=5e-4, warmup_steps=30)
    cgro: CgroSettings = CgroSettings()

    @model_validator(mode="before")
    @classmethod
    def _old_section_names(cls, raw):
        return with_new_keys(raw, OLD_STAGE_NAMES)


def load_config(path: Path) -> TrainConfig:
    config = validated_yaml(Path(path), TrainConfig, "training config")
    base = Path(path).resolve().parent
    return config.model_copy(update={
        "base": resolve_beside(base, config.base), "output_dir": resolve_beside(base, config.output_dir),
        "data": config.data.model_copy(update={"path": resolve_beside(base, config.data.path)}),
    })


def _image_size(config: TrainConfig) -> tuple[int, int]:
    """The size the daemon will feed: the base bundle's, else data.image_size (a real processor takes 12.8 MP)."""
    from inspectd.bundle.files import MANIFEST_NAME, read_manifest

    if (config.base / MANIFEST_NAME).is_file() and read_manifest(config.base).image_size is not None:
        return tuple(read_manifest(config.base).image_size)
    return (config.data.image_size, config.data.image_size)


def _labelled_images(config: TrainConfig):
    """(image, anomalous) pairs at the model's input size; image-level labels only."""
    from PIL import Image

    from inspectd.data.layouts import read_labelled_folder, read_mvtec
    from inspectd.data.synthetic import make_sample
    from inspectd.inspection.images import load_image

    data = config.data
    if data.kind == "synthetic":
        for i in range(data.count):
            sample = make_sample(data.seed_offset + i, data.image_size)
            yield sample.image, sample.anomalous
        return
    if data.path is None:
        raise InspectdError(f"data.path is needed for data.kind {data.kind!r}")
    size = _image_size(config)
    dataset = read_mvtec(data.path) if data.kind == "mvtec" else read_labelled_folder(data.path)
    for image in dataset.images:
        yield load_image(image.path, 10**8, 10**9).resize(size, Image.Resampling.BICUBIC), image.anomalous


def _store_as_folder(config: TrainConfig) -> TrainConfig:
    """``kind: store``: the reviewed inspections exported (newest review = label) to output_dir/store-data,
    then read as a labelled folder. Rebuilt on every run, so new reviews are taken; one process writes it."""
    if config.data.kind != "store":
        return config
    from accelerate import PartialState

    from inspectd.data.reviewed import export_reviewed_of

    if config.data.path is None:
        raise InspectdError("data.path: for data.kind store, the inspectd config file whose store holds the reviews")
    folder = config.output_dir / "store-data"
    state = PartialState()
    if state.is_main_process:
        done = export_reviewed_of(config.data.path, folder, config.data.since, config.data.camera, replace=True)
        log.info("training data from the store: %d good, %d defect reviewed rows (%d without a photo, skipped)",
                 done.good, done.defect, len(done.missing))
    state.wait_for_everyone()
    return config.model_copy(update={"data": config.data.model_copy(update={"kind": "labelled", "path": folder})})


def _processor(base: Path):
    from inspectd.bundle.processor import ImageOnlyQwenProcessor

    processor = ImageOnlyQwenProcessor.from_pretrained(base, local_files_only=True)
    processor.tokenizer.padding_side = "left"  # a real checkpoint's tokenizer pads right; generation needs left
    return processor


def _load_float32(base: Path):
    """The warm-up's model in float32 (master weights; bf16 runs as autocast where the device supports it)."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        base, local_files_only=True, use_safetensors=True, dtype=torch.float32)
    return model, _processor(base)


def _checkpoint_dtype(base: Path):
    """The dtype the base checkpoint was saved in (a download's bfloat16), float32 when it does not say."""
    import torch

    try:
        raw = json.loads((base / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return torch.float32
    name = raw.get("dtype") or raw.get("torch_dtype") or (raw.get("text_config") or {}).get("dtype") or "float32"
    return {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(str(name), torch.float32)


def _prompt_and_real(base: Path):
    from inspectd.bundle.files import MANIFEST_NAME, read_manifest
    from inspectd.bundle.manifest import PromptSpec
    from inspectd.real.params import RealParams

    if (base / MANIFEST_NAME).is_file():
        manifest = read_manifest(base)
        return manifest.prompt, manifest.real
    return PromptSpec(), RealParams()


def _warmup_examples(config: TrainConfig):
    """Synthetic texts, or a labelled folder's good images (clean / with drawn defects) and defect folders."""
    from inspectd.data.synthetic import make_sample
    from inspectd.training.line_data import LabelledFolderData, LineSplit, warmup_examples
    from inspectd.training.warmup_config import ReplyExample, reasoning_reply

    data = config.data
    if data.kind == "labelled":
        from inspectd.data.layouts import read_labelled_folder

        size = _image_size(config)
        if size[0] != size[1]:
            raise InspectdError(f"the warm-up on a labelled folder draws on square images; the image size is {size}")
        folder = LabelledFolderData(kind="labelled_folder", path=data.path, image_size=size[0])
        images = read_labelled_folder(data.path).images
        return warmup_examples(folder, LineSplit(train=images, validation=()), config.seed)
    if data.kind != "synthetic":
        raise InspectdError("the warm-up needs reasoning texts: data.kind synthetic or labelled (drawn defects)")

    def example(i: int) -> ReplyExample:
        sample = make_sample(data.seed_offset + i % data.count, data.image_size)
        return ReplyExample(sample.image, reasoning_reply(sample))

    return example


def run_warmup(config: TrainConfig) -> Path:
    from inspectd.training.warmup import is_main_process, supervised_warmup

    config = _store_as_folder(config)
    model, processor = _load_float32(config.base)
    prompt, _ = _prompt_and_real(config.base)
    example = _warmup_examples(config)

    losses = supervised_warmup(model, processor, prompt, example, config.warmup.model_copy(update={"seed": config.seed}),
                               log_every=10)
    out = stage_folder(config.output_dir, "warmup")
    if not is_main_process():  # under accelerate launch / torchrun every process trained; one writes
        return out
    dtype = _checkpoint_dtype(config.base)  # trained in float32; saved as the download came (a 7B: 16.6 GB, not 33)
    log.info("saving the warm-up model in %s, the base checkpoint's dtype", str(dtype).removeprefix("torch."))
    model.to(dtype).save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    (out / "training.json").write_text(json.dumps({"stage": "warmup", "losses": losses, **config.warmup.model_dump()},
                                                  indent=2))
    return out


def run_cgro(config: TrainConfig, resume: bool) -> Path:
    from inspectd.training.cgro import cgro_rows, check_device, load_policy_base, train_cgro

    check_device(config.cgro)  # before the store export and the load
    config = _store_as_folder(config)
    model, processor = load_policy_base(config.base, config.cgro), _processor(config.base)
    prompt, real = _prompt_and_real(config.base)
    rows = cgro_rows(list(_labelled_images(config)), prompt)
    adapter = config.output_dir / "adapter"
    checkpoints = stage_folder(config.output_dir, "cgro")
    history = train_cgro(model, processor, rows, config.cgro, prompt, real, checkpoints, adapter,
                         seed=config.seed, resume=resume)
    (adapter / "training.json").write_text(json.dumps(
        {"stage": "cgro", "log_history": history, **config.cgro.model_dump()}, indent=2, default=str))
    return adapter


def _plan(config: TrainConfig, measure: bool) -> int:
    """Prints CGRO's planned peak memory (and with ``measure`` the measured one) for ``config``."""
    import tempfile

    from inspectd.training.memory_plan import format_plan, model_shape, plan_cgro, prompt_tokens

    if not (config.base / "config.json").is_file():
        raise InspectdError(f"{config.base}: no config.json; point --base (or the config's base) at the checkpoint")
    size = _image_size(config)
    settings = config.cgro
    shape = model_shape(config.base, settings.lora_targets, settings.lora_rank)
    prompt, _ = _prompt_and_real(config.base)
    plan = plan_cgro(shape, settings, size, prompt_tokens(config.base, size, shape, prompt))
    measured = None
    if measure:
        from inspectd.training.memory_trace import measure_cgro_step

        with tempfile.TemporaryDirectory(prefix="inspectd-plan-") as scratch:
            measured = measure_cgro_step(config.base, settings, size, Path(scratch)).peaks
    print(f"CGRO memory plan for {config.base} ({settings.precision()} base weights, image {size[0]} x {size[1]}, "
          f"{settings.batch_size} prompts x {settings.generations} replies a step; one process)")
    print(format_plan(plan, measured))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="inspectd-train", description=__doc__.replace("``", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=("warmup", "cgro", "recipe", "plan", *OLD_STAGE_NAMES),
                        help="warmup, cgro, recipe, or plan (CGRO's memory); sft and grpo: the old names of "
                             "warmup and cgro")
    parser.add_argument("--config", required=True)
    parser.add_argument("--resume", action="store_true", help="cgro: continue from the newest checkpoint")
    parser.add_argument("--stop-after", choices=(*STAGES, *OLD_STAGE_NAMES), help="recipe: finish this stage, then stop")
    parser.add_argument("--base", type=Path, help="plan: this checkpoint folder instead of the config's base "
                                                  "(its config.json and processor files are enough)")
    parser.add_argument("--measure", action="store_true",
                        help="plan: also run two real CGRO steps on the base (weights needed) and print the "
                             "measured peak of each phase beside the plan")
    args = parser.parse_args(argv)
    setup_logging()
    offline(quiet_transformers=False)
    return run_command(lambda: _train(args))


def _train(args) -> int:
    if args.stage == "recipe":
        import torch

        recipe = load_recipe(Path(args.config))
        torch.set_num_threads(recipe.threads)
        run_recipe(recipe, args.stop_after and stage_name(args.stop_after))
        return 0
    config = load_config(Path(args.config))
    if args.stage == "plan":
        return _plan(config.model_copy(update={"base": args.base or config.base}), args.measure)
    stage = stage_name(args.stage)
    out = run_warmup(config) if stage == "warmup" else run_cgro(config, args.resume)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
