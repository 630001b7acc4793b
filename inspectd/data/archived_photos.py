"""An inspection's photo, found only through its row and only inside the configured folders.

No path from a request or a user reaches the file system: the file comes from
the row (``archived_path``, or the drop folder in keep mode) and is read only
when it resolves inside a configured archive, failed or (keep mode) watched
folder, without following a link. The console and the export of reviewed rows
both read photos this way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from inspectd.config import Settings
from inspectd.errors import InspectdError
from inspectd.inspection.images import decode_image, read_image_bytes

_MAX_BYTES = 256 * 1024 * 1024


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
        """The photo's bytes, or None when it is outside the folders, gone, a link or unreadable."""
        path = self.path_of(record)
        if path is None:
            return None
        try:
            return read_image_bytes(path, _MAX_BYTES, follow_symlinks=False)
        except (InspectdError, OSError):
            return None

    def photo(self, record: dict) -> Image.Image | None:
        data = self.read(record)
        if data is None:
            return None
        try:
            return decode_image(data, str(record.get("archived_path") or record.get("source_path")), self.max_pixels)
        except InspectdError:
            return None
