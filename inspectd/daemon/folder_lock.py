"""One daemon per drop folder: an exclusive lock on each watched folder, held for the daemon's life.

Two daemons on one folder would both take its files, both fire their
config's alerts (a second config's webhook and siren on the production line)
and race to move each file. Each folder is locked with ``flock`` on the
folder itself (a directory opened read-only), not on a file inside it: there
is then no lock file for the watcher or a rescan to take for an image, for
retention to delete, or for a camera's uploader to trip over, and the daemon
needs no write access to take it. The kernel drops the lock when the process
ends, however it ends (kill -9 included), so a lock is never stale.

A daemon that finds a folder taken says which folder and which process holds
it (read from ``/proc/locks``). On a file system that does not support
``flock`` on a folder (some network shares), the folder is watched unlocked
and a warning says that a second daemon there would not be refused.
Several boxes sharing one store, each with folders of its own, are unaffected:
the lock is on the folders, not the store.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from inspectd.daemon.file_names import as_text
from inspectd.errors import InspectdError

log = logging.getLogger("inspectd.watch")

_BUSY = {errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES}
_PROC_LOCKS = Path("/proc/locks")


class FolderBusyError(InspectdError):
    """Another process holds a watched folder: the message names the folder and that process."""


@dataclass(frozen=True)
class FolderLocks:
    """The folders this process holds (their open descriptors); ``release`` lets them go."""

    held: tuple[tuple[Path, int], ...]

    def release(self) -> None:
        for _, fd in self.held:
            try:
                os.close(fd)  # closing the descriptor drops its flock
            except OSError:
                pass


def lock_folders(folders: Iterable[Path]) -> FolderLocks:
    """Lock every folder (creating a missing one, as the watcher would), or none: on a refusal the ones already
    taken are let go and ``FolderBusyError`` names the busy folder and its holder."""
    held: list[tuple[Path, int]] = []
    named: dict[Path, Path] = {}  # one lock per folder, however often and by whichever path it is named
    for folder in folders:
        named.setdefault(Path(folder).resolve(), Path(folder))
    try:
        for folder in named.values():  # in the config's order, under the name the config gives it
            fd = _lock_one(folder)
            if fd is not None:
                held.append((folder, fd))
    except BaseException:
        FolderLocks(tuple(held)).release()
        raise
    return FolderLocks(tuple(held))


def _lock_one(folder: Path) -> int | None:
    """The descriptor holding ``folder``'s lock; None where its file system cannot lock a folder."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise InspectdError(f"{as_text(folder)}: watched folder cannot be opened by uid {os.geteuid()} "
                            f"({exc.strerror or exc})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in _BUSY:
            raise FolderBusyError(
                f"{as_text(folder)}: watched by another inspectd ({_holder(folder)}); one daemon per drop folder: "
                "stop that one, or give this one folders of its own (make run uses config/inspectd.yaml's var/drop)"
            ) from None
        log.warning("%s: cannot be locked on this file system (%s); watched unlocked: a second daemon on this "
                    "folder would not be refused", as_text(folder), exc.strerror or exc)
        return None
    return fd


def _holder(folder: Path) -> str:
    """``pid N`` of the process holding ``folder``'s flock, from ``/proc/locks``; else what is known."""
    pids = holder_pids(folder)
    if len(pids) == 1:
        return f"pid {pids[0]}"
    if pids:
        return "pid " + " or ".join(str(p) for p in pids)
    return "its pid is not listed in /proc/locks"


def holder_pids(folder: Path) -> list[int]:
    """The pids /proc/locks lists for an exclusive flock on ``folder``'s inode. A line reads
    ``1: FLOCK  ADVISORY  WRITE 1234 fe:00:2162951 0 EOF``: device major:minor in hex, then the inode. Some file
    systems (btrfs subvolumes, overlays) list another device than stat gives: then the inode alone is matched."""
    try:
        status = os.stat(folder)
        lines = _PROC_LOCKS.read_text().splitlines()
    except OSError:
        return []
    exact, same_inode = [], []
    device = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}"
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK" or fields[3] != "WRITE":
            continue  # a waiter's line reads "1: -> FLOCK ...": not a holder
        try:
            pid = int(fields[4])
            major, minor, inode = fields[5].split(":")
        except ValueError:
            continue
        if int(inode) != status.st_ino or pid <= 0:
            continue
        same_inode.append(pid)
        if f"{int(major, 16):02x}:{int(minor, 16):02x}" == device:
            exact.append(pid)
    return sorted(set(exact or same_inode))
