"""doctor checks that the service's user can read the bundle, from stat (doctor itself may run as root)."""

from __future__ import annotations

import grp
import pwd
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from inspectd.doctor import Reader, check_readable, unreadable_paths
from tests.conftest import REPO


@pytest.fixture()
def bundle(random_bundle, open_folder):
    copy = open_folder / "bundle"
    shutil.copytree(random_bundle, copy)  # copy2 keeps the modes save_bundle gave it
    return copy


def _group_member(folder: Path) -> Reader:
    """Someone who neither owns the bundle nor is root, but is in the bundle's group."""
    owner = folder.stat().st_uid
    return Reader("member", owner + 4321 if owner else 4321, frozenset({folder.stat().st_gid}))


def test_saved_bundles_are_group_readable_and_not_world_readable(bundle):
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o750
    assert {stat.S_IMODE(p.stat().st_mode) for p in bundle.rglob("*")} == {0o640}
    member = _group_member(bundle)
    assert check_readable("bundle access", bundle, member, "FIX").status == "ok"
    outsider = Reader("outsider", member.uid, frozenset({member.uid}))
    check = check_readable("bundle access", bundle, outsider, "FIX")
    assert check.status == "FAIL" and f"outsider cannot read {bundle} (" in check.detail


def test_the_first_unreadable_file_is_named_with_owner_group_mode_and_fix(bundle):
    member = _group_member(bundle)
    weights = bundle / "model.safetensors"
    weights.chmod(0o600)  # what bundles used to be written with
    check = check_readable("bundle access", bundle, member, "chgrp -R g B; chmod -R g+rX B")
    assert check.status == "FAIL"
    info = weights.stat()
    owner, group = pwd.getpwuid(info.st_uid).pw_name, grp.getgrgid(info.st_gid).gr_name
    assert check.detail == (f"member cannot read {weights} (owner {owner}, group {group}, mode 0600): not readable;"
                            " fix: chgrp -R g B; chmod -R g+rX B")
    (bundle / "config.json").chmod(0o600)
    problems, files = unreadable_paths(bundle, member)
    assert [p.detail.split(" (")[0] for p in problems] == [str(bundle / "config.json"), str(weights)]
    assert files == len(list(bundle.iterdir()))


def test_a_folder_above_the_bundle_that_cannot_be_entered_is_named(bundle, open_folder):
    member = _group_member(bundle)
    open_folder.chmod(0o700)
    check = check_readable("bundle access", bundle, member, "FIX")
    assert check.status == "FAIL" and f"{open_folder} (" in check.detail
    assert f"cannot be entered (no x for member); fix: chmod o+x {open_folder}" in check.detail


def test_doctor_cli_checks_the_service_user(bundle, open_folder):
    import yaml

    try:
        nobody = Reader.of_user("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' on this machine")
    if bundle.stat().st_gid in nobody.gids or bundle.stat().st_uid == nobody.uid:
        pytest.skip("the bundle's group is one of nobody's")
    config = open_folder / "inspectd.yaml"
    config.write_text(yaml.safe_dump({"model": {"bundle": str(bundle), "device": "cpu"},
                                      "store": {"url": f"sqlite:///{open_folder / 'var' / 'x.db'}"}}))
    config.chmod(0o644)

    def doctor(*options: str) -> list[str]:
        done = subprocess.run([sys.executable, "-m", "inspectd.cli", "--config", str(config), "doctor", *options],
                              capture_output=True, text=True, timeout=120, cwd=REPO)
        return done.stdout.splitlines()

    lines = doctor("--service-user", "nobody")
    group = nobody.primary_group
    access = [line for line in lines if line.startswith("FAIL  bundle access:")]
    assert access and f"nobody cannot read {bundle} (" in access[0], lines
    assert f"fix: chgrp -R {group} {bundle}; chmod -R g+rX {bundle}" in access[0]
    assert any(line.startswith("ok    config access:") for line in lines)
    assert any(line.startswith("FAIL  service user: no user named 'no-such-user-x'")
               for line in doctor("--service-user", "no-such-user-x"))
