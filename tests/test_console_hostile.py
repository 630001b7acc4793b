"""The console on a hostile plant network: foreign Host names (DNS rebinding), security headers, login guessing,
slow and idle connections, malformed query parameters and forms. A real ``inspectd serve`` over a store the real
daemon filled, except where a unit (the users file, the throttle) is checked on its own."""

from __future__ import annotations

import base64
import http.client
import re
import socket
import statistics
import threading
import time
import uuid
from pathlib import Path

import pytest

from inspectd.console import auth
from inspectd.console.auth import Users, hash_password
from tests.console_harness import ConsoleProcess, filled_store, request
from tests.daemon_harness import db_rows

pytestmark = pytest.mark.slow
SHIPPED = Path(__file__).resolve().parent.parent / "models" / "tiny-cgro"
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; "
                               "object-src 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return filled_store(tmp_path_factory.mktemp("hostile"), SHIPPED)


@pytest.fixture(scope="module")
def open_console(store):
    console = ConsoleProcess(store, {})
    console.wait_ready()
    yield console
    console.stop()


def _db(store):
    return store.parent / "var" / "inspectd.db"


def _anomalous(store) -> int:
    return db_rows(_db(store), "SELECT id FROM inspections WHERE verdict = 'anomalous' ORDER BY id")[0][0]


def _csrf(console, inspection_id: int, user=None) -> str:
    status, _, body = request(f"{console.url}/inspections/{inspection_id}", user=user)
    assert status == 200, body[:300]
    return re.search(rb'name="csrf" value="([0-9a-f]+)"', body).group(1).decode()


def _lower(headers: dict) -> dict:
    return {k.lower(): v for k, v in headers.items()}


def _get(port: int, path: str, source: str = "127.0.0.1", user: tuple[str, str] | None = None,
         timeout: float = 30) -> tuple[int, dict, bytes, float]:
    """GET from a chosen loopback source address (each is its own client to the throttle); status, headers, body,
    seconds."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    headers = {}
    if user:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
    try:
        started = time.perf_counter()
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        return response.status, _lower(dict(response.getheaders())), body, time.perf_counter() - started
    finally:
        connection.close()


# -- 1. Host names: DNS rebinding -----------------------------------------------------------------------------------

def test_a_foreign_host_name_is_refused_on_every_path_and_gets_no_data(open_console, store):
    """A page on rebind.test resolving to 127.0.0.1 sends ``Host: rebind.test``: 400 and nothing of the store."""
    inspection_id = _anomalous(store)
    token = _csrf(open_console, inspection_id)
    for path in ("/", "/history", f"/inspections/{inspection_id}", f"/inspections/{inspection_id}/photo.jpg",
                 f"/inspections/{inspection_id}/heat.png", "/stats", "/alerts", "/healthz", "/static/console.css",
                 "/nowhere"):
        for host in ("evil.example", f"rebind.test:{open_console.port}", f"127.0.0.1.evil.example:{open_console.port}"):
            status, _, body = request(open_console.url + path, headers={"Host": host})
            assert status == 400 and b"inspection" not in body and b"line1" not in body, (path, host, body[:200])
            assert b"console.allowed_hosts" in body and host.split(":")[0].encode() in body, body
    before = db_rows(_db(store), "SELECT count(*) FROM reviews")[0][0]
    status, _, _ = request(f"{open_console.url}/inspections/{inspection_id}/review",
                           {"label": "good", "reviewer": "mallory", "csrf": token},
                           headers={"Host": f"rebind.test:{open_console.port}",
                                    "Origin": f"http://rebind.test:{open_console.port}"})
    assert status == 400 and db_rows(_db(store), "SELECT count(*) FROM reviews")[0][0] == before
    for host in (f"127.0.0.1:{open_console.port}", f"localhost:{open_console.port}", f"LOCALHOST:{open_console.port}",
                 "127.0.0.1", f"[::1]:{open_console.port}"):
        assert request(open_console.url + "/history", headers={"Host": host})[0] == 200, host


def test_allowed_hosts_adds_names_and_a_posting_origin_must_be_one_of_them(store):
    console = ConsoleProcess(store, {"allowed_hosts": ["console.plant.example"]})
    try:
        console.wait_ready()
        host = f"console.plant.example:{console.port}"
        assert request(console.url + "/history", headers={"Host": host})[0] == 200
        assert request(console.url + "/history", headers={"Host": "other.plant.example"})[0] == 400
        inspection_id = _anomalous(store)
        status, _, body = request(f"{console.url}/inspections/{inspection_id}", headers={"Host": host})
        token = re.search(rb'name="csrf" value="([0-9a-f]+)"', body).group(1).decode()
        url = f"{console.url}/inspections/{inspection_id}/review"
        form = {"label": "defect", "reviewer": "ann", "csrf": token}
        # Origin and Host agree but the origin's name is not allowed (a proxy passing Host through, say): refused.
        assert request(url, form, headers={"Host": host, "Origin": "http://evil.example:1"})[0] == 403
        assert request(url, form, headers={"Host": host, "Origin": f"http://{host}"})[0] == 303
    finally:
        console.stop()


# -- 2. Security headers ----------------------------------------------------------------------------------------------

def test_every_answer_carries_the_security_headers(open_console, store):
    inspection_id = _anomalous(store)
    for path, status in ((f"/inspections/{inspection_id}", 200), ("/history", 200), ("/stats", 200),
                         ("/alerts", 200), (f"/inspections/{inspection_id}/photo.jpg", 200),
                         (f"/inspections/{inspection_id}/thumb.jpg", 200),
                         (f"/inspections/{inspection_id}/heat.png", 200),
                         (f"/inspections/{inspection_id}/tokens/0.png", 200), ("/static/console.css", 200),
                         ("/static/inspection.js", 200), ("/healthz", 200), ("/", 307),
                         ("/inspections/999999", 404), ("/inspections/999999/photo.jpg", 404),
                         ("/inspections/1/tokens/9999.png", 404), ("/history?size=0", 400), ("/nowhere", 404)):
        got, headers, _ = request(open_console.url + path)
        headers = _lower(headers)
        assert got == status, (path, got)
        for name, value in SECURITY_HEADERS.items():
            assert headers.get(name) == value, (path, name, headers.get(name))
    got, headers, _ = request(open_console.url + "/history", headers={"Host": "evil.example"})
    assert got == 400 and _lower(headers)["x-frame-options"] == "DENY"
    status, headers, _ = request(f"{open_console.url}/inspections/{inspection_id}/review", {"label": "good"})
    assert status == 403 and _lower(headers)["content-security-policy"] == SECURITY_HEADERS["content-security-policy"]


def test_no_page_has_an_inline_script_or_style_the_policy_would_block(open_console, store):
    """default-src 'self' without 'unsafe-inline': scripts and styles come from /static only."""
    inspection_id = _anomalous(store)
    for path in ("/history", f"/inspections/{inspection_id}", "/stats", "/alerts", "/inspections/999999"):
        _, headers, body = request(open_console.url + path)
        assert "content-security-policy" in _lower(headers), path
        assert not re.search(rb"<script(?![^>]*\bsrc=)", body), path
        assert not re.search(rb"<style|\sstyle=|\son[a-z]+=|javascript:", body), path


# -- 3. Login: equal cost, throttle, no stall ----------------------------------------------------------------------

def _users(**more: str) -> Users:
    path = Path(f"/tmp/inspectd-users-{uuid.uuid4().hex}")
    try:
        lines = (f"{name}:{hash_password(pw)}\n" for name, pw in {"ann": "correct horse", **more}.items())
        path.write_text("".join(lines))
        return Users.load(path)
    finally:
        path.unlink()


def _basic(name: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


def test_an_unknown_name_costs_the_same_scrypt_as_a_wrong_password(monkeypatch):
    users = _users()
    calls = []
    real = auth.hashlib.scrypt

    def counted(password, **kwargs):
        calls.append((kwargs["n"], kwargs["r"], kwargs["p"]))
        return real(password, **kwargs)

    monkeypatch.setattr(auth.hashlib, "scrypt", counted)
    assert users.check(_basic("nobody", "guess")) is None
    assert users.check(_basic("ann", "guess")) is None
    assert calls == [(2**14, 8, 1), (2**14, 8, 1)]  # one scrypt each, with the file's parameters
    assert users.check(_basic("ann", "correct horse")) == "ann" and len(calls) == 3
    assert users.check(_basic("ann", "correct horse")) == "ann" and len(calls) == 3  # a success is remembered


def test_only_successes_are_remembered_and_the_memory_is_bounded(monkeypatch):
    users = _users()
    for i in range(8):
        assert users.check(_basic("ann", f"guess {i}")) is None
        assert users.check(_basic(f"nobody{i}", "guess")) is None
    assert len(users._checked) == 0  # every guessed password used to stay in memory for good
    monkeypatch.setattr(Users, "cache_size", 8)
    cheap = {f"u{i}": auth._Hash(2, 1, 1, b"salt", auth.hashlib.scrypt(b"pw", salt=b"salt", n=2, r=1, p=1, dklen=32))
             for i in range(30)}
    many = Users(cheap)
    for name in cheap:
        assert many.check(_basic(name, "pw")) == name
    assert len(many._checked) == 8


def test_the_throttle_refuses_after_n_failures_and_refills_over_the_window():
    now = [0.0]
    throttle = auth.LoginThrottle(3, 30.0, clock=lambda: now[0])
    assert all(throttle.take("10.0.0.9") for _ in range(3))
    assert not throttle.take("10.0.0.9") and throttle.retry_after("10.0.0.9") == 10
    assert throttle.take("10.0.0.10")  # another address is not affected
    assert throttle.take("2001:db8::1") and throttle.take("2001:db8::2") and throttle.take("2001:db8::3")
    assert throttle.retry_after("2001:db8::ffff") > 0  # one /64 is one client
    now[0] = 10.0
    assert throttle.retry_after("10.0.0.9") == 0 and throttle.take("10.0.0.9") and not throttle.take("10.0.0.9")
    throttle.give_back("10.0.0.9")  # a success does not count
    assert throttle.take("10.0.0.9")


@pytest.fixture(scope="module")
def login_console(store, tmp_path_factory):
    users = tmp_path_factory.mktemp("users") / "console-users"
    users.write_text(f"ann:{hash_password('correct horse battery')}\nbob:{hash_password('staple battery horse')}\n")
    console = ConsoleProcess(store, {"users_file": str(users)})  # login_failures: 10 in login_window_s: 300 s
    console.wait_ready()
    yield console
    console.stop()


def test_a_guessing_address_gets_429_without_a_check_while_others_are_served(login_console):
    port = login_console.port
    ann = ("ann", "correct horse battery")
    assert _get(port, "/history", "127.0.0.2", ann)[0] == 200
    failed = []
    for i in range(10):
        status, _, _, seconds = _get(port, "/history", "127.0.0.3", ("ann", f"guess {i}"))
        assert status == 401
        failed.append(seconds)
    status, headers, _, seconds = _get(port, "/history", "127.0.0.3", ("bob", "guess 5"))
    assert status == 429 and int(headers["retry-after"]) >= 1
    assert seconds < min(failed) / 2, (seconds, failed)  # no scrypt ran
    assert _get(port, "/history", "127.0.0.3", ann)[0] == 429  # not even the right password: no oracle
    assert _get(port, "/healthz", "127.0.0.3")[0] == 200  # health checks need no login
    status, _, body, _ = _get(port, "/history", "127.0.0.2", ann)  # the engineer at another address
    assert status == 200 and b"ann" in body
    assert "too many failed logins" in login_console.output()


def test_guessers_do_not_stall_a_logged_in_engineer(login_console):
    """Four clients guess at once (each guess from a fresh address with tries left): the logged-in engineer's
    pages stay quick, because scrypt runs in worker threads and a remembered login needs none."""
    port = login_console.port
    ann = ("ann", "correct horse battery")
    assert _get(port, "/healthz", "127.0.0.4", ann)[0] == 200
    assert _get(port, "/alerts", "127.0.0.4", ann)[0] == 200
    quiet = [_get(port, "/alerts", "127.0.0.4", ann)[3] for _ in range(5)]
    stop = threading.Event()

    def guess(n: int) -> None:
        i = 0
        while not stop.is_set() and i < 250:  # a new address per guess: each has tries left
            _get(port, "/alerts", f"127.1.{n}.{i + 1}", ("bob", f"guess {i}"))
            i += 1

    guessers = [threading.Thread(target=guess, args=(n,)) for n in range(4)]
    for thread in guessers:
        thread.start()
    try:
        time.sleep(0.3)
        busy = [_get(port, "/alerts", "127.0.0.4", ann)[3] for _ in range(15)]
    finally:
        stop.set()
        for thread in guessers:
            thread.join()
    started = time.perf_counter()
    auth.hashlib.scrypt(b"x", salt=b"0" * 16, n=2**14, r=8, p=1, dklen=32)
    one_check = time.perf_counter() - started
    # Before: each guess held the event loop for its scrypt, and the engineer's page waited for one or more.
    assert statistics.median(busy) < one_check / 2, (one_check, quiet, busy)


# -- 4. Slow and idle connections --------------------------------------------------------------------------------

def _fds(console) -> int:
    return len(list(Path(f"/proc/{console.proc.pid}/fd").iterdir()))


def test_idle_sockets_are_capped_and_closed_and_a_request_is_still_answered(store):
    console = ConsoleProcess(store, {"max_connections": 20, "request_timeout_s": 2})
    sockets: list[socket.socket] = []
    try:
        console.wait_ready()
        time.sleep(0.5)
        base = _fds(console)
        for _ in range(60):  # 3x the cap, never sending a byte
            s = socket.create_connection(("127.0.0.1", console.port))
            sockets.append(s)
        time.sleep(0.3)
        assert _fds(console) <= base + 20, (base, _fds(console))  # the oldest idle ones were closed
        status, _, _, seconds = _get(console.port, "/healthz")
        assert status == 200 and seconds < 2, seconds
        slow = socket.create_connection(("127.0.0.1", console.port))
        slow.sendall(b"GET /history HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        slow.settimeout(0.5)
        closed = False
        while time.monotonic() - started < 8 and not closed:
            try:
                slow.sendall(b"X-Slow: 1\r\n")  # a slowloris: a header line now and then, never the end
                closed = slow.recv(100) == b""
            except socket.timeout:
                continue
            except OSError:
                closed = True
        assert closed and time.monotonic() - started < 5, time.monotonic() - started
        deadline = time.monotonic() + 5
        for s in sockets:  # every idle socket was closed: evicted at once or after request_timeout_s
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                assert s.recv(100) == b""
            except ConnectionResetError:
                pass
        assert _fds(console) <= base + 2
        assert _get(console.port, "/healthz")[0] == 200
    finally:
        for s in sockets:
            s.close()
        console.stop()


# -- 5. Every input error is a 4xx naming the parameter -----------------------------------------------------------

@pytest.mark.parametrize("path, says", [
    ("/history?size=%C2%B2", b"size"),                          # superscript two: str.isdigit, int() refuses: 500
    ("/history?size=%D9%A3", b"size"),                          # Arabic-Indic three
    ("/history?size=10&size=20", b"size"),
    ("/history?before=2026-01-01T00:00~99999999999999999999", b"before"),  # past 64 bits: OverflowError in SQLite
    ("/history?before=2026-01-01T00:00~%C2%B2", b"before"),
    ("/history?before=0001-01-01T00:00%2B14:00~5", b"before"),
    ("/history?since=0001-01-01T00:00%2B14:00", b"since"),      # before year 1 in UTC: OverflowError
    ("/history?until=9999-12-31T23:59-14:00", b"until"),        # after year 9999 in UTC
    ("/history?since=2026-01-01&since=2026-02-01", b"since"),
    ("/history?camera=line1&camera=line2", b"camera"),
    ("/history?camera=line%001", b"camera"),
    ("/stats?days=%C2%B2", b"days"),
    ("/stats?days=%D9%A3", b"days"),
    ("/stats?days=1&days=2", b"days"),
    ("/stats?colour=red", b"colour"),
    ("/alerts?status=pending&status=failed", b"status"),
    ("/alerts?colour=red", b"colour"),
])
def test_bad_input_is_a_400_naming_the_parameter(open_console, path, says):
    status, _, body = request(open_console.url + path)
    assert status == 400 and says in body, (status, body[:300])


def _multipart(fields: list[tuple[str, str, str | None]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value, filename in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        kind = "Content-Type: application/octet-stream\r\n" if filename else ""
        parts.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n{kind}\r\n{value}\r\n")
    return ("".join(parts) + f"--{boundary}--\r\n").encode(), f"multipart/form-data; boundary={boundary}"


def _post_multipart(console, inspection_id: int, fields) -> tuple[int, bytes]:
    body, kind = _multipart(fields)
    connection = http.client.HTTPConnection("127.0.0.1", console.port, timeout=30)
    try:
        connection.request("POST", f"/inspections/{inspection_id}/review", body=body, headers={"Content-Type": kind})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_a_file_is_not_a_review_field(open_console, store):
    inspection_id = db_rows(_db(store), "SELECT id FROM inspections ORDER BY id")[1][0]
    token = _csrf(open_console, inspection_id)
    for field in ("note", "csrf", "reviewer", "label"):
        fields = [("csrf", token, None), ("label", "good", None), ("reviewer", "ann", None), ("note", "n", None)]
        fields = [(n, v, "x.txt" if n == field else None) for n, v, _ in fields]
        status, body = _post_multipart(open_console, inspection_id, fields)
        assert status == 400 and field.encode() in body, (field, status, body[:300])
    assert db_rows(_db(store), "SELECT count(*) FROM reviews WHERE inspection_id = ?", (inspection_id,)) == [(0,)]
    status, _ = _post_multipart(open_console, inspection_id, [("csrf", token, None), ("label", "good", None),
                                                              ("reviewer", "ann", None), ("note", "fine", None)])
    assert status == 303  # a multipart form of text fields is still a form
    token = _csrf(open_console, inspection_id)
    status, _, body = request(f"{open_console.url}/inspections/{inspection_id}/review",
                              [("csrf", token), ("label", "good"), ("label", "defect"), ("reviewer", "ann")])
    assert status == 400 and b"label" in body  # which one did they mean?


@pytest.mark.parametrize("reviewer", ["ann\nINFO review of #1 by admin: good", "ann\rbob", "ann\x1b[2J",
                                      "ann\u202eenna", "ann\x00"])
def test_control_characters_in_a_reviewer_name_are_refused(open_console, store, reviewer):
    inspection_id = db_rows(_db(store), "SELECT id FROM inspections ORDER BY id")[2][0]
    token = _csrf(open_console, inspection_id)
    status, _, body = request(f"{open_console.url}/inspections/{inspection_id}/review",
                              {"label": "good", "reviewer": reviewer, "csrf": token})
    assert status == 400 and b"reviewer" in body, (status, body[:300])
    assert db_rows(_db(store), "SELECT count(*) FROM reviews WHERE inspection_id = ?", (inspection_id,)) == [(0,)]


def test_a_note_keeps_lines_and_tabs_but_no_other_control_and_the_log_escapes_the_name(open_console, store):
    inspection_id = db_rows(_db(store), "SELECT id FROM inspections ORDER BY id")[3][0]
    token = _csrf(open_console, inspection_id)
    status, _, _ = request(f"{open_console.url}/inspections/{inspection_id}/review",
                           {"label": "defect", "reviewer": "o'neil", "csrf": token,
                            "note": "\x1b[31mscratch\r\nsecond line\tedge\x07\u202e"})
    assert status == 303
    assert db_rows(_db(store), "SELECT note FROM reviews WHERE inspection_id = ?", (inspection_id,)) == \
        [("[31mscratch\nsecond line\tedge",)]
    assert f"review of #{inspection_id} by \"o'neil\": defect" in open_console.output()  # written as %r
