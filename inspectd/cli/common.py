"""What every command-line entry point shares: exit codes and clear errors (logging: ``inspectd/logs.py``)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from inspectd.errors import InspectdError
from inspectd.safe_text import escape_controls

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2


def run_command(command: Callable[[], int], also: tuple[type[Exception], ...] = ()) -> int:
    """Run a command; an InspectdError (bad config, bundle, store, input), or one of ``also``, is one line on
    stderr and exit 2."""
    try:
        return command()
    except (InspectdError, *also) as exc:
        print(f"error: {escape_controls(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
