"""How the mirror views of one inspection voted, as the console and ``inspectd show`` tell an engineer.

A bundle with ``score.views`` > 1 reads the photo and its mirror images and averages their scores; the mean
decides. When the views fall on both sides of the threshold (88 of 314 photos of the magnetic-tile hold-out),
the verdict depends on how the part lay: a reviewer should know that before trusting it or the reasoning shown,
which is one view's. Free of numpy and the model code: the reader commands import it.
"""

from __future__ import annotations

from dataclasses import dataclass

# (left-right, top-bottom) per view, in the order views are made and stored: the first is the photo as it came.
FLIPS: tuple[tuple[bool, bool], ...] = ((False, False), (True, False), (False, True), (True, True))
VIEW_NAMES: tuple[str, ...] = ("the photo as it came", "mirrored left-right", "mirrored top-bottom",
                               "mirrored both ways")


@dataclass(frozen=True)
class ViewVotes:
    scores: tuple[float | None, ...]  # per view, None where its reply did not parse
    threshold: float
    shown: int | None  # whose reasoning is shown

    @property
    def scored(self) -> int:
        return sum(score is not None for score in self.scores)

    @property
    def above(self) -> int:
        return sum(score is not None and score >= self.threshold for score in self.scores)

    @property
    def split(self) -> bool:
        """Some views at or above the threshold and some below it."""
        return 0 < self.above < self.scored

    def sentence(self) -> str:
        scores = " · ".join("no reply" if score is None else f"{score:.3f}" for score in self.scores)
        text = f"{scores}; {self.above} of {self.scored} at or above the threshold {self.threshold:.3f}"
        if self.split:
            text += ": the views disagree, so this verdict depends on how the part lay"
        if self.shown:
            text += f". Reasoning shown: {VIEW_NAMES[self.shown]} (place words turned back to the photo)"
        return text


def view_votes(record: dict) -> ViewVotes | None:
    """A stored row's votes (``inspections`` or ``challenger_results``); None for a row recorded with one view."""
    scores = record.get("view_scores")
    if not scores or record.get("threshold") is None:
        return None
    return ViewVotes(tuple(scores), float(record["threshold"]), record.get("shown_view"))
