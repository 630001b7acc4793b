"""ReAL's tunable parameters, shared by the bundle manifest and the config."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from inspectd.strict_model import StrictModel

DEFAULT_ANOMALY_WORDS = ("defect", "defects", "anomaly", "anomalies", "anomalous", "damage", "flaw", "flaws")
# English function words: they name no defect and no place, yet their attention can be the most concentrated
# of a reply (tiny-cgro's demo kept "the" and "a"). A bundle lists them in real.ignored_words (ours).
FUNCTION_WORDS = ("a", "an", "the", "of", "at", "in", "on", "near", "with", "and", "or", "is", "are", "was",
                  "there", "this", "that", "it", "its", "to", "by", "for", "from", "as", "no", "not", "be", "has",
                  "have", "some", "any", "very")


class RealParams(StrictModel):
    """Parameters of Reasoning-driven Anomaly Localization (arXiv 2603.27179).

    Values the paper leaves open (marked "ours" in docs/configuration.md, "ReAL parameters") are inspectd's
    own defaults.
    """

    layer_start: int = Field(2, ge=0, description="first text layer averaged (choice: skip the first two)")
    layer_end: int | None = Field(None, ge=1, description="one past the last text layer averaged, so layers "
                                                          "[layer_start, layer_end) are; null = to the last layer")
    anomaly_words: tuple[str, ...] = Field(DEFAULT_ANOMALY_WORDS, min_length=1, description="prompt words whose "
                                           "attention gives the semantic relevance S_T")
    high_factor: float = Field(2.0, gt=0, description="spatial entropy keeps relu(A - high_factor * mean(A))")
    alpha: float = Field(0.5, ge=0, description="weight of semantic relevance in the composite weight "
                                                "w_r = alpha * S_T_hat + beta * S_I_hat (choice)")
    beta: float = Field(0.5, ge=0, description="weight of inverted spatial entropy (S_I_hat) in w_r (choice)")
    smoothing_sigma: float = Field(1.0, ge=0, description="Gaussian sigma on the merged patch grid, in cells (choice)")
    mask_threshold: float = Field(0.5, ge=0, le=1, description="binary mask = map >= this (choice)")
    map_scaling: Literal["min_max", "score_gated"] = Field(
        "min_max",
        description="min_max: each map stretched to [0, 1] (METHOD's post-processing); score_gated (ours): "
                    "the stretched map times the image score, so a part scored normal shows no hot spot, and no "
                    "mask on a part the verdict threshold passed",
    )
    ignored_words: tuple[str, ...] = Field(
        (), description="reasoning tokens that are one of these words (case and surrounding spaces and "
                        "punctuation ignored) are never kept or weighted, and the thresholds are taken over the "
                        "other tokens (ours; e.g. inspectd.real.params.FUNCTION_WORDS); empty = every token counts")
    use_entropy_filter: bool = Field(True, description="keep tokens with S_I <= tau_1 (one of the two token "
                                                       "filters, Tab. 7 ablation)")
    use_relevance_filter: bool = Field(True, description="keep tokens with S_T >= tau_r (the other token "
                                                         "filter, Tab. 7 ablation)")

    @model_validator(mode="after")
    def _check(self) -> RealParams:
        if self.layer_end is not None and self.layer_end <= self.layer_start:
            raise ValueError(f"layer_end ({self.layer_end}) must be greater than layer_start ({self.layer_start})")
        if self.alpha + self.beta <= 0:
            raise ValueError("alpha + beta must be positive")
        return self

    def layer_slice(self, num_layers: int) -> slice:
        """Layers to average; refuses a range outside the model rather than guess."""
        end = num_layers if self.layer_end is None else self.layer_end
        if end > num_layers or self.layer_start >= end:
            raise ValueError(
                f"ReAL layer range [{self.layer_start}, {end}) does not fit a model with {num_layers} text layers"
            )
        return slice(self.layer_start, end)
