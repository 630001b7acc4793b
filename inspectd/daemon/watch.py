"""Find complete files in the drop folders: events, stability and rescans.

inotify reports close-after-write and renames into the folder, which mark a
file complete. The polling observer (network shares) only sees creations and
changes, so such files must also keep the same size and mtime for
``stable_s``. Files present at start or whose events were lost (inotify
queue overflow is silent) are found by a periodic rescan; a file that an
inotify watch saw being written is left alone by the rescan until it is
closed. Subfolders are not watched.

A watcher locks its folders when it is made, before anything starts, and
holds them until it stops (``folder_lock``): a second daemon on one of them
is refused with the folder's name and the pid holding it.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import queue
import stat
import threading
import time
from pathlib import Path

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEventHandler,
)
from watchdog.observers.inotify import InotifyObserver
from watchdog.observers.polling import PollingObserver

from inspectd.config import WatchSettings
from inspectd.daemon.file_names import as_text
from inspectd.daemon.folder_lock import lock_folders
from inspectd.daemon.items import ReadyFile
from inspectd.threads import LoopThread

log = logging.getLogger("inspectd.watch")

_WRITE_GRACE_S = 300.0


def _offerable(path: Path) -> bool:
    """A regular file, or a symbolic link (handed on so that the worker refuses it with a failed row)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) or stat.S_ISLNK(mode)


def ignored(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: FolderWatcher, folder: Path, camera: str) -> None:
        self.watcher = watcher
        self.folder = folder
        self.camera = camera

    def _ours(self, raw: str | bytes) -> Path | None:
        path = Path(os.fsdecode(raw))
        if path.parent != self.folder or ignored(path.name, self.watcher.settings.ignore_patterns):
            return None
        return path

    def on_closed(self, event: FileClosedEvent) -> None:
        if (path := self._ours(event.src_path)) is not None:
            self.watcher.mark_complete(path, self.camera)

    def on_moved(self, event: FileMovedEvent) -> None:
        if event.is_directory:
            return
        if (path := self._ours(event.dest_path)) is not None:
            if self.watcher.polling:
                self.watcher.mark_candidate(path, self.camera)
            else:
                self.watcher.mark_complete(path, self.camera)

    def on_created(self, event: FileCreatedEvent) -> None:
        self._changed(event)

    def on_modified(self, event: FileModifiedEvent) -> None:
        self._changed(event)

    def _changed(self, event) -> None:
        if event.is_directory:
            return
        if (path := self._ours(event.src_path)) is not None:
            if os.path.islink(path):
                self.watcher.mark_complete(path, self.camera)  # a link is whole when made (and is refused)
            elif self.watcher.polling:
                self.watcher.mark_candidate(path, self.camera)
            else:
                self.watcher.mark_writing(path)


class FolderWatcher(LoopThread):
    """Emits ``ReadyFile`` items on ``ready``; owns the folders' locks, the observer, the stability checks and the
    rescans."""

    def __init__(self, settings: WatchSettings, ready: queue.Queue) -> None:
        # First: a daemon whose folders another one holds is refused (FolderBusyError) before its threads start.
        self._locks = lock_folders(folder.path for folder in settings.folders)
        super().__init__("inspectd-stability")
        self.settings = settings
        self.ready = ready
        self.polling = settings.observer == "polling"
        self._lock = threading.Lock()
        # path -> monotonic time of its last write event; a file whose close
        # event was lost falls back to the stability check after _WRITE_GRACE_S.
        self._writing: dict[Path, float] = {}
        # candidate path -> (camera, (size, mtime_ns), since)
        self._candidates: dict[Path, tuple[str, tuple[int, int], float]] = {}
        self._noted: set[Path] = set()  # subfolders already logged
        self._observer = None

    def start(self) -> None:
        # Full inotify events: a file renamed in from a folder we do not watch is reported as a move (complete),
        # not as a creation that would wait for a close that never comes.
        observer = PollingObserver(timeout=self.settings.poll_interval_s) if self.polling else \
            InotifyObserver(generate_full_events=True)
        for folder in self.settings.folders:
            folder.path.mkdir(parents=True, exist_ok=True)
            observer.schedule(_Handler(self, folder.path, folder.camera), str(folder.path), recursive=False)
        observer.start()
        self._observer = observer
        super().start()
        self.rescan()

    def stop(self, timeout: float | None = 10) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=timeout)
        super().stop(timeout)
        self._locks.release()

    def alive(self) -> bool:
        return self._observer is not None and self._observer.is_alive() and super().alive()

    def mark_writing(self, path: Path) -> None:
        with self._lock:
            self._writing[path] = time.monotonic()
            self._candidates.pop(path, None)

    def mark_complete(self, path: Path, camera: str) -> None:
        with self._lock:
            self._writing.pop(path, None)
            self._candidates.pop(path, None)
        if _offerable(path):
            log.debug("complete: %s", as_text(path.name))
            self.ready.put(ReadyFile(path, camera, time.time()))
        elif path.is_dir():
            self._note_skipped(path, "a folder")

    def mark_candidate(self, path: Path, camera: str) -> None:
        try:
            status = os.lstat(path)
        except OSError:
            return
        with self._lock:
            last_write = self._writing.get(path)
            if last_write is not None:
                if time.monotonic() - last_write < max(_WRITE_GRACE_S, 10 * self.settings.stable_s):
                    return
                del self._writing[path]
            previous = self._candidates.get(path)
            signature = (status.st_size, status.st_mtime_ns)
            if previous is None or previous[1] != signature:
                self._candidates[path] = (camera, signature, time.monotonic())

    def rescan(self) -> int:
        """Offer every file in the folders (symbolic links too: the worker refuses them with a row); the intake
        skips recorded ones. Subfolders are not inspected: each is logged once."""
        found = 0
        seen_folders: set[Path] = set()
        for folder in self.settings.folders:
            try:
                entries = list(os.scandir(folder.path))
            except OSError as exc:
                log.error("cannot list %s: %s", folder.path, exc)
                continue
            for entry in entries:
                if ignored(entry.name, self.settings.ignore_patterns):
                    continue
                if entry.is_file(follow_symlinks=False) or entry.is_symlink():
                    self.mark_candidate(Path(entry.path), folder.camera)
                    found += 1
                elif entry.is_dir(follow_symlinks=False):
                    seen_folders.add(Path(entry.path))
                    self._note_skipped(Path(entry.path), "a folder")
        with self._lock:
            self._noted &= seen_folders  # a folder removed and made again is logged again
        return found

    def _note_skipped(self, path: Path, what: str) -> None:
        with self._lock:
            if path in self._noted:
                return
            self._noted.add(path)
        log.warning("%s in the drop folder is %s: not inspected (subfolders are not watched)", as_text(path), what)

    def _loop(self) -> None:
        """Hand over candidates whose size and mtime held still for ``stable_s``."""
        while not self._stop.wait(min(0.1, self.settings.stable_s / 4 or 0.1)):
            now = time.monotonic()
            due = []
            with self._lock:
                items = list(self._candidates.items())
            for path, (camera, signature, since) in items:
                try:
                    status = os.lstat(path)
                except OSError:
                    with self._lock:
                        self._candidates.pop(path, None)
                    continue
                current = (status.st_size, status.st_mtime_ns)
                with self._lock:
                    if path not in self._candidates:
                        continue
                    if current != signature:
                        self._candidates[path] = (camera, current, now)
                    elif now - since >= self.settings.stable_s:
                        del self._candidates[path]
                        due.append((path, camera))
            for path, camera in due:
                self.ready.put(ReadyFile(path, camera, time.time()))
