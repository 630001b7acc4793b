"""Move recorded files out of the drop folder; failed ones get a sidecar.

Names in the archive are ``archive_name`` of the file's name: valid UTF-8 and short enough that a ``.<n>``
and an ``.error.json`` still fit NAME_MAX. Folders created here are 0750 and files 0640 (``file_modes``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

from inspectd.config import ArchiveSettings
from inspectd.daemon.file_names import archive_name, as_text
from inspectd.file_modes import FILE_MODE, make_dirs, open_private

log = logging.getLogger("inspectd.archive")
_mode_refused: list[bool] = []  # set once a photo's mode could not be set: warned once per process


def _set_mode(target: Path) -> None:
    """0640 on an archived file. A hard link shares the drop file's inode: when another user (the camera's FTP
    account) owns it, the daemon may not chmod it (EPERM); it then keeps the mode its writer gave it, said once."""
    if os.path.islink(target):
        return  # a refused link moved as a link: its own mode means nothing, its target is not ours
    try:
        os.chmod(target, FILE_MODE, follow_symlinks=False)
    except OSError as exc:
        if not _mode_refused:
            _mode_refused.append(True)
            log.warning("cannot set mode 0640 on archived file %s (%s); archived files owned by another user keep "
                        "the mode their writer gave them (said once)", as_text(target), exc.strerror or exc)


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
    make_dirs(destination.parent)
    target = _free_name(destination.parent, archive_name(destination.name))
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError:
        if os.path.islink(source):
            os.symlink(os.readlink(source), target)
        else:
            shutil.copy2(source, target, follow_symlinks=False)
            with open(target, "rb") as handle:
                os.fsync(handle.fileno())
    _set_mode(target)
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
        name = archive_name(name)
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
        with os.fdopen(open_private(sidecar, append=False, follow_symlinks=False), "w", encoding="utf-8") as handle:
            handle.write(json.dumps(
                {
                    "file": as_text(source.name),
                    "camera": camera,
                    "reason": reason,
                    "inspection_id": inspection_id,
                    "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                },
                indent=2,
            )
            + "\n")
        return target
