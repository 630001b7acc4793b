"""Run the real daemon as a subprocess, with a systemd notify socket and an HTTP receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from tests.conftest import REPO


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records (key, body, signature_ok); can be told to fail."""

    def __init__(self, secret: bytes | None = None) -> None:
        self.secret = secret
        self.received: list[dict] = []
        self.failing = False
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    if outer.failing:
                        self.send_response(503)
                        self.end_headers()
                        return
                    signature = self.headers.get("X-Inspectd-Signature")
                    expected = None
                    if outer.secret is not None:
                        expected = "sha256=" + hmac.new(outer.secret, body, hashlib.sha256).hexdigest()
                    outer.received.append({
                        "key": self.headers.get("Idempotency-Key"),
                        "payload": json.loads(body),
                        "signature_ok": expected is None or hmac.compare_digest(signature or "", expected),
                        "at": time.time(),
                    })
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def keys(self) -> list[str]:
        with self.lock:
            return [r["key"] for r in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class NotifySocket:
    """Plays systemd's side of sd_notify."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="notify-")) / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            self.messages.extend(data.decode().split("\n"))

    def seen(self, assignment: str) -> bool:
        return assignment in list(self.messages)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=2)
        self.sock.close()


def write_config(root: Path, bundle: Path, cameras=("line1",), alerts: dict | None = None, **sections) -> Path:
    config = {
        "model": {"bundle": str(bundle), "device": "cpu", "batch_size": 4},
        "watch": {
            "folders": [{"path": f"drop-{c}", "camera": c} for c in cameras],
            "stable_s": 0.5,
            "reconcile_interval_s": 2,
        },
        "queue": {"max_wait_ms": 50},
        "store": {"url": "sqlite:///var/inspectd.db"},
        "archive": {"folder": "archive", "failed_folder": "failed"},
        "images": {"max_pixels": 4_000_000},
    }
    if alerts is not None:
        config["alerts"] = alerts
    for key, value in sections.items():
        config.setdefault(key, {}).update(value)
    path = root / "inspectd.yaml"
    path.write_text(yaml.safe_dump(config))
    for camera in cameras:
        (root / f"drop-{camera}").mkdir(exist_ok=True)
    return path


class DaemonProcess:
    def __init__(self, config: Path, watchdog_usec: int | None = None) -> None:
        self.config = config
        self.notify = NotifySocket()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "NOTIFY_SOCKET": str(self.notify.path), "PYTHONUNBUFFERED": "1"}
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        self.log_path = config.parent / f"daemon-{time.time_ns()}.log"
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "inspectd.cli", "--config", str(config), "run"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO, env=env,
        )

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.notify.seen("READY=1"):
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.output()}")
            time.sleep(0.1)
        raise AssertionError(f"daemon not ready after {timeout} s:\n{self.output()}")

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text()

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        code = self.proc.wait(timeout=timeout)
        self.notify.close()
        self.log.close()
        return code

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)
        self.notify.close()
        self.log.close()


def db_rows(db: Path, sql: str, params=()) -> list[tuple]:
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


def wait_for(predicate, timeout: float, message: str, interval: float = 0.2):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = predicate()
        except sqlite3.OperationalError:
            last = None
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s: {message} (last: {last!r})")
