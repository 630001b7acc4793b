"""Folders that overlap are refused when the config is loaded (start, SIGHUP reload, doctor), naming both.

A failed folder set to ``.`` once let retention delete the config file, the console's users file, the webhook
secret and a photo still waiting in a drop folder. Real files and folders, the real loader and ``doctor``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from inspectd.cli.common import EXIT_SOME_FAILED
from inspectd.cli.ops import cmd_doctor
from inspectd.config import load_settings
from inspectd.errors import ConfigError


def _config(root: Path, **sections) -> Path:
    """A config in ``root`` laid out like a real box, each section replaced by ``sections``."""
    (root / "bundle").mkdir(exist_ok=True)
    settings = {
        "model": {"bundle": "bundle"},
        "watch": {"folders": [{"path": "drop", "camera": "line1"}]},
        "archive": {"folder": "var/archive", "failed_folder": "var/failed"},
        "store": {"url": "sqlite:///var/inspectd.db"},
        "console": {"users_file": "users"},
        "alerts": {"channels": [{"type": "webhook", "name": "hook", "url": "http://127.0.0.1:9/",
                                 "secret_file": "secret"},
                                {"type": "log", "name": "file", "path": "var/alerts.jsonl"}]},
    }
    for key, value in sections.items():
        settings[key] = {**settings.get(key, {}), **value}
    path = root / "inspectd.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def test_a_box_whose_folders_are_apart_loads(tmp_path):
    """Archive, failed folder and store side by side in one folder below the config is the usual layout."""
    settings = load_settings(_config(tmp_path))
    assert settings.archive.failed_folder == tmp_path / "var" / "failed"


def _refused(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    return str(info.value)


@pytest.mark.parametrize("sections, first, second", [
    # the case: the failed folder is the config's own folder
    ({"archive": {"failed_folder": "."}}, ("archive.failed_folder", ""), ("the configuration file", "inspectd.yaml")),
    ({"archive": {"failed_folder": ".."}}, ("archive.failed_folder", ".."), ("console.users_file", "users")),
    ({"archive": {"failed_folder": "drop"}}, ("watch.folders[0].path", "drop"), ("archive.failed_folder", "drop")),
    ({"archive": {"folder": "drop/archive"}}, ("watch.folders[0].path", "drop"), ("archive.folder", "drop/archive")),
    ({"watch": {"folders": [{"path": "var/archive/2026-06-30/line1", "camera": "line1"}]}},
     ("watch.folders[0].path", "var/archive/2026-06-30/line1"), ("archive.folder", "var/archive")),
    ({"archive": {"folder": "var/both", "failed_folder": "var/both"}},
     ("archive.folder", "var/both"), ("archive.failed_folder", "var/both")),
    ({"store": {"url": "sqlite:///var/failed/inspectd.db"}},
     ("archive.failed_folder", "var/failed"), ("store.url", "var/failed/inspectd.db")),
    ({"console": {"users_file": "drop/users"}}, ("watch.folders[0].path", "drop"), ("console.users_file", "drop/users")),
    ({"alerts": {"channels": [{"type": "webhook", "name": "hook", "url": "http://127.0.0.1:9/",
                               "secret_file": "var/archive/secret"}]}},
     ("archive.folder", "var/archive"), ("alerts.channels[hook].secret_file", "var/archive/secret")),
    ({"model": {"bundle": "var/failed/bundle"}}, ("archive.failed_folder", "var/failed"),
     ("model.bundle", "var/failed/bundle")),
    ({"watch": {"folders": [{"path": "drop", "camera": "line1"}, {"path": "drop/two", "camera": "line2"}]}},
     ("watch.folders[0].path", "drop"), ("watch.folders[1].path", "drop/two")),
])
def test_overlapping_folders_are_refused_naming_both_settings_and_paths(tmp_path, sections, first, second):
    if sections.get("model"):
        (tmp_path / sections["model"]["bundle"]).mkdir(parents=True)
    message = _refused(_config(tmp_path, **sections))
    for setting, relative in (first, second):
        assert setting in message, message
        assert str((tmp_path / relative).resolve()) in message, message


def test_a_drop_folder_that_links_to_the_config_folder_is_refused(tmp_path):
    """Paths are compared after links are followed: a link is the folder it points to."""
    (tmp_path / "cameras").symlink_to(tmp_path, target_is_directory=True)
    message = _refused(_config(tmp_path, watch={"folders": [{"path": "cameras", "camera": "line1"}]}))
    assert "watch.folders[0].path" in message and "the configuration file" in message
    assert str(tmp_path / "inspectd.yaml") in message


def test_doctor_reports_the_overlap(tmp_path, capsys):
    path = _config(tmp_path, archive={"failed_folder": "."})
    code = cmd_doctor(argparse.Namespace(config=str(path), service_user=None))
    out = capsys.readouterr().out
    assert code == EXIT_SOME_FAILED
    assert "FAIL" in out and "archive.failed_folder" in out and str(tmp_path / "inspectd.yaml") in out
