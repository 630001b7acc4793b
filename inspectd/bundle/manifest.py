"""``bundle.json``: what a model bundle is and how to run it.

A bundle is a folder with the Hugging Face model and processor files
(safetensors only) and this manifest, which lists every other file with its
sha256. The daemon trusts nothing in the folder that the manifest does not
vouch for.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from inspectd.real.params import RealParams

BUNDLE_FORMAT_VERSION = 1
MANIFEST_NAME = "bundle.json"
DEFAULT_QUESTION = "Are there any defects or anomalies in the image?"
DEFAULT_FORMAT_INSTRUCTION = (
    "Output the thinking process in <think> </think> and the final answer in <answer> </answer> tags."
)


class PromptSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    question: str = Field(DEFAULT_QUESTION, min_length=1)
    format_instruction: str = DEFAULT_FORMAT_INSTRUCTION

    def user_text(self) -> str:
        return f"{self.question} {self.format_instruction}".strip()


class BundleManifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: int = BUNDLE_FORMAT_VERSION
    name: str = Field(min_length=1)
    base_model: str = Field(min_length=1, description="what the weights started from, e.g. Qwen/Qwen2.5-VL-7B-Instruct")
    quantization: Literal["none", "nf4", "quanto-int8", "quanto-int4"] = "none"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    prompt: PromptSpec = PromptSpec()
    image_size: tuple[int, int] | None = Field(
        None, description="(width, height) every image is resized to before the processor; null keeps the aspect"
    )
    max_new_tokens: int = Field(256, ge=8, le=4096)
    threshold: float = Field(0.5, ge=0, le=1, description="verdict is anomalous when P(yes) >= threshold")
    real: RealParams = RealParams()
    created: str = ""
    inspectd_version: str = ""
    files: dict[str, str] = Field(default_factory=dict, description="relative path -> sha256 of every other file")
