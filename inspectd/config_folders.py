"""Which configured folders may not overlap, checked whenever a config is loaded (start, SIGHUP, doctor).

inspectd works in three kinds of folder, and each of them changes what is in it:
a drop folder (every file in it is taken as a photo and moved out of it; the
cameras' and FTP clients' own tools write and clean it), the archive and the
failed folder (inspectd moves files in and retention deletes them). A failed
folder set to ``.`` once sat over the config file, the console's users file
and the webhook secret. So, with every path resolved (links followed):

* the working folders (each drop folder, the archive, the failed folder) are
  pairwise apart: none is the same as another or inside another, in either
  direction (two drop folders included: one camera's tools would clean the
  other's files);
* nothing inspectd needs lies in or under a working folder: the config file,
  ``console.users_file``, every channel's ``secret_file`` / ``password_file``,
  a log channel's ``path``, ``model.canary_image``, the SQLite store file
  (with its -wal and -shm beside it) and the ``model.bundle`` folder.

Working folders inside the config's or the store's folder are fine (the
usual layout: ``var/archive`` beside ``var/inspectd.db``): nothing there is
in them. Both modes are checked (``keep`` moves nothing, but a config switched
to ``move`` must not start to).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Place:
    """One configured path and the setting it comes from (as the error names it)."""

    setting: str
    path: Path


@dataclass(frozen=True)
class Overlap:
    """Two settings whose paths may not be where they are: ``inner`` is the same as or inside ``outer``."""

    outer: Place
    inner: Place
    why: str

    def describe(self) -> str:
        where = "is the same as" if self.inner.path == self.outer.path else "is inside"
        return (f"{self.inner.setting} ({self.inner.path}) {where} {self.outer.setting} ({self.outer.path}): "
                f"{self.why}")


_WORK_WHY = {
    "drop": "every file in a drop folder is taken as a photo and moved away, and the cameras' tools clean it",
    "archive": "inspectd moves files into the archive and retention deletes them there",
    "failed": "inspectd moves files into the failed folder and retention deletes them there",
}


def sqlite_file(url: str) -> Path | None:
    """The SQLite file of a store URL (already resolved by the loader); None for a server or ``:memory:``."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # not a URL at all: open_engine says so, with the setting, when the store is opened
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database).resolve()


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or inner.is_relative_to(outer)


def overlaps(work: list[tuple[str, Place]], protected: list[Place]) -> list[Overlap]:
    """Every pair that may not overlap and does: ``work`` is (kind: drop, archive or failed; place) of each working
    folder, ``protected`` what must stay out of them (config.py lists both from the settings)."""
    found = []
    for i, (kind, place) in enumerate(work):
        for other_kind, other in work[i + 1:]:
            if _within(other.path, place.path):
                found.append(Overlap(place, other, _WORK_WHY[kind]))
            elif _within(place.path, other.path):
                found.append(Overlap(other, place, _WORK_WHY[other_kind]))
    for kind, place in work:
        for item in protected:
            if _within(item.path, place.path):
                found.append(Overlap(place, item, _WORK_WHY[kind]))
    return found


def check_apart(work: list[tuple[str, Place]], protected: list[Place]) -> None:
    """ValueError naming every overlap (both settings, both paths) and how to fix it; None when all are apart."""
    found = overlaps(work, protected)
    if not found:
        return
    lines = "\n".join(f"  {overlap.describe()}" for overlap in found)
    raise ValueError(f"folders overlap:\n{lines}\nGive the drop folders, the archive and the failed folder each a "
                     "folder of its own, with nothing else of inspectd's in it.")
