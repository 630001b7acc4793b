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


def _image_rows(batch) -> list[tuple[int, int]]:
    """Each row's slice of the flattened ``pixel_values`` (one image per row)."""
    counts = batch["image_grid_thw"].prod(dim=-1).tolist()
    starts = [sum(counts[:i]) for i in range(len(counts))]
    return [(start, start + count) for start, count in zip(starts, counts)]


def run_branches(model, batch, points: list[BranchPoint]) -> list[float | None]:
    """P(yes) of each branch's reply, None where the branch gives no parsable answer."""
    tokenizer = model.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = batch["input_ids"].device
    rows = _image_rows(batch)
    budgets = [model.max_new_tokens - len(p.prefix) - 1 for p in points]
    budget = max(budgets)
    if budget <= 0:
        return [None] * len(points)
    sequences, types = [], []
    for point in points:
        real = batch["attention_mask"][point.row].bool()
        reply = torch.tensor([*point.prefix, point.token], device=device)
        sequences.append(torch.cat([batch["input_ids"][point.row][real], reply]))
        if "mm_token_type_ids" in batch:  # 1 at image tokens; the reply is text
            types.append(torch.cat([batch["mm_token_type_ids"][point.row][real], torch.zeros_like(reply)]))
    length = max(len(s) for s in sequences)
    input_ids = torch.full((len(points), length), pad, dtype=torch.long, device=device)
    attention_mask = torch.zeros((len(points), length), dtype=torch.long, device=device)
    token_types = torch.zeros((len(points), length), dtype=torch.long, device=device)
    for i, sequence in enumerate(sequences):  # left padding, as the first pass
        input_ids[i, length - len(sequence):] = sequence
        attention_mask[i, length - len(sequence):] = 1
        if types:
            token_types[i, length - len(sequence):] = types[i]
    extra = {"mm_token_type_ids": token_types} if types else {}
    pixel_values = torch.cat([batch["pixel_values"][slice(*rows[p.row])] for p in points])
    grids = batch["image_grid_thw"][[p.row for p in points]]
    with recording_answer_logits(model.model, model.answers) as answers:
        out = model.model.generate(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
                                   image_grid_thw=grids, max_new_tokens=budget, do_sample=False, **extra)
    yes_no, _, _ = answers.stacked()
    scores = []
    for i, point in enumerate(points):
        continuation = out[i, length:].tolist()
        cut = next((j for j, t in enumerate(continuation) if t in model.stop_ids), len(continuation))
        ids = [*point.prefix, point.token, *continuation[:min(cut, budgets[i])]]
        _, _, probability = model.answer_probability(model.decode(ids), ids, yes_no[:, i], len(point.prefix) + 1)
        scores.append(probability)
    return scores
