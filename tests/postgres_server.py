"""A throwaway PostgreSQL server on 127.0.0.1 for the store tests.

Uses $INSPECTD_TEST_POSTGRES_URL when set; otherwise starts a private
cluster from Debian's postgresql binaries in a temporary folder (as the
postgres user when running as root, since PostgreSQL refuses root).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


class PostgresUnavailable(Exception):
    pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    def __init__(self) -> None:
        self.url = os.environ.get("INSPECTD_TEST_POSTGRES_URL")
        self.data = None
        self._as_user: list[str] = []
        if self.url:
            return
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise PostgresUnavailable("psycopg is not installed (pip install 'psycopg[binary]')") from exc
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            raise PostgresUnavailable("no PostgreSQL server binaries (apt-get install postgresql)")
        self.bindir = Path(bins[-1]).parent
        root = Path(tempfile.mkdtemp(prefix="inspectd-pg-"))
        self.root = root
        self.data = root / "data"
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                raise PostgresUnavailable("running as root without runuser to drop to the postgres user")
            self._as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(root, "postgres", "postgres")
        self.port = _free_port()
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "inspectd", "--auth=trust", "-E", "UTF8")
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(root / "log"), "-w", "-t", "60",
            "-o", f"-p {self.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start",
        )
        self.url = f"postgresql+psycopg://inspectd@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        done = subprocess.run([*self._as_user, *argv], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise PostgresUnavailable(f"{Path(argv[0]).name} failed: {done.stderr.strip()[-400:]}")

    def fresh_database(self, name: str) -> str:
        """A new empty database on the server, so each test starts clean."""
        import psycopg

        base = self.url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(base, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def stop(self) -> None:
        if self.data is not None:
            subprocess.run([*self._as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"],
                           capture_output=True, timeout=60)
            shutil.rmtree(self.root, ignore_errors=True)
