"""One daemon per drop folder, and ``make run`` on its own config (issue 28 item 8).

A second real daemon on a folder another one watches refuses to start, naming
the folder and the pid holding it; boxes sharing one PostgreSQL store with
folders of their own all run. ``make run`` passes its config to each command,
so the demo never reads ``/etc/inspectd/inspectd.yaml`` or ``INSPECTD_CONFIG``.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from inspectd.daemon.folder_lock import FolderBusyError, lock_folders
from tests.conftest import REPO
from tests.daemon_harness import DaemonProcess, db_rows, wait_for, write_config
from tests.test_daemon import png_bytes


def _config_for(root: Path, bundle: Path, folders: dict[str, Path], store_url: str) -> Path:
    """A config of another box or another operator: its own store, archive and failed folders; ``folders``
    (camera -> folder) may name one another daemon watches."""
    root.mkdir(parents=True, exist_ok=True)
    config = {
        "model": {"bundle": str(bundle), "device": "cpu", "batch_size": 4},
        "watch": {"folders": [{"path": str(path), "camera": camera} for camera, path in folders.items()],
                  "stable_s": 0.5, "reconcile_interval_s": 2},
        "queue": {"max_wait_ms": 50},
        "store": {"url": store_url},
        "archive": {"folder": str(root / "archive"), "failed_folder": str(root / "failed")},
    }
    path = root / "inspectd.yaml"
    path.write_text(yaml.safe_dump(config))
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    return path


def test_a_folder_is_locked_once_and_free_again_after_release(tmp_path):
    folders = (tmp_path / "a", tmp_path / "b")
    for folder in folders:
        folder.mkdir()
    lock_folders((folders[0], tmp_path / "b" / ".." / "a")).release()  # one folder named twice: locked once
    held = lock_folders(folders)
    try:
        with pytest.raises(FolderBusyError) as refused:
            lock_folders((tmp_path / "c-new", folders[1]))
        message = str(refused.value)
        assert str(folders[1]) in message and f"pid {os.getpid()}" in message, message
        lock_folders((tmp_path / "c-new",)).release()  # a refused call holds none of its folders (made, not locked)
        assert sorted(os.listdir(folders[0])) == [], "the lock is on the folder itself: no file appears in it"
    finally:
        held.release()
    lock_folders(folders).release()


@pytest.mark.slow
def test_a_second_daemon_on_the_same_drop_folder_refuses_naming_the_folder_and_its_pid(random_bundle, tmp_path):
    config = write_config(tmp_path, random_bundle)
    drop = tmp_path / "drop-line1"
    first = DaemonProcess(config)
    try:
        first.wait_ready()
        # Another config (as make run read /etc's): its own store and archive, the same drop folder.
        other = _config_for(tmp_path / "other", random_bundle, {"line1": drop},
                            f"sqlite:///{tmp_path / 'other' / 'var' / 'other.db'}")
        second = DaemonProcess(other)
        try:
            wait_for(lambda: second.proc.poll() is not None or second.notify.seen("READY=1"), 120, "second daemon")
        finally:
            if second.proc.poll() is None:
                second.kill9()  # it runs (or hangs): refused below
            else:
                second.stop()
        code = second.proc.returncode
        assert code == 2, f"a second daemon on {drop} ran (exit {code}):\n{second.output()}"
        assert str(drop) in second.output() and f"pid {first.proc.pid}" in second.output(), second.output()
        # The first daemon kept its folder and inspects what arrives in it.
        (drop / "part.png").write_bytes(png_bytes(7))
        db = tmp_path / "var" / "inspectd.db"
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM inspections")[0][0] == 1, 60, "the first daemon's row")
    finally:
        first_code = first.stop()
    assert first_code == 0, first.output()
    third = DaemonProcess(other)  # the folder is free once its daemon stopped: no stale lock
    try:
        third.wait_ready()
    finally:
        third_code = third.stop()
    assert third_code == 0, third.output()


@pytest.mark.slow
def test_boxes_sharing_a_postgresql_store_each_with_its_folders_all_run(random_bundle, postgres_server, tmp_path):
    url = postgres_server.fresh_database("t_shared_store_boxes")
    configs = [_config_for(tmp_path / f"box{i}", random_bundle, {f"cam{i}": tmp_path / f"box{i}" / "drop"}, url)
               for i in (1, 2)]
    boxes = []
    try:
        for config in configs:  # one after the other: two first starts on an empty store race to create its schema
            boxes.append(DaemonProcess(config))
            boxes[-1].wait_ready()
        for i in (1, 2):
            (tmp_path / f"box{i}" / "drop" / f"part{i}.png").write_bytes(png_bytes(10 + i))

        def cameras() -> list[str]:
            import psycopg

            with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as connection:
                return sorted(r[0] for r in connection.execute("SELECT camera FROM inspections").fetchall())

        wait_for(lambda: cameras() == ["cam1", "cam2"], 60, "a row from each box")
    finally:
        codes = [box.stop() for box in boxes]
    assert codes == [0, 0], [box.output() for box in boxes]


def _run_recipe() -> list[str]:
    """The shell commands ``make run`` would run (``make -n``: printed, not run), whatever the environment says."""
    done = subprocess.run(["make", "-n", "run"], capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**os.environ, "INSPECTD_CONFIG": "/etc/inspectd/inspectd.yaml"})
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def _inspectd_calls(lines: list[str]) -> dict[str, list[dict[str, str]]]:
    """Each ``inspectd`` command in shell lines: subcommand -> the global options it was given."""
    commands = []
    for line in "\n".join(lines).replace("\\\n", " ").splitlines():  # a recipe line continued with \ is one line
        current: list[str] = []
        for token in shlex.shlex(line, posix=True, punctuation_chars=True):
            if set(token) <= set(";&|()"):
                commands.append(current)
                current = []
            else:
                current.append(token)
        commands.append(current)
    calls: dict[str, list[dict[str, str]]] = {}
    for words in commands:
        starts = [i for i, word in enumerate(words) if word.endswith("bin/inspectd")]
        if not starts:
            continue
        rest, options = words[starts[0] + 1:], {}
        while rest and rest[0].startswith("--"):
            options[rest[0]], rest = rest[1], rest[2:]
        calls.setdefault(rest[0], []).append(options)
    return calls


def test_make_run_passes_its_own_config_to_the_daemon_the_feed_and_the_console():
    lines = _run_recipe()
    calls = _inspectd_calls(lines)
    for command in ("demo-feed", "serve", "run"):
        assert calls.get(command), f"make run does not start inspectd {command}: {lines}"
        assert all(options.get("--config") == "config/inspectd.yaml" for options in calls[command]), \
            f"inspectd {command} without --config config/inspectd.yaml: {lines}"
