"""How every inspectd process logs (the daemon, its model process, every command) and keeps libraries offline.

Below every package that logs: the daemon's model process, training and export set up their logging here
without importing the command-line package.
"""

from __future__ import annotations

import logging
import os
import sys

from inspectd.safe_text import escape_controls, escape_controls_keep_lines


class EscapingFormatter(logging.Formatter):
    """One record, one line: control characters in the message (a newline or ESC in a camera's file name, a
    reviewer's name) are written as ``\\n``, ``\\x1b``..., so a name cannot forge a log line or drive the
    terminal of whoever reads the log. A traceback keeps its lines; only its other control characters are
    escaped."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        return escape_controls(super().formatMessage(record))

    def formatException(self, ei) -> str:  # noqa: N802
        return escape_controls_keep_lines(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802
        return escape_controls_keep_lines(super().formatStack(stack_info))


class JournalFormatter(EscapingFormatter):
    """journald reads a "<priority>" prefix as the syslog level of the line."""

    _PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

    def format(self, record: logging.LogRecord) -> str:
        priority = self._PRIORITY.get(record.levelno, 6)
        return f"<{priority}>{record.name}: {super().format(record)}"


def setup_logging(level: str | None = None) -> None:
    """Log lines to stderr; under systemd (JOURNAL_STREAM set) with journald's priority prefix."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JournalFormatter() if os.environ.get("JOURNAL_STREAM") else EscapingFormatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, (level or "INFO").upper(), logging.INFO), handlers=[handler])


def offline(quiet_transformers: bool = True) -> None:
    """No network at run time, and no progress bars in an operator's log."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if quiet_transformers:
        # Read by transformers and huggingface_hub when they are imported: a command that never loads a model
        # (history, stats, alerts) no longer imports transformers only to quiet it (1.7 s of a 3 s start).
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        transformers = sys.modules.get("transformers")
        if transformers is not None:  # imported already: its settings were read, set them directly
            transformers.utils.logging.set_verbosity_error()
            transformers.utils.logging.disable_progress_bar()
    logging.getLogger("alembic").setLevel(logging.WARNING)
