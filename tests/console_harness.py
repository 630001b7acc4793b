"""A store filled by the real daemon and the console as a real ``inspectd serve`` subprocess."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from inspectd.data.synthetic import make_sample
from tests.daemon_harness import DaemonProcess, db_rows, wait_for, write_config

REPO = Path(__file__).resolve().parent.parent


def filled_store(root: Path, bundle: Path, seeds=(0, 1, 2, 3)) -> Path:
    """The shipped model's daemon records a few synthetic parts (anomalous and good); returns its config."""
    config = write_config(root, bundle, cameras=("line1",), alerts={
        "channels": [{"name": "log", "type": "log", "path": "alerts.jsonl"}],
        "rules": [{"name": "anomaly", "channels": ["log"]}]})
    daemon = DaemonProcess(config)
    try:
        daemon.wait_ready()
        for seed in seeds:
            make_sample(seed, 168, anomalous=seed % 2 == 0).image.save(root / "drop-line1" / f"part-{seed}.png")
        wait_for(lambda: len(db_rows(root / "var" / "inspectd.db",
                                     "SELECT id FROM inspections WHERE archived_path IS NOT NULL")) == len(seeds),
                 180, f"{len(seeds)} rows archived")
    finally:
        assert daemon.stop() == 0, daemon.output()
    return config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ConsoleProcess:
    def __init__(self, config: Path, console: dict | None = None, *extra: str) -> None:
        if console is not None:
            settings = yaml.safe_load(config.read_text())
            settings["console"] = console
            config.write_text(yaml.safe_dump(settings))
        self.port = free_port()
        self.log_path = config.parent / f"console-{time.time_ns()}.log"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "inspectd.cli", "--config", str(config), "serve", "--port", str(self.port),
                 *extra], stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        self.url = f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self, timeout: float = 60) -> None:
        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"console exited {self.proc.returncode}: {self.output()[-2000:]}")
            try:
                return request(self.url + "/healthz")[0] == 200
            except OSError:
                return False
        wait_for(up, timeout, "console /healthz")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def request(url: str, data: dict | None = None, user: tuple[str, str] | None = None,
            headers: dict | None = None) -> tuple[int, dict, bytes]:
    """(status, headers, body) without following redirects or raising on 4xx."""
    from urllib.parse import urlencode

    body = urlencode(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers=headers or {})
    if user:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode())

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
