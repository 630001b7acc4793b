"""Replies are parsed strictly; anything else is 'unparsable', never guessed."""

import pytest

from inspectd.model.reply import (
    AnswerRule,
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


@pytest.mark.parametrize("text", ["I see no defect", "I cannot tell.", "<think>spot", "the answer is yesterday",
                                  "it's a no-go", "", "The answer is unclear", "Yesterday the tile was clean.",
                                  "Not sure.", "No visible defects.", "No doubt, there is a crack.", "Yes there is",
                                  "No-go.", "<answer>maybe, a crack</answer>", "<answer>yes</answer> and more text",
                                  "There is a crack, so yes, it is defective."])
def test_a_lenient_bundle_still_never_guesses(text):
    assert parse_lenient_reply(text).status is ParseStatus.UNPARSABLE


@pytest.mark.parametrize("text, answer, rule, reasoning", [
    # A first word counts when punctuation, a line break or the end follows it; the text after it is the reasoning.
    ("Yes, there is a crack near the top edge.", "yes", AnswerRule.LEADING, "there is a crack near the top edge."),
    ("No, there are no visible defects on the surface.", "no", AnswerRule.LEADING,
     "there are no visible defects on the surface."),
    ("NO. The surface is uniform", "no", AnswerRule.LEADING, "The surface is uniform"),
    ("**Yes**, a blowhole on the left.", "yes", AnswerRule.LEADING, "a blowhole on the left."),
    ("Yes\nA crack runs across the tile.", "yes", AnswerRule.LEADING, "A crack runs across the tile."),
    # An answer tag closing the reply whose text starts with yes/no; nothing before it: its own text is the reasoning.
    ("<answer>no.</answer>", "no", AnswerRule.TAG, None),
    ("<answer>Yes, there is a defect.</answer>", "yes", AnswerRule.TAG, "there is a defect."),
    ("<think>a crack at the top</think><answer>Yes, there is a defect.</answer>", "yes", AnswerRule.TAG,
     "a crack at the top"),
    # Answers that agree: the later one is scored, with the text before it (as before this rule existed).
    ("No, the tile is clean. Answer: no", "no", AnswerRule.TRAILING, "No, the tile is clean. Answer:"),
    ("Yes.", "yes", AnswerRule.TRAILING, None),
])
def test_a_lenient_bundle_reads_a_leading_answer(text, answer, rule, reasoning):
    parsed = parse_lenient_reply(text)
    assert (parsed.status, parsed.answer, parsed.rule, parsed.reasoning) == (ParseStatus.LENIENT, answer, rule,
                                                                            reasoning)
    assert text[parsed.answer_start:parsed.answer_start + len(answer)].lower() == answer
    assert parsed.think_span is None if reasoning is None else text[slice(*parsed.think_span)] == reasoning
    assert parse_reply(text).status is ParseStatus.UNPARSABLE


@pytest.mark.parametrize("text", [
    "Yes, there is a crack. Answer: no",
    "No, it is clean. <answer>yes</answer>",
    "<answer>yes</answer><answer>no</answer>",
    "<answer>Yes, a crack</answer> on second thought <answer>No.</answer>",
    "<answer>no</answer> I would say yes",
])
def test_a_lenient_bundle_never_resolves_a_reply_that_answers_both_ways(text):
    assert parse_lenient_reply(text).status is ParseStatus.UNPARSABLE


def test_a_reply_in_the_trained_format_parses_the_same_either_way():
    text = "<think>a dark spot near the top</think><answer>yes</answer>"
    assert parse_lenient_reply(text) == parse_reply(text)
