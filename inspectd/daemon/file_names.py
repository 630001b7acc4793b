"""File names as the store, the logs and the alerts hold them: always valid UTF-8.

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
from pathlib import Path

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
