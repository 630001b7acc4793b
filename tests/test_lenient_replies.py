"""Lenient replies on the real Qwen2.5-VL-7B-Instruct tokenizer: the answer read, the step its score is read at,
and the reasoning tokens the map is built from, for each shape an untuned Instruct model writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inspectd.model.answer_score import AnswerTokens, answer_step, yes_probability_at_answer
from inspectd.model.reply import (
    AnswerRule,
    ParseStatus,
    parse_lenient_reply,
    parse_reply,
    token_char_spans,
    tokens_overlapping,
)

REAL_CHECKPOINT = Path(__file__).resolve().parent.parent.parent / "shared" / "qwen2.5-vl-7b-instruct"
pytestmark = pytest.mark.skipif(not (REAL_CHECKPOINT / "vocab.json").is_file(),
                                reason=f"real Qwen2.5-VL tokenizer files absent at {REAL_CHECKPOINT}")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(REAL_CHECKPOINT, local_files_only=True)


def _decode(tokenizer):
    """As the model decodes its reply (``InspectionModel.decode``)."""
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def _logits_favouring(tokens: AnswerTokens, steps: int, answer: str, at: int) -> torch.Tensor:
    """Raw answer logits (steps, columns) that say ``answer`` at step ``at`` and the opposite at every other step."""
    favour = torch.tensor([4.0] * len(tokens.yes) + [-4.0] * len(tokens.no))
    if answer == "no":
        favour = -favour
    logits = (-favour).repeat(steps, 1)
    logits[at] = favour
    return logits


# reply, answer, rule, the answer token's text, the reasoning (None: no map)
SHAPES = [
    ("Yes, there is a crack near the top edge.", "yes", AnswerRule.LEADING, "Yes",
     "there is a crack near the top edge."),
    ("No, there are no visible defects on the surface.", "no", AnswerRule.LEADING, "No",
     "there are no visible defects on the surface."),
    ("<answer>no.</answer>", "no", AnswerRule.TAG, "no", None),
    ("<answer>Yes, there is a defect.</answer>", "yes", AnswerRule.TAG, "Yes", "there is a defect."),
    # The real tokenizer merges ">No" into one token: the score is read at that token's step.
    ("<answer>No.</answer>", "no", AnswerRule.TAG, ">No", None),
    ("The surface shows a dark crack near the top left corner.\nAnswer: No", "no", AnswerRule.TRAILING, " No",
     "The surface shows a dark crack near the top left corner.\nAnswer:"),
]


@pytest.mark.parametrize("reply, answer, rule, token_text, reasoning", SHAPES)
def test_each_shape_is_read_and_scored_at_its_answer_token(tokenizer, reply, answer, rule, token_text, reasoning):
    ids = tokenizer.encode(reply, add_special_tokens=False)
    decode = _decode(tokenizer)
    assert decode(ids) == reply
    parsed = parse_lenient_reply(reply)
    assert (parsed.status, parsed.answer, parsed.rule, parsed.reasoning) == (ParseStatus.LENIENT, answer, rule,
                                                                            reasoning)
    spans = token_char_spans(decode, ids)
    step = answer_step(parsed, spans)
    assert tokenizer.decode([ids[step]]) == token_text
    if rule is AnswerRule.LEADING:
        assert step == 0  # a leading answer is the reply's first generated token
    # P(yes) is softmax(yes forms vs no forms) at that step only: every other step says the opposite.
    tokens = AnswerTokens.of(tokenizer)
    score = yes_probability_at_answer(tokens, parsed, spans, _logits_favouring(tokens, len(ids), answer, step))
    assert score > 0.99 if answer == "yes" else score < 0.01
    # The map's tokens: the reasoning's, never the answer word's.
    reasoning_tokens = tokens_overlapping(spans, *parsed.think_span) if parsed.think_span else []
    assert step not in reasoning_tokens
    if reasoning is None:
        assert reasoning_tokens == []
    else:
        # Every token that holds part of the reasoning (a token may also hold a tag's first characters: ".</").
        assert reasoning in decode([ids[j] for j in reasoning_tokens])
        after = rule is AnswerRule.LEADING or (rule is AnswerRule.TAG and reply.startswith("<answer>"))
        assert all(j > step for j in reasoning_tokens) if after else all(j < step for j in reasoning_tokens)


def test_the_score_step_is_offset_for_a_continued_reply(tokenizer):
    """A branch's logits start at its first new token (``offset``); the answer's step is found the same way."""
    reply = "Yes, there is a crack near the top edge."
    ids = tokenizer.encode(reply, add_special_tokens=False)
    tokens = AnswerTokens.of(tokenizer)
    parsed = parse_lenient_reply(reply)
    spans = token_char_spans(_decode(tokenizer), ids)
    assert yes_probability_at_answer(tokens, parsed, spans, _logits_favouring(tokens, 3, "yes", 0), offset=1) is None
    assert yes_probability_at_answer(tokens, parsed, spans, _logits_favouring(tokens, 3, "yes", 0)) > 0.99


@pytest.mark.parametrize("reply", [
    "The answer is unclear",
    "Yesterday the same tile looked fine.",
    "Not sure.",
    "No visible defects.",  # "no" as a determiner, not an answer
    "Yes, there is a crack. Answer: no",  # both answers: never resolved
    "<answer>yes</answer><answer>no</answer>",
])
def test_replies_without_one_explicit_answer_stay_unknown(tokenizer, reply):
    parsed = parse_lenient_reply(reply)
    assert parsed.status is ParseStatus.UNPARSABLE and parsed.answer is None
    ids = tokenizer.encode(reply, add_special_tokens=False)
    tokens = AnswerTokens.of(tokenizer)
    spans = token_char_spans(_decode(tokenizer), ids)
    assert answer_step(parsed, spans) is None
    assert yes_probability_at_answer(tokens, parsed, spans, torch.zeros(len(ids), len(tokens.columns))) is None


def test_a_strict_bundle_still_refuses_every_lenient_shape():
    for reply, *_ in SHAPES:
        assert parse_reply(reply).status is ParseStatus.UNPARSABLE
