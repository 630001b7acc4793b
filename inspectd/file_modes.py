"""The modes of what the daemon writes: files 0640, folders 0750, whatever the umask.

The store, the alert log and the archived photos are the plant's inspection record and its photos: readable by
the service's user and group (the console runs as that user or in group ``inspectd``), never by every local
user, which the usual umask 022 would otherwise allow (0644 files, 0755 folders).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

FILE_MODE = 0o640
DIR_MODE = 0o750

log = logging.getLogger("inspectd.files")


def make_dirs(folder: Path) -> None:
    """``folder`` and its missing parents; each folder created here gets exactly 0750 (one that exists keeps its
    mode: an operator may have chosen it)."""
    folder = Path(folder)
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for created in reversed(missing):
        try:
            created.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # made by another thread or process in between: its creator set the mode
        os.chmod(created, DIR_MODE)


def open_private(path: Path, append: bool = True, follow_symlinks: bool = True) -> int:
    """Open ``path`` for appending (or, ``append=False``, emptied for writing); the descriptor is returned.

    Created 0640; an existing file keeps its mode less anything beyond 0640 (others' access above all), so an
    older install's 0644 file is closed on first use (left as it is when another user owns it)."""
    flags = os.O_WRONLY | (os.O_APPEND if append else os.O_TRUNC) | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, FILE_MODE)
        created = True
    except FileExistsError:
        fd = os.open(path, flags)
        created = False
    try:
        mode = os.fstat(fd).st_mode & 0o7777
        wanted = FILE_MODE if created else mode & FILE_MODE
        if mode != wanted:
            try:
                os.fchmod(fd, wanted)
            except PermissionError:
                if created:
                    raise
    except BaseException:
        os.close(fd)
        raise
    return fd


def restrict(path: Path) -> None:
    """An existing file (never a link, nor its target) keeps its mode less anything beyond 0640; a missing one is
    left alone."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not os.path.isfile(path) or os.path.islink(path):
        return
    if mode & 0o7777 & ~FILE_MODE:
        try:
            os.chmod(path, mode & 0o7777 & FILE_MODE)
        except PermissionError:
            log.warning("cannot take others' access away from %s (owned by another user); chmod o-rwx it", path)
