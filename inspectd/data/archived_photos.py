"""An inspection's photo, found only through its row and only inside the configured folders.

No path from a request or a user reaches the file system: the file comes from
the row (``archived_path``, or the drop folder in keep mode) and is read only
when it resolves inside a configured archive, failed or (keep mode) watched
folder, without following a link. The console and the export of reviewed rows
both read photos this way.

The bytes read are the bytes inspected, or nothing: the archive is a hard link to the drop file's inode, and a
writer that kept the file open can rewrite it after the model saw it. Every read is checked against the row's
``sha256`` (the hash of exactly the bytes the model decoded) and a changed photo raises ``PhotoChanged``, so the
console never shows, and the export never labels, a photo that was not the one inspected.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from inspectd.config import Settings
from inspectd.errors import InspectdError
from inspectd.inspection.images import decode_image, read_image_bytes

_MAX_BYTES = 256 * 1024 * 1024


class PhotoChanged(InspectdError):
    """The archived file's bytes are not those the row records (its sha256 differs): rewritten after inspection."""

    def __init__(self, inspection_id, path, recorded: str, now: str) -> None:
        super().__init__(f"the archived photo of inspection {inspection_id} ({path}) is not the one inspected: "
                         f"sha256 {recorded} recorded, {now} now")
        self.inspection_id = inspection_id
        self.path = path
        self.recorded = recorded
        self.now = now


def verify(record: dict, data: bytes, path) -> bytes:
    """``data`` when its sha256 is the row's, else ``PhotoChanged``. A row without a sha256 cannot be checked and
    its photo is not trusted either."""
    now = hashlib.sha256(data).hexdigest()
    recorded = record["sha256"]
    if now != recorded:
        raise PhotoChanged(record.get("id"), path, recorded or "none", now)
    return data


@dataclass(frozen=True)
class PhotoRoots:
    folders: tuple[Path, ...]
    max_pixels: int

    @classmethod
    def of(cls, settings: Settings) -> PhotoRoots:
        folders = [settings.archive.folder, settings.archive.failed_folder]
        if settings.archive.mode == "keep":
            folders += [f.path for f in settings.watch.folders]
        return cls(tuple(Path(f).resolve() for f in folders), settings.images.max_pixels)

    def path_of(self, record: dict) -> Path | None:
        """The row's photo when it lies inside one of the folders, else None (also once retention removed it:
        its path is kept in the row, and another file may take that name later)."""
        if record.get("photo_removed_at") is not None:
            return None
        stored = record.get("archived_path") or record.get("source_path")
        if not stored:
            return None
        candidate = Path(stored)
        parent = candidate.parent.resolve()  # the folders may be links; the file itself must not be one
        if not any(parent == root or parent.is_relative_to(root) for root in self.folders):
            return None
        return parent / candidate.name

    def read(self, record: dict) -> bytes | None:
        """The photo's bytes, or None when it is outside the folders, gone, a link or unreadable; ``PhotoChanged``
        when they are not the bytes inspected (``record`` must hold the row's ``sha256``)."""
        path = self.path_of(record)
        if path is None:
            return None
        try:
            data = read_image_bytes(path, _MAX_BYTES, follow_symlinks=False)
        except (InspectdError, OSError):
            return None
        return verify(record, data, path)

    def photo(self, record: dict) -> Image.Image | None:
        """The decoded photo, None as ``read``; raises ``PhotoChanged`` as ``read``."""
        data = self.read(record)
        if data is None:
            return None
        try:
            return decode_image(data, str(record.get("archived_path") or record.get("source_path")), self.max_pixels)
        except InspectdError:
            return None
