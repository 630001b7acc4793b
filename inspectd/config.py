"""Typed, validated settings from one YAML file.

Unknown keys, wrong types and missing paths are refused at start with the
file, the key path and what was expected, so a typo never silently falls back
to a default on a production line. Relative paths are resolved against the
folder of the YAML file, so a config and its bundle can move together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from inspectd.errors import ConfigError
from inspectd.real.params import RealParams


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSettings(_Section):
    bundle: Path = Field(description="model bundle folder (bundle.json inside)")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    batch_size: int = Field(4, ge=1, le=256, description="images per generate call")
    max_new_tokens: int | None = Field(None, ge=8, le=4096, description="null = the bundle's value")

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
            return value
        raise ValueError(f"expected auto, cpu, cuda or cuda:N, got {value!r}")


class RealOverrides(_Section):
    """Any ReAL parameter set here replaces the bundle's value."""

    layer_start: int | None = Field(None, ge=0)
    layer_end: int | None = Field(None, ge=1)
    anomaly_words: tuple[str, ...] | None = None
    high_factor: float | None = Field(None, gt=0)
    alpha: float | None = Field(None, ge=0)
    beta: float | None = Field(None, ge=0)
    smoothing_sigma: float | None = Field(None, ge=0)
    mask_threshold: float | None = Field(None, ge=0, le=1)
    use_entropy_filter: bool | None = None
    use_relevance_filter: bool | None = None

    def apply(self, base: RealParams) -> RealParams:
        changes = {k: v for k, v in self.model_dump().items() if v is not None}
        return RealParams.model_validate({**base.model_dump(), **changes})


class ImageSettings(_Section):
    max_pixels: int = Field(40_000_000, ge=1, description="refuse larger images (decompression bombs)")
    max_file_bytes: int = Field(200 * 1024 * 1024, ge=1, description="refuse larger files")


class Settings(_Section):
    source: Path | None = Field(None, exclude=True)
    model: ModelSettings
    real: RealOverrides = RealOverrides()
    images: ImageSettings = ImageSettings()
    threshold: float | None = Field(None, ge=0, le=1, description="null = the bundle's calibrated threshold")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


def _describe(errors: list[dict[str, Any]]) -> str:
    lines = []
    for err in errors:
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        elif err["type"] == "missing":
            lines.append(f"  {key}: required key is missing")
        else:
            lines.append(f"  {key}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def load_settings(path: Path, require_paths: bool = True) -> Settings:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read configuration ({exc})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level, got {type(raw).__name__}")
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid configuration:\n{_describe(exc.errors())}") from exc
    base = path.resolve().parent
    bundle = (settings.model.bundle if settings.model.bundle.is_absolute() else base / settings.model.bundle).resolve()
    if require_paths and not bundle.is_dir():
        raise ConfigError(f"{path}: model.bundle: folder {bundle} does not exist")
    return settings.model_copy(
        update={"source": path, "model": settings.model.model_copy(update={"bundle": bundle})}
    )


def default_config_path() -> Path:
    """The shipped default, next to the package in a source checkout."""
    return Path(__file__).resolve().parent.parent / "config" / "inspectd.yaml"
