"""What a person reads of an alert: the log line, the e-mail subject and body, the MQTT topic.

Two kinds of alert share the outbox. An inspection alert (``inspection_id``,
``camera``, ``verdict``, ``score`` ...) is about a part; a system event
(``event``, e.g. ``disk_low`` from the disk guard, and its own fields) is
about the box and has no camera, verdict or score. Each kind is rendered from
its own fields: formatting an event with the inspection template printed
``ALERT None: None None score=None (None)``. Machine channels (webhook,
command, the MQTT body, the log's JSON lines) carry the payload as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

# Fills ``{camera}`` in an MQTT topic for a system event: camera names start with a letter or digit
# (``WatchedFolder.camera``), so no camera's topic can be this one.
SYSTEM_CAMERA = "_system"

# Fields every system event carries, shown apart from its own details.
_EVENT_ENVELOPE = ("event", "created_at", "host")


@dataclass(frozen=True)
class AlertText:
    """The human rendering of one alert: ``headline`` is one line (log, e-mail subject), ``body`` the e-mail's."""

    headline: str
    body: tuple[str, ...]


def is_system_event(payload: dict) -> bool:
    """An alert about the box itself: it names an event and no inspection."""
    return "event" in payload and payload.get("inspection_id") is None


def render(payload: dict) -> AlertText:
    """The alert as a person reads it, from the fields its kind has."""
    return _event_text(payload) if is_system_event(payload) else _inspection_text(payload)


def log_line(payload: dict) -> str:
    """The daemon log's line for an alert (the log channel's JSON line carries the payload itself)."""
    if is_system_event(payload):
        return f"EVENT {render(payload).headline}"
    return (f"ALERT {payload.get('rule')}: {payload.get('camera')} {payload.get('verdict')} "
            f"score={payload.get('score')} ({payload.get('source_path')})")


def topic_fields(payload: dict) -> dict[str, str]:
    """What fills an MQTT topic template's ``{camera}`` and ``{rule}``: an event's are ``_system`` and its name."""
    if is_system_event(payload):
        return {"camera": SYSTEM_CAMERA, "rule": str(payload["event"])}
    return {"camera": str(payload.get("camera", "")), "rule": str(payload.get("rule", ""))}


def _inspection_text(payload: dict) -> AlertText:
    score = payload.get("score")
    shown = score if score is None else format(score, ".3f")
    return AlertText(f"{payload.get('verdict')} on {payload.get('camera')} (score {shown})",
                     tuple(f"{key}: {value}" for key, value in payload.items()))


def _event_text(payload: dict) -> AlertText:
    event = str(payload["event"])
    summary = _DISK_SUMMARIES.get(event)
    detail = _disk_detail(payload) if summary else _fields_detail(payload)
    headline = f"{event}: {summary}; {detail}" if summary else f"{event}: {detail}"
    if payload.get("host"):
        headline += f" on {payload['host']}"
    return AlertText(headline, (headline, "", *_field_lines(payload)))


# The disk guard's events (``inspectd.daemon.disk_guard``): what they mean for the line.
_DISK_SUMMARIES = {"disk_low": "intake paused", "disk_ok": "intake resumed"}


def _disk_detail(payload: dict) -> str:
    """``/var/lib/inspectd: 12 MiB free (floor 64 MiB)`` from the guard's ``free_bytes`` and ``floor_bytes``."""
    free = payload.get("free_bytes") or {}
    shown = ", ".join(f"{path}: {_mib(value)} free" for path, value in free.items()) or "free space not given"
    floor = payload.get("floor_bytes")
    return f"{shown} (floor {_mib(floor)})" if floor is not None else shown


def _fields_detail(payload: dict) -> str:
    """An event this module has no words for: its own fields as ``key=value``."""
    fields = [f"{key}={value}" for key, value in payload.items() if key not in _EVENT_ENVELOPE]
    return ", ".join(fields) or "(no details)"


def _field_lines(payload: dict) -> list[str]:
    """Every field on a line of its own; a mapping (e.g. ``free_bytes`` per folder) one line per entry."""
    lines = []
    for key, value in payload.items():
        if isinstance(value, dict):
            lines += [f"{key} {inner}: {item}" for inner, item in value.items()] or [f"{key}: (none)"]
        else:
            lines.append(f"{key}: {value}")
    return lines


def _mib(value) -> str:
    return f"{value / 2**20:.0f} MiB" if isinstance(value, (int, float)) else str(value)
