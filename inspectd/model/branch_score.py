"""The ``reasoning_branch`` score: P(yes) over the greedy reply and its likeliest alternatives.

After a reasoning that has decided, P(yes) at the answer is ~0 or ~1, so the
score ranks images no better than the verdict. Where the model hesitated is
inside the reasoning (e.g. "the surface is clean" vs "there is a crack"). We
take the ``branches`` reasoning steps whose runner-up token was likeliest,
continue the reply greedily from each runner-up (one more ``generate`` for the
whole batch, no attention capture), and read P(yes) at each branch's answer.
With one branch the score is the exact mixture of the two replies weighted by
the two tokens' probabilities (raw softmax): P_g + w (P_b - P_g) with
w = p_b / (p_chosen + p_b); with several, the sum of those corrections,
clipped to [0, 1] (a first-order mixture). Deterministic. The reply shown, its
map and its reasoning stay the greedy ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from inspectd.model.answer_score import recording_answer_logits
from inspectd.model.reply import ParsedReply, tokens_overlapping
from inspectd.model.sequences import extend_rows, pad_id_of


@dataclass(frozen=True)
class BranchPoint:
    row: int
    prefix: tuple[int, ...]  # the greedy reply's tokens before the branch
    token: int  # the runner-up token the branch continues from
    chosen_probability: float
    branch_probability: float


    @property
    def weight(self) -> float:
        return self.branch_probability / (self.chosen_probability + self.branch_probability)


def branch_points(row: int, new_ids: list[int], spans, parsed: ParsedReply, top_probs: torch.Tensor,
                  top_ids: torch.Tensor, count: int, min_probability: float) -> list[BranchPoint]:
    """The ``count`` reasoning steps with the likeliest runner-ups; ``top_*`` are (steps, 2) for this row."""
    found = []
    for step in tokens_overlapping(spans, *parsed.think_span):
        if step >= top_ids.shape[0]:
            break
        ids, probs = top_ids[step].tolist(), top_probs[step].tolist()
        if new_ids[step] not in ids:
            continue  # the greedy token was not among the two likeliest raw tokens (a processor moved it)
        chosen = ids.index(new_ids[step])
        other = 1 - chosen
        if probs[other] >= min_probability:
            found.append(BranchPoint(row, tuple(new_ids[:step]), ids[other], probs[chosen], probs[other]))
    found.sort(key=lambda point: -point.branch_probability)
    return found[:count]


def mixed_score(greedy: float, branches: list[tuple[BranchPoint, float | None]]) -> float:
    """Greedy P(yes) corrected by each parsable branch (exact mixture for one branch)."""
    score = greedy + sum(point.weight * (value - greedy) for point, value in branches if value is not None)
    return float(min(1.0, max(0.0, score)))


def run_branches(model, batch, points: list[BranchPoint]) -> list[float | None]:
    """P(yes) of each branch's reply, None where the branch gives no parsable answer."""
    budgets = [model.max_new_tokens - len(p.prefix) - 1 for p in points]
    budget = max(budgets)
    if budget <= 0:
        return [None] * len(points)
    extended = extend_rows(batch, [p.row for p in points], [[*p.prefix, p.token] for p in points],
                           pad_id_of(model.tokenizer))
    length = extended.inputs["input_ids"].shape[1]
    with recording_answer_logits(model.model, model.answers) as answers:
        out = model.model.generate(**extended.inputs, max_new_tokens=budget, do_sample=False)
    yes_no, _, _ = answers.stacked()
    scores = []
    for i, point in enumerate(points):
        continuation = out[i, length:].tolist()
        cut = next((j for j, t in enumerate(continuation) if t in model.stop_ids), len(continuation))
        ids = [*point.prefix, point.token, *continuation[:min(cut, budgets[i])]]
        _, _, probability = model.answer_probability(model.decode(ids), ids, yes_no[:, i], len(point.prefix) + 1)
        scores.append(probability)
    return scores
