"""``bundle.json``: what a model bundle is and how to run it.

A bundle is a folder with the Hugging Face model and processor files
(safetensors only) and this manifest, which lists every other file with its
sha256 and carries the bundle digest: a hash of itself (less that field),
hence of every file too. The daemon trusts nothing in the folder that the
manifest does not vouch for, nor a manifest its digest does not vouch for.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from inspectd.real.params import RealParams
from inspectd.strict_model import StrictModel

BUNDLE_FORMAT_VERSION = 1
MANIFEST_NAME = "bundle.json"
DEFAULT_QUESTION = "Are there any defects or anomalies in the image?"
DEFAULT_FORMAT_INSTRUCTION = (
    "Output the thinking process in <think> </think> and the final answer in <answer> </answer> tags."
)


class PromptSpec(StrictModel):
    question: str = Field(DEFAULT_QUESTION, min_length=1)
    format_instruction: str = DEFAULT_FORMAT_INSTRUCTION

    def user_text(self) -> str:
        return f"{self.question} {self.format_instruction}".strip()


class ScoreSpec(StrictModel):
    """How the image score (what the threshold cuts) is read from the model.

    ``answer``: P(yes) at the answer word of the greedy reply (from raw logits,
    summed over every yes / no token form). After a reasoning that has already
    decided, that is ~0 or ~1 and ranks images no better than the verdict.
    ``reasoning_branch`` (ours): the reply is also continued from the runner-up
    token at the ``branches`` reasoning steps where the model hesitated most,
    and P(yes) is mixed over the replies, weighted by the tokens'
    probabilities (``inspectd.model.branch_score``). A branch whose token has
    less than ``min_branch_probability`` is not run (it would not move the score).

    ``replies``: ``strict`` takes only the trained ``<think>/<answer>`` format
    (anything else: verdict unknown). ``lenient`` is for an untuned Instruct
    model: a reply outside the format that ends in an explicit yes or no
    (``<answer>Yes</answer>``, "... Answer: No.") or opens with one ("Yes, there
    is a crack ...") is scored at that word (parse status ``lenient``, answer
    score only); the rest of the text is the reasoning ReAL reads, and with no
    other text there is no map. Answers that disagree leave it unknown
    (``inspectd.model.reply`` has the rule for each shape).

    ``views`` (ours): 2 adds the image mirrored left-right, 4 also mirrored
    top-bottom and both; the score is the mean of the views' scores and the
    map the mean of their maps turned back (``inspectd.inspection.views``).
    Only for parts whose mirror image is the same part (a tile, a sheet; not
    a part with a handed feature). It costs one model run per view.

    ``tiles`` (ours): N > 1 also inspects N x N overlapping tiles of the
    photo as it came, each ``tile_share`` of its side, cut at full resolution
    and each read at the model's input size, so a thin defect is seen
    magnified (``inspectd.inspection.tiles``). The map is the tiles' maps
    stitched, each weighted by its tile's score; ``tile_score`` ``whole``
    keeps the whole image's score (and its explanation), ``max`` takes the
    highest of it and the tiles' scores (and the explanation of the run that
    gave it). It costs N x N model runs more per image, and the bundle must
    have been trained on tiles (a recipe with ``score.tiles`` is).
    """

    method: Literal["answer", "reasoning_branch"] = "answer"
    branches: int = Field(3, ge=1, le=16)
    min_branch_probability: float = Field(1e-3, ge=0, le=0.5)
    replies: Literal["strict", "lenient"] = "strict"
    views: Literal[1, 2, 4] = 1
    tiles: Literal[1, 2, 3] = 1
    tile_share: float = Field(0.6, gt=0, lt=1)
    tile_score: Literal["whole", "max"] = "whole"

    @model_validator(mode="after")
    def _tiles_cover_the_image(self) -> ScoreSpec:
        if self.tiles > 1 and self.tiles * self.tile_share < 1:
            raise ValueError(f"score.tiles {self.tiles} of tile_share {self.tile_share} leave gaps: "
                             f"tiles x tile_share must be at least 1")
        return self


class BundleManifest(StrictModel):
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
    threshold: float = Field(0.5, ge=0, le=1, description="verdict is anomalous when the score >= threshold")
    score: ScoreSpec = ScoreSpec()
    real: RealParams = RealParams()
    created: str = ""
    inspectd_version: str = ""
    files: dict[str, str] = Field(default_factory=dict, description="relative path -> sha256 of every other file")
    digest: str = Field("", description="the bundle digest: sha256 of this manifest's canonical JSON without this "
                                        "field (inspectd.bundle.files); written by every export, checked at load")
