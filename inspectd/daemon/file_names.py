"""File names as the store, the logs and the alerts hold them (always valid UTF-8), and a file's identity.

Linux file names are bytes; a camera or a Windows share can write names that
are not UTF-8 (``Pr\\xfcfung.png`` from Latin-1). Python carries those bytes as
lone surrogates, which SQLite, PostgreSQL and JSON consumers refuse. Every
byte that is not part of valid UTF-8 is written as ``%XX`` instead; the
archived copy takes that name too, so ``archived_path`` is a path that opens.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

from inspectd.safe_text import NAME_MAX, fit_name

_SURROGATE = re.compile("[\udc80-\udcff]")


def as_text(path: Path | str) -> str:
    """``path`` as valid UTF-8 text: undecodable bytes become ``%XX``."""
    text = os.fsdecode(path)
    return _SURROGATE.sub(lambda match: f"%{ord(match.group()) - 0xDC00:02X}", text)


def is_clean(path: Path | str) -> bool:
    """True when the name is valid UTF-8 as it stands on disk."""
    return _SURROGATE.search(os.fsdecode(path)) is None


def link_digest(path: Path | str, target: Path | str) -> str:
    """The sha256 a refused symbolic link is recorded under: its own name and target, never the target's bytes."""
    return hashlib.sha256(b"symlink\0" + os.fsencode(path) + b"\0" + os.fsencode(target)).hexdigest()


def identity_digest(path: Path | str, recorded_as: Path | str | None = None) -> tuple[str | None, int]:
    """(sha256, size) a file is recorded under, read without following a link: a regular file's bytes; a
    symbolic link's name and target (never the target's bytes); anything else its type and name. ``recorded_as``
    is the name the identity was taken under when the file has since moved (the drop folder path). None when it
    cannot be read."""
    name = path if recorded_as is None else recorded_as
    try:
        status = os.lstat(path)
        if stat.S_ISLNK(status.st_mode):
            return link_digest(name, os.readlink(path)), 0
        if not stat.S_ISREG(status.st_mode):
            identity = f"not a regular file\0{status.st_mode:o}\0".encode() + os.fsencode(name)
            return hashlib.sha256(identity).hexdigest(), 0
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest(), os.fstat(handle.fileno()).st_size
    except OSError:
        return None, 0


_SIDECAR = ".error.json"
_COUNTER_ROOM = len(".99999")  # ``<stem>.<n><suffix>`` when the name is taken (``_free_name``)
ARCHIVE_NAME_MAX = NAME_MAX - len(_SIDECAR) - _COUNTER_ROOM
def archive_name(name: Path | str) -> str:
    """The name a file takes in the archive or the failed folder: ``as_text`` of its name, within
    ``ARCHIVE_NAME_MAX`` bytes so that ``<stem>.<n><suffix>`` and ``<name>.error.json`` still fit NAME_MAX.

    ``%XX`` escapes make a non-UTF-8 name up to three times longer: a legal 251-byte name became a ~750-byte one,
    every move failed (ENAMETOOLONG) and the file stayed in the drop folder, logged at each rescan. A name over
    the budget keeps its suffix and the start of its stem (cut between characters, never inside a ``%XX``) plus
    ``~`` and 10 hex digits of the sha256 of the whole text name, so long names with a common start stay apart.
    A function of the text name alone: ``Archiver.places`` finds the file again from the row's ``source_path``.
    """
    text = as_text(name)
    if len(text.encode("utf-8")) <= ARCHIVE_NAME_MAX:
        return text
    mark = "~" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]
    fitted = fit_name(text, ARCHIVE_NAME_MAX, mark=mark)
    stem_end = fitted.rindex(mark)
    stem = re.sub(r"%[0-9A-F]?$", "", fitted[:stem_end])  # never half an escape
    return stem + fitted[stem_end:]
