"""The recipe: the one training config of ``inspectd-train`` (every command reads it), and nothing that runs it.

Settings only, no torch: ``inspectd-train plan`` and the CLI's help read and validate a recipe without loading
the training libraries (a test holds it). The stages that run it live in ``train_stages.py`` (warm-up, CGRO)
and ``release_stages.py`` (export, eval, publish); ``recipe.py`` runs them in order. Every parameter is
documented here once, in its Field description.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Discriminator, Field, Tag, model_validator

from inspectd.bundle.manifest import ScoreSpec
from inspectd.config import resolve_beside, validated_yaml
from inspectd.errors import ConfigError
from inspectd.model.tiny_spec import TinySpec
from inspectd.real.params import RealParams
from inspectd.strict_model import StrictModel
from inspectd.training.cgro_config import CgroSettings
from inspectd.training.line_data import LabelledFolderData, ReviewedStoreData
from inspectd.training.old_train_config import is_old_train_config, old_train_config_message
from inspectd.training.stage_names import OLD_STAGE_NAMES, OLD_SYNTHETIC_KEYS, with_new_keys
from inspectd.training.warmup_config import WarmupSettings

STAGES = ("warmup", "cgro", "export", "eval", "publish")
TRAINING_STAGES = ("warmup", "cgro")  # run by every process under `accelerate launch`; the rest by one


class SyntheticSplits(StrictModel):
    """Seed ranges of the synthetic generator; they never overlap."""

    kind: Literal["synthetic"] = "synthetic"
    image_size: int = Field(168, ge=28, description="square input in px of every synthetic image")
    warmup_seed_offset: int = Field(1_000_000, description="the warm-up's images are seeds from here on")
    cgro_seed_offset: int = Field(2_000_000, description="CGRO's images are seeds from here on")
    cgro_images: int = Field(512, ge=1, description="CGRO's images (image-level labels only)")
    validation_seed_offset: int = Field(500_000, description="the export stage calibrates on seeds from here on")
    validation_images: int = Field(200, ge=2, description="calibration images of the export stage")
    test_seed_offset: int = Field(0, description="the eval stage tests on seeds from here on (never trained on)")
    test_images: int = Field(300, ge=2, description="test images of the eval stage")

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
    """One training run from data to a published bundle: what every ``inspectd-train`` command reads."""

    name: str = Field(description="the bundle's name (and the card's title)")
    output: Path = Field(description="where the finished bundle is published")
    work_dir: Path = Field(description="each stage's folder and stage.json; a rerun resumes from here")
    threads: int = Field(2, ge=1, description="torch threads of each process")
    init: Path | None = Field(None, description=(
        "what the warm-up (or, with warmup.steps 0, CGRO) starts from: an inspectd bundle, or a local "
        "Qwen2.5-VL checkpoint folder as downloaded (config.json + safetensors, e.g. Qwen2.5-VL-7B-Instruct); "
        "null = build a fresh small model from `model`"))
    model: TinySpec = Field(TinySpec(), description="dimensions of the small Qwen2.5-VL (when not `init`)")
    data: RecipeData = Field(SyntheticSplits(), description=(
        "where the images and labels come from: synthetic (default), labelled_folder (good/ + one folder per "
        "defect kind) or reviewed_store (the console's reviewed inspections)"))
    warmup: WarmupSettings = Field(WarmupSettings(), description="the supervised warm-up stage")
    cgro: CgroSettings = Field(CgroSettings(), description="the CGRO stage (base precision / QLoRA, GPU, LoRA)")
    real: RealParams = Field(RealParams(), description="ReAL map settings written into both bundles")
    score: ScoreSpec = Field(ScoreSpec(), description="how the bundle scores an image (see ScoreSpec)")
    max_new_tokens: int = Field(48, ge=8, description="the bundles' reply budget at inspection time")
    quantization: Literal["nf4", "quanto-int8", "quanto-int4", "bfloat16", "float32"] = Field(
        "nf4", description="the exported bundles' weights")
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$", description=(
        "where the export and eval stages run the model: cpu, or cuda:N on a GPU box (a 7B merges, quantizes "
        "and is evaluated there). The training stages follow warmup.device and cgro.use_cpu"))
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
    def _check_start(self) -> RecipeConfig:
        if self.warmup.steps == 0 and self.init is None:
            raise ValueError("warmup.steps 0 (no warm-up) needs `init`: CGRO has no model to start from otherwise")
        if self.warmup.steps == 0 and self.seeds:
            raise ValueError("seeds are warm-up seeds: with warmup.steps 0 there is no warm-up to seed")
        return self

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

    @model_validator(mode="after")
    def _check_tiles(self) -> RecipeConfig:
        if self.score.tiles > 1 and not isinstance(self.data, LabelledFolderData):
            raise ValueError("score.tiles needs data.kind labelled_folder or reviewed_store: a bundle that inspects "
                             "tiles must be trained on tiles, and only those make tile examples")
        return self

    @property
    def warms_up(self) -> bool:
        """False with ``warmup.steps: 0``: CGRO trains on ``init`` as it is (the paper's path for a 7B)."""
        return self.warmup.steps > 0


def _refuse_old_train_config(path: Path) -> None:
    """A ``train.yaml`` of the old ``inspectd-train warmup|cgro`` door is refused with the recipe that does the
    same run: a silent conversion would guess where the bundle goes and what the stages share."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return  # validated_yaml says what is wrong with the file
    if not is_old_train_config(raw):
        return
    try:
        message = old_train_config_message(raw, path)
    except ValueError as exc:  # both names of one section: say that first
        raise ConfigError(f"{path}: {exc}") from None
    raise ConfigError(message)


def load_recipe(path: Path) -> RecipeConfig:
    """The recipe at ``path``, its relative paths read from the file's folder."""
    path = Path(path)
    _refuse_old_train_config(path)
    config = validated_yaml(path, RecipeConfig, "recipe")
    base = path.resolve().parent
    update = {"output": resolve_beside(base, config.output), "work_dir": resolve_beside(base, config.work_dir),
              "zero_shot": [resolve_beside(base, p) for p in config.zero_shot],
              "init": resolve_beside(base, config.init)}
    if isinstance(config.data, LabelledFolderData):
        update["data"] = config.data.model_copy(update={"path": resolve_beside(base, config.data.path),
                                                        "parts_file": resolve_beside(base, config.data.parts_file)})
    if isinstance(config.data, ReviewedStoreData):
        update["data"] = update["data"].model_copy(update={"config": resolve_beside(base, config.data.config)})
    return config.model_copy(update=update)


def from_folder(config: RecipeConfig) -> bool:
    """Labelled photos (a folder, or the reviewed rows exported into one), not the synthetic generator."""
    return isinstance(config.data, LabelledFolderData)
