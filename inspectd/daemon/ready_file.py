"""The daemon's ready file: written when ``inspectd run`` takes files, removed when it stops.

Outside systemd (``make run``, a shell) nothing else says when a daemon can take files: loading the model takes
seconds to minutes and the metrics endpoint is off in the shipped config. ``inspectd demo-feed --wait-ready`` waits
for this file, so the demo's images are seen arriving; a script can do the same.

Where: beside a SQLite store, ``<store file>.ready`` (``var/inspectd.db.ready`` for ``make run``); with a server
store (PostgreSQL), in the temp folder, named after the config file (``inspectd-<hash>.ready``). Both the daemon and
a reader find it from the same config. It holds one JSON object: ``state`` ("ready"), ``pid``, ``process_start``
(the process's start time from /proc, so that a pid reused by another process after a crash is not taken for the
daemon), ``bundle``, ``digest``, ``device``, ``folders``, ``started_at`` and ``ready_at`` (UTC, ISO 8601) and
``startup_s``. It is written under a temporary name and renamed in: a reader never sees half of it.

A daemon killed with SIGKILL (or a crashed box) leaves its file behind: a reader takes a file as ready only while
its process is alive, and the next daemon on the same store removes it when it starts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from inspectd.errors import InspectdError

log = logging.getLogger("inspectd.ready")

READY_SUFFIX = ".ready"


class DaemonNotReady(InspectdError):
    """No live daemon said it was ready within the time given."""


def ready_file_path(settings) -> Path:
    """Where the daemon of ``settings`` (a loaded ``Settings``) writes its ready file."""
    from inspectd.config_folders import sqlite_file  # SQLAlchemy's URL parser, imported when asked only

    store = sqlite_file(settings.store.url)
    if store is not None:
        return store.with_name(store.name + READY_SUFFIX)
    source = Path(settings.source).resolve() if settings.source is not None else Path("inspectd.yaml")
    key = hashlib.sha256(os.fsencode(source)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"inspectd-{key}{READY_SUFFIX}"


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, /proc/PID/stat field 22); None where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19] if len(fields) > 19 else None


def process_age_s() -> float | None:
    """Seconds since this process started (from /proc: its interpreter's start-up included); None where unknown."""
    start = process_start(os.getpid())
    if start is None:
        return None
    try:
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - int(start) / os.sysconf("SC_CLK_TCK"))
    except (AttributeError, OSError, ValueError):
        return None


def _alive(pid: int, start: str | None) -> bool:
    """Process ``pid`` runs and is the one that wrote the file (same start time, where both are known)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        state = ""
    if state in ("Z", "X"):  # ended, not yet reaped by its parent
        return False
    now = process_start(pid)
    return start is None or now is None or now == start


@dataclass(frozen=True)
class ReadyState:
    """What the ready file says now: ``info`` when a live daemon wrote it; ``stale`` says why a file is not taken."""

    info: dict | None = None
    stale: str | None = None

    @property
    def ready(self) -> bool:
        return self.info is not None


def read_ready(path: Path) -> ReadyState:
    """The ready file at ``path``: ready (its daemon alive), absent (``ReadyState()``), or stale."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ReadyState()
    except OSError as exc:
        return ReadyState(stale=f"unreadable ({exc.strerror or exc})")
    try:
        info = json.loads(text)
        pid = int(info["pid"])
    except (ValueError, KeyError, TypeError):
        return ReadyState(stale="not a ready file (no JSON object with a pid)")
    if info.get("state") != "ready":
        return ReadyState(stale=f"state {info.get('state')!r}, not 'ready'")
    if not _alive(pid, info.get("process_start")):
        return ReadyState(stale=f"left by pid {pid}, which is not running (a daemon that crashed or was killed)")
    return ReadyState(info=info)


def clear_stale(path: Path) -> None:
    """At the daemon's start: remove a file left by a daemon that is gone (a live one's file is left alone)."""
    state = read_ready(path)
    if state.stale is None:
        return
    try:
        path.unlink()
    except FileNotFoundError:
        return
    except OSError as exc:
        log.warning("stale ready file %s not removed (%s): %s", path, exc.strerror or exc, state.stale)
        return
    log.info("removed a stale ready file %s: %s", path, state.stale)


def write_ready(path: Path, info: dict) -> bool:
    """Write the ready file (atomically); a failure is a warning, never a reason to stop inspecting."""
    record = {"state": "ready", "pid": os.getpid(), "process_start": process_start(os.getpid()), **info,
              "ready_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=1, default=str)
            handle.write("\n")
        os.replace(temp, path)
    except OSError as exc:
        log.warning("ready file %s not written (%s): demo-feed --wait-ready and scripts cannot see that the daemon "
                    "is ready", path, exc.strerror or exc)
        try:
            temp.unlink()
        except OSError:
            pass
        return False
    return True


def remove_ready(path: Path) -> None:
    """At the daemon's stop: remove the file if this process wrote it."""
    try:
        if int(json.loads(path.read_text(encoding="utf-8")).get("pid", -1)) != os.getpid():
            return
        path.unlink()
    except FileNotFoundError:
        pass
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        log.warning("ready file %s not removed (%s)", path, exc)


def wait_ready(path: Path, timeout_s: float, poll_s: float = 0.25) -> dict:
    """Wait until a live daemon's ready file is at ``path``; its contents. ``DaemonNotReady`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    said_stale = None
    while True:
        state = read_ready(path)
        if state.ready:
            return state.info
        if state.stale is not None and state.stale != said_stale:
            log.warning("ready file %s not taken: %s", path, state.stale)
            said_stale = state.stale
        if time.monotonic() >= deadline:
            raise DaemonNotReady(
                f"the daemon never became ready within {timeout_s:g} s: no ready file of a running daemon at {path} "
                f"({'the file there: ' + state.stale if state.stale else 'none was written'}); is 'inspectd run' "
                f"running on this config? its log says why it is still loading, or why it stopped")
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
