"""Move recorded files out of the drop folder; failed ones get a sidecar."""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from inspectd.config import ArchiveSettings


def _free_name(folder: Path, name: str) -> Path:
    candidate = folder / name
    stem, suffix = Path(name).stem, Path(name).suffix
    n = 1
    while candidate.exists():
        n += 1
        candidate = folder / f"{stem}.{n}{suffix}"
    return candidate


def _move(source: Path, destination: Path) -> Path:
    """Link into place, then unlink the original.

    Not a rename: inotify reports a rename out of a watched folder as an
    unmatched IN_MOVED_FROM, which watchdog holds for 0.5 s to pair it, and
    every later event of that folder waits behind it. An unlink is reported
    at once. Across file systems the file is copied, synced, then unlinked.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    target = _free_name(destination.parent, destination.name)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
        with open(target, "rb") as handle:
            os.fsync(handle.fileno())
    os.unlink(source)
    return target


class Archiver:
    def __init__(self, settings: ArchiveSettings) -> None:
        self.settings = settings

    def archive(self, source: Path, camera: str, when: datetime) -> Path | None:
        """Move to ``<archive>/<YYYY-MM-DD>/<camera>/``; None when files stay in place."""
        if self.settings.mode == "keep":
            return None
        day = when.astimezone(timezone.utc).strftime("%Y-%m-%d")
        return _move(source, self.settings.folder / day / camera.replace("/", "_") / source.name)

    def fail(self, source: Path, camera: str, reason: str, inspection_id: int | None) -> Path | None:
        """Move to ``<failed>/<camera>/`` with ``<name>.error.json`` saying why."""
        if self.settings.mode == "keep":
            return None
        target = _move(source, self.settings.failed_folder / camera.replace("/", "_") / source.name)
        sidecar = target.with_name(target.name + ".error.json")
        sidecar.write_text(
            json.dumps(
                {
                    "file": source.name,
                    "camera": camera,
                    "reason": reason,
                    "inspection_id": inspection_id,
                    "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
        return target
