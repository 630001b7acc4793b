"""The web console over a store the real daemon wrote: auth, CSRF, pictures by id only, bad input, reviews."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys

import pytest

from inspectd.console.auth import hash_password
from tests.console_harness import ConsoleProcess, filled_store, request
from tests.daemon_harness import db_rows

pytestmark = pytest.mark.slow
SHIPPED = __import__("pathlib").Path(__file__).resolve().parent.parent / "models" / "tiny-cgro"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("console")
    return filled_store(root, SHIPPED)


@pytest.fixture(scope="module")
def open_console(store):
    console = ConsoleProcess(store)
    console.wait_ready()
    yield console
    console.stop()


def _db(store):
    return store.parent / "var" / "inspectd.db"


def _csrf(console, inspection_id: int, user=None) -> str:
    status, _, body = request(f"{console.url}/inspections/{inspection_id}", user=user)
    assert status == 200
    return re.search(rb'name="csrf" value="([0-9a-f]+)"', body).group(1).decode()


def test_pages_and_pictures_of_every_recorded_inspection(open_console, store):
    rows = db_rows(_db(store), "SELECT id, verdict FROM inspections ORDER BY id")
    status, _, body = request(open_console.url + "/history")
    assert status == 200 and all(f'href="/inspections/{i}"'.encode() in body for i, _ in rows)
    anomalous = [i for i, v in rows if v == "anomalous"]
    assert anomalous, rows
    status, _, body = request(f"{open_console.url}/inspections/{anomalous[0]}")
    assert status == 200 and b'class="tok' in body and b"tok kept" in body  # the words ReAL kept
    for picture, kind in (("photo.jpg", "image/jpeg"), ("thumb.jpg", "image/jpeg"), ("heat.png", "image/png"),
                          ("outline.png", "image/png"), ("tokens/0.png", "image/png")):
        status, headers, data = request(f"{open_console.url}/inspections/{anomalous[0]}/{picture}")
        assert status == 200 and headers["content-type"] == kind and len(data) > 100, picture
    for page in ("/stats", "/alerts", "/stats?days=1", "/alerts?status=delivered"):
        assert request(open_console.url + page)[0] == 200, page


@pytest.mark.parametrize("path, status, says", [
    ("/inspections/999999", 404, b"does not exist"),
    ("/inspections/99999999999999999999999", 404, b"does not exist"),
    ("/inspections/abc", 404, b""),
    ("/inspections/999999/photo.jpg", 404, b"does not exist"),
    ("/inspections/1/tokens/9999.png", 404, b"no reasoning token"),
    ("/history?size=100000", 400, b"size"),
    ("/history?verdict=broken", 400, b"verdict"),
    ("/history?min_score=2", 400, b"min_score"),
    ("/history?since=yesterday", 400, b"since"),
    ("/history?before=garbage", 400, b"before"),
    ("/history?colour=red", 400, b"unknown parameter"),
    ("/stats?days=100000", 400, b"days"),
    ("/alerts?status=lost", 400, b"status"),
    ("/static/../../inspectd.yaml", 404, b""),
    ("/inspections/1/../../../etc/passwd", 404, b""),
])
def test_bad_input_gets_a_clear_4xx(open_console, path, status, says):
    got, _, body = request(open_console.url + path)
    assert got == status and says in body, (got, body[:300])


def test_a_picture_is_served_only_from_the_archive_folders(open_console, store):
    """A row whose path leads elsewhere (tampered, or an old layout) is never read."""
    db = _db(store)
    first = db_rows(db, "SELECT id, archived_path FROM inspections ORDER BY id")[0]
    connection = sqlite3.connect(db)
    try:
        connection.execute("UPDATE inspections SET archived_path = ? WHERE id = ?", (str(store), first[0]))
        connection.commit()
        assert request(f"{open_console.url}/inspections/{first[0]}/photo.jpg")[0] == 404
    finally:
        connection.execute("UPDATE inspections SET archived_path = ? WHERE id = ?", (first[1], first[0]))
        connection.commit()
        connection.close()
    assert request(f"{open_console.url}/inspections/{first[0]}/photo.jpg")[0] == 200


def test_a_review_needs_the_forms_token_and_never_touches_the_verdict(open_console, store):
    db = _db(store)
    inspection_id, verdict = db_rows(db, "SELECT id, verdict FROM inspections WHERE verdict = 'anomalous'")[0]
    url = f"{open_console.url}/inspections/{inspection_id}/review"
    form = {"label": "good", "reviewer": "ann", "note": "dust, wiped"}
    assert request(url, form)[0] == 403  # no token
    assert request(url, {**form, "csrf": "0" * 64})[0] == 403  # wrong token
    token = _csrf(open_console, inspection_id)
    assert request(url, {**form, "csrf": token}, headers={"Origin": "http://evil.example"})[0] == 403
    assert request(url, {**form, "csrf": token, "label": "maybe"})[0] == 400
    assert request(url, {"label": "good", "csrf": token})[0] == 400  # no reviewer without a login
    status, headers, _ = request(url, {**form, "csrf": token})
    assert status == 303 and headers["location"] == f"/inspections/{inspection_id}"
    assert db_rows(db, "SELECT label, reviewer, note FROM reviews WHERE inspection_id = ?", (inspection_id,)) == \
        [("good", "ann", "dust, wiped")]
    assert db_rows(db, "SELECT verdict FROM inspections WHERE id = ?", (inspection_id,)) == [(verdict,)]
    status, _, body = request(f"{open_console.url}/history?reviewed=yes")
    assert status == 200 and f'href="/inspections/{inspection_id}"'.encode() in body and "≠ model".encode() in body
    status, _, body = request(f"{open_console.url}/stats")
    assert b"agree with the model on 0 of 1" in body
    assert request(f"{open_console.url}/inspections/999999/review", {**form, "csrf": token})[0] == 404
    history = subprocess.run([sys.executable, "-m", "inspectd.cli", "--config", str(store), "history",
                              "--format", "csv"], capture_output=True, text=True, timeout=120)
    line = next(r for r in history.stdout.splitlines() if r.startswith(f"{inspection_id},"))
    assert line.endswith(",good,no"), history.stdout  # review and agreement in the engineers' CLI too


def test_off_loopback_the_console_needs_users_and_checks_them(store, tmp_path):
    refused = subprocess.run([sys.executable, "-m", "inspectd.cli", "--config", str(store), "serve", "--address",
                              "0.0.0.0"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "console.users_file" in refused.stderr
    users = tmp_path / "console-users"
    users.write_text(f"ann:{hash_password('correct horse battery')}\n")
    console = ConsoleProcess(store, {"users_file": str(users)})
    try:
        console.wait_ready()
        assert request(console.url + "/healthz")[0] == 200  # health checks need no login
        status, headers, _ = request(console.url + "/history")
        assert status == 401 and headers["www-authenticate"].startswith("Basic")
        assert request(console.url + "/history", user=("ann", "wrong password"))[0] == 401
        assert request(console.url + "/history", user=("bob", "correct horse battery"))[0] == 401
        assert request(console.url + "/inspections/1/photo.jpg")[0] == 401
        status, _, body = request(console.url + "/history", user=("ann", "correct horse battery"))
        assert status == 200 and b"ann" in body
        # The token is bound to the user: the open console's token (user "local") is refused here.
        db = _db(store)
        inspection_id = db_rows(db, "SELECT id FROM inspections ORDER BY id")[-1][0]
        url = f"{console.url}/inspections/{inspection_id}/review"
        ann = ("ann", "correct horse battery")
        assert request(url, {"label": "defect", "csrf": "f" * 64}, user=ann)[0] == 403
        token = _csrf(console, inspection_id, ann)
        assert request(url, {"label": "defect", "csrf": token, "reviewer": "mallory"}, user=ann)[0] == 303
        assert db_rows(db, "SELECT reviewer FROM reviews WHERE inspection_id = ?", (inspection_id,)) == [("ann",)]
    finally:
        console.stop()
    bad = tmp_path / "bad-users"
    bad.write_text("ann:plaintext\n")
    console = ConsoleProcess(store, {"users_file": str(bad)})
    assert console.proc.wait(timeout=120) == 2 and "line 1" in console.output()
