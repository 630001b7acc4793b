"""Replies are parsed strictly; anything else is 'unparsable', never guessed."""

import pytest

from inspectd.model.reply import ParseStatus, parse_reply, token_char_spans, tokens_overlapping


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
