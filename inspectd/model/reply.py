"""Strict parsing of the R1-style reply and where its parts sit in the tokens."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

# The answer word in any case (a real tokenizer's "Yes" and " yes" are other tokens than "yes"); the tags exact.
_REPLY = re.compile(
    r"\A\s*<think>(?P<think>.*?)</think>\s*<answer>\s*(?P<answer>(?i:yes|no))\s*</answer>\s*\Z", re.DOTALL
)


# Outside the trained format: an answer tag closing the reply, else a final yes/no word ("... Answer: No.").
_ANSWER_TAG = re.compile(r"<answer>\s*(?P<answer>(?i:yes|no))\s*</answer>\s*\Z")
_FINAL_WORD = re.compile(r"(?<![\w'])(?P<answer>(?i:yes|no))[\s.!\"')\]*]*\Z")
_TAGS = re.compile(r"</?(?:think|answer)>")


class ParseStatus(str, Enum):
    OK = "ok"
    LENIENT = "lenient"  # outside the trained format, but it ends in an explicit yes or no
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


def parse_lenient_reply(text: str) -> ParsedReply:
    """The trained format, else a reply that ends in an explicit yes or no (an untuned Instruct model's).

    The text before the answer (tags removed) is the reasoning and its span
    feeds ReAL; with no text before it there is no reasoning and no map. A reply
    with no final yes/no stays unparsable: the verdict is never guessed.
    """
    strict = parse_reply(text)
    if strict.status is ParseStatus.OK:
        return strict
    match = _ANSWER_TAG.search(text) or _FINAL_WORD.search(text)
    if match is None:
        return ParsedReply(ParseStatus.UNPARSABLE, None, None, None, None)
    before = text[:match.start()]
    words = [m for m in re.finditer(r"\S+", _TAGS.sub(lambda t: " " * len(t.group()), before))]
    span = (words[0].start(), words[-1].end()) if words else None
    reasoning = _TAGS.sub("", before[span[0]:span[1]]).strip() if span else None
    return ParsedReply(ParseStatus.LENIENT, reasoning or None, match.group("answer").lower(),
                       span if reasoning else None, match.start("answer"))


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
