"""P(yes) from the model's raw answer logits.

Two traps this module exists for:
- ``generate`` applies its logits processors (a checkpoint's
  ``generation_config.json`` may set ``repetition_penalty``, as
  Qwen2.5-VL-7B-Instruct's does: 1.05) before any processor of ours sees the
  scores, so a score read there moves whenever the reasoning happens to
  contain "no". The raw logits are read instead, from the output head, by a
  forward hook that keeps only the answer words' columns on the device.
- A real tokenizer has distinct ids for ``yes``, ``Ġyes``, ``Yes``, ``ĠYes``
  (and ``no`` likewise); a model that writes ``<answer> Yes </answer>`` emits
  one of the spaced or capitalised ones. P(yes) sums every id that decodes to
  yes (resp. no), in any case, with or without the leading space.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from inspectd.model.reply import ParsedReply, ParseStatus, token_starting_at

ANSWER_WORDS = ("yes", "no")


def _single_token_variants(tokenizer, word: str) -> list[int]:
    ids = set()
    for variant in {word, word.capitalize(), word.upper()}:
        for text in (variant, " " + variant):
            encoded = tokenizer.encode(text, add_special_tokens=False)
            if len(encoded) == 1 and tokenizer.decode(encoded).strip().lower() == word:
                ids.add(encoded[0])
    return sorted(ids)


@dataclass(frozen=True)
class AnswerTokens:
    """The vocabulary ids that decode to yes and to no."""

    yes: tuple[int, ...]
    no: tuple[int, ...]

    @classmethod
    def of(cls, tokenizer) -> AnswerTokens:
        yes, no = (_single_token_variants(tokenizer, w) for w in ANSWER_WORDS)
        if not yes or not no:
            missing = [w for w, ids in zip(ANSWER_WORDS, (yes, no)) if not ids]
            raise ValueError(f"the tokenizer has no single-token form of {missing}; the score needs one")
        if set(yes) & set(no):
            raise ValueError("a token decodes to both yes and no")
        return cls(tuple(yes), tuple(no))

    @property
    def columns(self) -> list[int]:
        return [*self.yes, *self.no]

    def yes_probability(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` (..., len(columns)) raw -> P(yes) = sum p(yes ids) / (sum p(yes ids) + sum p(no ids))."""
        logits = logits.float()
        yes = torch.logsumexp(logits[..., : len(self.yes)], dim=-1)
        no = torch.logsumexp(logits[..., len(self.yes):], dim=-1)
        return torch.sigmoid(yes - no)


class AnswerLogitsRecorder:
    """Per output-head call: the raw logits at the answer columns and the two likeliest tokens.

    During ``generate`` the head runs once per new token on the last position
    only, so entry i holds what chose generated token i. Everything stays on
    the device until ``stacked`` (no host synchronisation per step).
    """

    def __init__(self, tokens: AnswerTokens, keep_top: bool = False) -> None:
        self.tokens = tokens
        self.keep_top = keep_top  # the two likeliest tokens per step: only the reasoning_branch score needs them
        self._columns: torch.Tensor | None = None
        self.steps: list[torch.Tensor] = []
        self.top_probs: list[torch.Tensor] = []
        self.top_ids: list[torch.Tensor] = []

    def __call__(self, module, inputs, output) -> None:
        last = output[:, -1].detach()
        if self._columns is None or self._columns.device != last.device:
            self._columns = torch.tensor(self.tokens.columns, device=last.device)
        self.steps.append(last.index_select(-1, self._columns))
        if self.keep_top:
            top = torch.softmax(last.float(), dim=-1).topk(2, dim=-1)
            self.top_probs.append(top.values)
            self.top_ids.append(top.indices)

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Answer logits (steps, batch, columns) and, when kept, top-2 probabilities and ids (steps, batch, 2)."""
        if not self.steps:
            return torch.zeros(0, 0, len(self.tokens.columns)), None, None
        if not self.keep_top:
            return torch.stack(self.steps).float().cpu(), None, None
        return (torch.stack(self.steps).float().cpu(), torch.stack(self.top_probs).float().cpu(),
                torch.stack(self.top_ids).cpu())


def answer_step(parsed: ParsedReply, spans: list[tuple[int, int]]) -> int | None:
    """The generated token that holds the answer word's first character: P(yes) is read at its step.

    Whatever rule read the answer (the trained format, a closing tag, a final
    or a leading word), the step is the one at which the model chose that
    word, so a leading "Yes" is scored at the reply's first step. Where a
    tokenizer merges the word with the character before it (Qwen's ``>No`` in
    ``<answer>No``), that merged token's step is used: the yes / no forms'
    logits there are still compared, though the model chose a token that is
    neither.
    """
    if parsed.status is ParseStatus.UNPARSABLE or parsed.answer_start is None:
        return None
    return token_starting_at(spans, parsed.answer_start)


def yes_probability_at_answer(tokens: AnswerTokens, parsed: ParsedReply, spans: list[tuple[int, int]],
                              yes_no: torch.Tensor, offset: int = 0) -> float | None:
    """P(yes) at the answer word's step; ``yes_no`` (steps, columns) raw logits, step i = generated token offset+i.

    None where the reply has no answer or its step was not recorded.
    """
    index = answer_step(parsed, spans)
    if index is None or not 0 <= index - offset < yes_no.shape[0]:
        return None
    return float(tokens.yes_probability(yes_no[index - offset]))


@contextmanager
def recording_answer_logits(model: torch.nn.Module, tokens: AnswerTokens,
                            keep_top: bool = False) -> Iterator[AnswerLogitsRecorder]:
    recorder = AnswerLogitsRecorder(tokens, keep_top)
    handle = model.get_output_embeddings().register_forward_hook(recorder)
    try:
        yield recorder
    finally:
        handle.remove()
