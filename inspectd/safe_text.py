"""Text from the plant (file names, reviewer names, camera messages) made safe for a log, a terminal, a sheet.

A file name may hold any byte but ``/`` and NUL: a newline in it forges a log line, an ESC or CR rewrites the
operator's terminal, a bidi override makes a name read backwards. Where such text reaches a person it is
escaped (``escape_controls``); in a CSV a person opens in a spreadsheet, a cell starting with ``=`` ``+`` ``-``
``@`` is a formula (``csv_cell``). JSON output needs neither: its encoder escapes control characters itself.
"""

from __future__ import annotations

import re

# C0 (tab and newline included), DEL, C1, the Arabic letter mark, LRM/RLM, the bidi embeddings and overrides,
# the line and paragraph separators (line breaks to many viewers), the bidi isolates, and the BOM.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` on one line, every control, line-breaking or bidi-override character written as ``\\n``,
    ``\\x1b``, ``\\u202e``... (the rest, backslashes included, as it stands)."""
    return _CONTROLS.sub(_escape, text)


def escape_controls_keep_lines(text: str) -> str:
    """As ``escape_controls``, but newlines stay: for a traceback, which is many lines on purpose."""
    return "\n".join(escape_controls(line) for line in text.split("\n"))


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def csv_cell(value):
    """A cell for a CSV a person may open in a spreadsheet (OWASP "CSV injection"): a string that starts with
    ``=`` ``+`` ``-`` ``@``, a tab or a CR is prefixed with ``'``, so it is read as text, never as a formula.
    Anything else, and a string that is a plain number (``-1.5``), is returned unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value
