"""The record of one inspection, as every later stage (store, alerts, CLI) sees it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from inspectd.inspection.view_votes import ViewVotes
from inspectd.verdict import Verdict


@dataclass(frozen=True)
class InspectionResult:
    source: str
    verdict: Verdict
    threshold: float
    score: float | None = None
    reasoning: str | None = None
    reply: str | None = None
    parse_status: str | None = None
    image_size: tuple[int, int] | None = None
    anomaly_map: np.ndarray | None = field(default=None, repr=False)
    mask: np.ndarray | None = field(default=None, repr=False)
    real_fallback: bool | None = None
    reasoning_tokens: int = 0
    tokens_used: int = 0
    generated_tokens: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    # The reasoning tokens' attention (maps, spans in the reasoning) and which of them ReAL kept:
    # evaluation ablations, and the store's per-token maps for the console.
    evidence: object | None = field(default=None, repr=False)
    kept_tokens: np.ndarray | None = field(default=None, repr=False)
    # With a bundle that scores mirror views (score.views > 1): each view's own result without its map and mask
    # (score and token evidence, in the view's orientation: evaluation's all-token ablation); empty otherwise.
    views: tuple[InspectionResult, ...] = field(default=(), repr=False)
    # Which view's reasoning, reply and token evidence are shown: 0 = the image as it came; 1-3 = a mirror view
    # whose verdict agreed with the combined one where view 0's did not (place words and maps turned back).
    shown_view: int = 0
    # With a bundle that also inspects tiles (score.tiles > 1): each tile's own result without its map and mask
    # (score and token evidence on the tile, in the order of inspection.tiles.tile_boxes, row by row); empty otherwise.
    tiles: tuple[InspectionResult, ...] = field(default=(), repr=False)
    # Whose reasoning, reply and token evidence are shown: None = the whole image's (its views'); an index into
    # ``tiles`` = that tile's, whose verdict agreed with the combined one where the whole image's did not (its token
    # maps placed on a token grid over the whole photo).
    shown_tile: int | None = None

    @property
    def view_scores(self) -> list[float | None] | None:
        """Each mirror view's own score (None where its reply did not parse), or None with one view: what the
        store and the CLI show so that an engineer sees when the views fall on both sides of the threshold."""
        return [view.score for view in self.views] if self.views else None

    @property
    def views_disagree(self) -> bool | None:
        """The views fell on both sides of the threshold (None with one view): the verdict depends on how the part
        lay; the history's review filter and eval's count."""
        scores = self.view_scores
        return None if scores is None else ViewVotes(tuple(scores), self.threshold, None).split

    def summary(self) -> dict:
        """JSON-ready view without the arrays."""
        return {
            "source": self.source,
            "verdict": self.verdict.value,
            "score": self.score,
            "threshold": self.threshold,
            "reasoning": self.reasoning,
            "reply": self.reply,
            "parse_status": self.parse_status,
            "image_size": list(self.image_size) if self.image_size else None,
            "real_fallback": self.real_fallback,
            "view_scores": self.view_scores,
            "shown_view": self.shown_view,
            "shown_tile": self.shown_tile,
            "reasoning_tokens": self.reasoning_tokens,
            "tokens_used": self.tokens_used,
            "generated_tokens": self.generated_tokens,
            "mask_fraction": float(self.mask.mean()) if self.mask is not None else None,
            "timings_ms": {k: round(v * 1000, 2) for k, v in self.timings.items()},
            "error": self.error,
        }
