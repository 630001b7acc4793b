"""Text from the plant (file names, reviewer names, camera messages) made safe for a log, a terminal, a sheet.

A file name may hold any byte but ``/`` and NUL: a newline in it forges a log line, an ESC or CR rewrites the
operator's terminal, a bidi override makes a name read backwards. Where such text reaches a person it is
escaped (``escape_controls``); in a CSV a person opens in a spreadsheet, a cell starting with ``=`` ``+`` ``-``
``@`` is a formula (``csv_cell``). JSON output needs neither: its encoder escapes control characters itself.
"""

from __future__ import annotations

import re
from pathlib import Path

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


NAME_MAX = 255  # bytes of one file name (ext4, xfs, btrfs, tmpfs), counted in UTF-8
_MAX_SUFFIX = 16  # a longer "suffix" is no image extension: it is kept in the stem


def _cut_utf8(text: str, max_bytes: int) -> str:
    """The longest start of ``text`` that is at most ``max_bytes`` in UTF-8 (cut between characters)."""
    return text.encode("utf-8")[:max(0, max_bytes)].decode("utf-8", "ignore")


def fit_name(name: str, max_bytes: int = NAME_MAX, prefix: str = "", mark: str = "") -> str:
    """``prefix + name`` within ``max_bytes`` of UTF-8: the prefix and the suffix (``.png``) are kept and the stem
    is cut between characters, ``mark`` (when given) added after the cut stem. Unchanged when it fits. (Here, not
    in ``daemon.file_names``: the archive's names and the export of reviewed photos both fit names, and ``data``
    must not import ``daemon``, which reads archived photos through ``data``.)"""
    whole = prefix + name
    if len(whole.encode("utf-8")) <= max_bytes:
        return whole
    stem, suffix = Path(name).stem, Path(name).suffix
    if len(suffix.encode("utf-8")) > _MAX_SUFFIX:
        stem, suffix = name, ""
    room = max_bytes - len((prefix + mark + suffix).encode("utf-8"))
    return prefix + _cut_utf8(stem, room) + mark + suffix
