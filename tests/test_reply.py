"""Replies are parsed strictly; anything else is 'unparsable', never guessed."""

import pytest

from inspectd.model.reply import (
    ParseStatus,
    parse_lenient_reply,
    parse_reply,
    token_char_spans,
    tokens_overlapping,
)


@pytest.mark.parametrize(
    "text, answer, reasoning",
    [
        ("<think>a dark spot near the top</think><answer>yes</answer>", "yes", "a dark spot near the top"),
        ("<think>\nclean surface\n</think>\n<answer> no </answer>\n", "no", "clean surface"),
        # A real tokenizer's "Yes" / " Yes" / "YES" are answers too (Qwen2.5-VL-Instruct writes them).
        ("<think>spot</think><answer>Yes</answer>", "yes", "spot"),
        ("<think>spot</think><answer> NO </answer>", "no", "spot"),
    ],
)
def test_well_formed_replies_parse(text, answer, reasoning):
    parsed = parse_reply(text)
    assert parsed.status is ParseStatus.OK
    assert parsed.answer == answer and parsed.reasoning == reasoning


@pytest.mark.parametrize(
    "text",
    [
        "yes",
        "<answer>yes</answer>",
        "<think>spot</think>",
        "<think>spot</think><answer>maybe</answer>",
        "<think>spot</think><answer>yess</answer>",
        "<think>spot</think><Answer>yes</Answer>",
        "<think>spot</think><answer>yes</answer> and more text",
        "<think>a<think>b</think><answer>no</answer><answer>yes</answer>",
        "",
    ],
)
def test_malformed_replies_are_unparsable(text):
    parsed = parse_reply(text)
    assert parsed.status is ParseStatus.UNPARSABLE and parsed.answer is None


def test_token_spans_cover_the_reply_and_find_the_reasoning():
    pieces = ["<think>", "a", " dark", " spot", "</think>", "<answer>", "yes", "</answer>"]
    ids = list(range(len(pieces)))
    spans = token_char_spans(lambda prefix: "".join(pieces[i] for i in prefix), ids)
    text = "".join(pieces)
    assert spans[-1][1] == len(text)
    parsed = parse_reply(text)
    assert tokens_overlapping(spans, *parsed.think_span) == [1, 2, 3]


@pytest.mark.parametrize(
    "text, answer, reasoning",
    [
        # An untuned Instruct model's replies: answer only, or free text closing on an explicit yes / no.
        ("<answer>Yes</answer>", "yes", None),
        ("No.", "no", None),
        ("The tile has a crack near the top edge. Answer: Yes.", "yes", "The tile has a crack near the top edge. Answer:"),
        ("A dark spot on the left. <answer> no </answer>", "no", "A dark spot on the left."),
        ("Is it defective? I would say no", "no", "Is it defective? I would say"),
    ],
)
def test_a_lenient_bundle_takes_a_final_explicit_answer(text, answer, reasoning):
    parsed = parse_lenient_reply(text)
    assert parsed.status is ParseStatus.LENIENT and parsed.answer == answer and parsed.reasoning == reasoning
    assert text[parsed.answer_start:parsed.answer_start + len(answer)].lower() == answer
    if reasoning is not None:
        assert text[slice(*parsed.think_span)] == reasoning
    assert parse_reply(text).status is ParseStatus.UNPARSABLE  # a strict bundle still refuses them


@pytest.mark.parametrize("text", ["I see no defect", "yes, there is a crack", "I cannot tell.", "<think>spot",
                                  "the answer is yesterday", "it's a no-go", ""])
def test_a_lenient_bundle_still_never_guesses(text):
    assert parse_lenient_reply(text).status is ParseStatus.UNPARSABLE


def test_a_reply_in_the_trained_format_parses_the_same_either_way():
    text = "<think>a dark spot near the top</think><answer>yes</answer>"
    assert parse_lenient_reply(text) == parse_reply(text)
