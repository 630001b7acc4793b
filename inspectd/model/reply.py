"""Parsing the model's reply, and where its parts sit in the tokens.

Strict (``score.replies: strict``, every tuned bundle): only the trained
``<think>...</think><answer>yes|no</answer>`` (the answer word in any case);
anything else is unparsable and the verdict ``unknown``.

Lenient (``score.replies: lenient``, for an untuned Instruct model that
answers outside the format): one explicit yes or no, read from one of three
places and never guessed from anywhere else. The verdict is the score (P(yes)
at the answer word's token, ``answer_score.answer_step``) against the
threshold; the reasoning is the text whose tokens ReAL reads (none: no map).

- ``tag``: an ``<answer>`` tag closes the reply and its text starts with
  yes/no (``<answer>no.</answer>``, ``... <answer>Yes, there is a
  defect.</answer>``). Reasoning: the text before the tag, tags removed; with
  none, the rest of the tag's text ("there is a defect."); with neither, no map.
- ``trailing``: the reply ends in a yes/no word ("... Answer: No.", "Yes.").
  Reasoning: the text before the word; none: no map.
- ``leading``: the reply's first word is yes/no ("Yes, there is a crack ...",
  "No, there are no visible defects ...", also after an ``<answer>`` that is
  never closed). Reasoning: the text after the word ("there is a crack ...");
  none: no map.

Why a first word (of the reply, or of the tag's text) counts only when a
punctuation mark (``, . ! ; :``), a line break or the end follows it (markdown
bold allowed: ``**Yes**,``): "No visible defects" or "No doubt, a crack" open
with the determiner "no", not an answer ("Yesterday", "Not sure", "No-go" are
not answers either).

Conflicts are not resolved: every explicit answer found (the closing tag,
any other ``<answer>`` tag whose text starts with yes/no, the final word, the
first word) must agree, else the reply is unparsable ("Yes, a crack. Answer:
no" and ``<answer>yes</answer><answer>no</answer>`` stay ``unknown``). When
they agree, the one scored is the closing tag's, else the final word's, else
the first word's: the later answer is the one the model gave after its
reasoning, as in the trained format ("No, clean. Answer: no" is scored at the
final "no", its reasoning "No, clean. Answer:").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

# The answer word in any case (a real tokenizer's "Yes" and " yes" are other tokens than "yes"); the tags exact.
_REPLY = re.compile(
    r"\A\s*<think>(?P<think>.*?)</think>\s*<answer>\s*(?P<answer>(?i:yes|no))\s*</answer>\s*\Z", re.DOTALL
)

# Outside the trained format (lenient): see the module docstring for what each one reads.
_CLOSING_TAG = re.compile(r"<answer>(?P<content>(?:(?!</?answer>).)*?)</answer>\s*\Z", re.DOTALL)
_ANY_TAG = re.compile(r"<answer>(?P<content>(?:(?!</?answer>).)*?)</answer>", re.DOTALL)
_FINAL_WORD = re.compile(r"(?<![\w'])(?P<answer>(?i:yes|no))[\s.!\"')\]*]*\Z")
# A first word: yes/no, optionally in markdown bold, then punctuation, a line break or the end.
_FIRST_WORD = re.compile(r"\s*(?:\*\*)?(?P<answer>(?i:yes|no))(?:\*\*)?(?=[,.!;:\n]|\s*\Z)")
_OPENING_TAG = re.compile(r"\s*<answer>")
_TAGS = re.compile(r"</?(?:think|answer)>")
_AFTER_ANSWER = re.compile(r"[\s*,.!;:]*")


class ParseStatus(str, Enum):
    OK = "ok"
    LENIENT = "lenient"  # outside the trained format, but with an explicit yes or no (module docstring)
    UNPARSABLE = "unparsable"


class AnswerRule(str, Enum):
    """Which rule read the answer (module docstring); it decides where the reasoning is."""

    FORMAT = "format"
    TAG = "tag"
    TRAILING = "trailing"
    LEADING = "leading"


@dataclass(frozen=True)
class ParsedReply:
    status: ParseStatus
    reasoning: str | None
    answer: str | None
    think_span: tuple[int, int] | None
    answer_start: int | None
    rule: AnswerRule | None = None


UNPARSABLE = ParsedReply(ParseStatus.UNPARSABLE, None, None, None, None)


def parse_reply(text: str) -> ParsedReply:
    """``<think>...</think><answer>yes|no</answer>`` or nothing: never guess.

    ``answer`` is lower-cased; ``answer_start`` is where the word starts.
    """
    match = _REPLY.match(text)
    if match is None:
        return UNPARSABLE
    return ParsedReply(
        ParseStatus.OK,
        match.group("think").strip(),
        match.group("answer").lower(),
        match.span("think"),
        match.start("answer"),
        AnswerRule.FORMAT,
    )


@dataclass(frozen=True)
class _Found:
    """One explicit answer in a lenient reply: its rule and word, where the word starts, and where its reasoning
    is looked for: ``before`` first (text before the answer), else ``after`` (text after the word)."""

    rule: AnswerRule
    answer: str
    start: int
    before: tuple[int, int] | None
    after: tuple[int, int] | None


def _first_word(text: str, start: int, end: int) -> re.Match | None:
    return _FIRST_WORD.match(text, start, end)


def _closing_tag(text: str) -> _Found | None:
    tag = _CLOSING_TAG.search(text)
    if tag is None:
        return None
    word = _first_word(text, *tag.span("content"))
    if word is None:
        return None
    return _Found(AnswerRule.TAG, word.group("answer").lower(), word.start("answer"), (0, tag.start()),
                  (word.end("answer"), tag.end("content")))


def _trailing(text: str) -> _Found | None:
    word = _FINAL_WORD.search(text)
    if word is None:
        return None
    return _Found(AnswerRule.TRAILING, word.group("answer").lower(), word.start("answer"), (0, word.start()), None)


def _leading(text: str) -> _Found | None:
    opening = _OPENING_TAG.match(text)
    word = _first_word(text, opening.end() if opening else 0, len(text))
    if word is None:
        return None
    return _Found(AnswerRule.LEADING, word.group("answer").lower(), word.start("answer"), None,
                  (word.end("answer"), len(text)))


def _tagged_answers(text: str) -> set[str]:
    """The explicit answer of every ``<answer>`` tag, wherever it is (for the conflict check)."""
    found = set()
    for tag in _ANY_TAG.finditer(text):
        word = _first_word(text, *tag.span("content"))
        if word is not None:
            found.add(word.group("answer").lower())
    return found


def _reasoning_span(text: str, start: int, end: int, skip_leading_marks: bool) -> tuple[int, int] | None:
    """The first to last word of ``text[start:end]``, tags blanked out; after an answer, its marks skipped."""
    if skip_leading_marks:
        start = _AFTER_ANSWER.match(text, start, end).end()
    blanked = _TAGS.sub(lambda t: " " * len(t.group()), text[start:end])
    words = list(re.finditer(r"\S+", blanked))
    return (start + words[0].start(), start + words[-1].end()) if words else None


def _parsed(text: str, found: _Found) -> ParsedReply:
    span = _reasoning_span(text, *found.before, skip_leading_marks=False) if found.before else None
    if span is None and found.after is not None:
        span = _reasoning_span(text, *found.after, skip_leading_marks=True)
    reasoning = _TAGS.sub("", text[span[0]:span[1]]).strip() if span else None
    return ParsedReply(ParseStatus.LENIENT, reasoning or None, found.answer, span if reasoning else None, found.start,
                       found.rule)


def parse_lenient_reply(text: str) -> ParsedReply:
    """The trained format, else one explicit yes/no read by the rules of the module docstring, else unparsable.

    Every explicit answer found must agree: a reply that says both is
    unparsable, never resolved by picking one.
    """
    strict = parse_reply(text)
    if strict.status is ParseStatus.OK:
        return strict
    candidates = [found for found in (_closing_tag(text), _trailing(text), _leading(text)) if found is not None]
    if not candidates:
        return UNPARSABLE
    answers = {found.answer for found in candidates} | _tagged_answers(text)
    if len(answers) != 1:
        return UNPARSABLE
    return _parsed(text, candidates[0])


def reply_says(text: str | None, anomalous: bool) -> bool:
    """The reply's own yes/no (read leniently) says ``anomalous``; a reply without one says neither. What the
    view shown beside a verdict must do, and what evaluation's ``reply agrees`` counts."""
    answer = parse_lenient_reply(text or "").answer
    return answer is not None and (answer == "yes") == anomalous


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
