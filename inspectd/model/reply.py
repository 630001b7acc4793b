"""Strict parsing of the R1-style reply and where its parts sit in the tokens."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

# The answer word in any case (a real tokenizer's "Yes" and " yes" are other tokens than "yes"); the tags exact.
_REPLY = re.compile(
    r"\A\s*<think>(?P<think>.*?)</think>\s*<answer>\s*(?P<answer>(?i:yes|no))\s*</answer>\s*\Z", re.DOTALL
)


class ParseStatus(str, Enum):
    OK = "ok"
    UNPARSABLE = "unparsable"


@dataclass(frozen=True)
class ParsedReply:
    status: ParseStatus
    reasoning: str | None
    answer: str | None
    think_span: tuple[int, int] | None
    answer_start: int | None


def parse_reply(text: str) -> ParsedReply:
    """``<think>...</think><answer>yes|no</answer>`` or nothing: never guess.

    ``answer`` is lower-cased; ``answer_start`` is where the word starts.
    """
    match = _REPLY.match(text)
    if match is None:
        return ParsedReply(ParseStatus.UNPARSABLE, None, None, None, None)
    return ParsedReply(
        ParseStatus.OK,
        match.group("think").strip(),
        match.group("answer").lower(),
        match.span("think"),
        match.start("answer"),
    )


def token_char_spans(decode, token_ids: list[int]) -> list[tuple[int, int]]:
    """Character span of each generated token in the decoded reply.

    Decoding prefixes (not single tokens) keeps multi-byte characters that a
    byte-level BPE splits across tokens intact.
    """
    spans = []
    previous = 0
    for end in range(1, len(token_ids) + 1):
        length = max(previous, len(decode(token_ids[:end])))
        spans.append((previous, length))
        previous = length
    return spans


def tokens_overlapping(spans: list[tuple[int, int]], start: int, end: int) -> list[int]:
    return [i for i, (a, b) in enumerate(spans) if a < end and b > start and b > a]


def token_starting_at(spans: list[tuple[int, int]], position: int) -> int | None:
    for i, (a, b) in enumerate(spans):
        if a <= position < b:
            return i
    return None
