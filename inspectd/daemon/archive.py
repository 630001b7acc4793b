"""Move recorded files out of the drop folder; failed ones get a sidecar."""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

from inspectd.config import ArchiveSettings
from inspectd.daemon.file_names import as_text


def _free_name(folder: Path, name: str) -> Path:
    candidate = folder / name
    stem, suffix = Path(name).stem, Path(name).suffix
    n = 1
    while os.path.lexists(candidate):  # a dangling link is taken too
        n += 1
        candidate = folder / f"{stem}.{n}{suffix}"
    return candidate


def _move(source: Path, destination: Path) -> Path:
    """Link into place, then unlink the original.

    Not a rename: inotify reports a rename out of a watched folder as an
    unmatched IN_MOVED_FROM, which watchdog holds for 0.5 s to pair it, and
    every later event of that folder waits behind it. An unlink is reported
    at once. Across file systems the file is copied, synced, then unlinked.
    A symbolic link is moved as a link, never as its target's bytes.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    target = _free_name(destination.parent, as_text(destination.name))
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError:
        if os.path.islink(source):
            os.symlink(os.readlink(source), target)
        else:
            shutil.copy2(source, target, follow_symlinks=False)
            with open(target, "rb") as handle:
                os.fsync(handle.fileno())
    os.unlink(source)
    return target


def _camera_dir(camera: str) -> str:
    return camera.replace("/", "_")


class Archiver:
    def __init__(self, settings: ArchiveSettings) -> None:
        self.settings = settings

    def archive(self, source: Path, camera: str, when: datetime) -> Path | None:
        """Move to ``<archive>/<YYYY-MM-DD>/<camera>/``; None when files stay in place."""
        if self.settings.mode == "keep":
            return None
        return _move(source, self._archive_folder(camera, when) / source.name)

    def _archive_folder(self, camera: str, when: datetime) -> Path:
        """``when`` naive is UTC (the store's convention), never the box's local time."""
        utc = when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)
        return self.settings.folder / utc.strftime("%Y-%m-%d") / _camera_dir(camera)

    def places(self, name: str, camera: str, days: list[datetime], failed: bool) -> list[Path]:
        """Where a file of this name may have been moved: its name or a ``<stem>.<n><suffix>`` of it, in the
        failed folder or in the archive folders of ``days``. Used to repair rows after a crash."""
        folders = [self.settings.failed_folder / _camera_dir(camera)] if failed else \
            [self._archive_folder(camera, day) for day in days]
        name = as_text(name)
        pattern = re.compile(re.escape(Path(name).stem) + r"(\.\d+)?" + re.escape(Path(name).suffix))
        found = []
        for folder in dict.fromkeys(folders):
            try:
                entries = os.scandir(folder)
            except OSError:
                continue
            with entries:
                found += [Path(e.path) for e in entries if pattern.fullmatch(e.name)]
        return sorted(found)

    def fail(self, source: Path, camera: str, reason: str, inspection_id: int | None) -> Path | None:
        """Move to ``<failed>/<camera>/`` with ``<name>.error.json`` saying why."""
        if self.settings.mode == "keep":
            return None
        target = _move(source, self.settings.failed_folder / _camera_dir(camera) / source.name)
        sidecar = target.with_name(target.name + ".error.json")
        sidecar.write_text(
            json.dumps(
                {
                    "file": as_text(source.name),
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
