"""What the daemon benchmarks share: the synthetic files they feed, the real daemon as a subprocess, and files
dropped into its folder at a steady rate (each one's close time kept)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "models" / "tiny-cgro"


def png_payloads(count: int, offset: int, size: int = 168) -> list[bytes]:
    """PNG bytes of synthetic parts with seeds offset.. (a different offset per use: no duplicate hashes)."""
    from inspectd.data.synthetic import make_sample

    out = []
    for i in range(count):
        buffer = io.BytesIO()
        make_sample(offset + i, size).image.save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def start_daemon(root: Path, model: dict, **sections) -> subprocess.Popen:
    """``inspectd run`` on a config in ``root`` (drop folder ``drop``, store under ``var``), once it is ready."""
    config = {
        "model": {"bundle": str(BUNDLE), "device": "cpu", **model},
        "watch": {"folders": [{"path": "drop", "camera": "bench"}], "reconcile_interval_s": 3600},
        "store": {"url": "sqlite:///var/inspectd.db"},
        "archive": {"folder": "archive", "failed_folder": "failed"},
        **sections,
    }
    (root / "inspectd.yaml").write_text(yaml.safe_dump(config))
    (root / "drop").mkdir()
    log = open(root / "daemon.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "inspectd.cli", "--config", str(root / "inspectd.yaml"), "run"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + 120
    while "inspectd ready" not in (root / "daemon.log").read_text():
        if time.time() > deadline or proc.poll() is not None:
            raise RuntimeError((root / "daemon.log").read_text())
        time.sleep(0.1)
    return proc


def drop_at_rate(folder: Path, payloads: list[bytes], rate_hz: float) -> dict[str, float]:
    """Write each payload as its own file, ``rate_hz`` a second; returns each name's close time."""
    closed = {}
    for i, data in enumerate(payloads):
        name = f"b{i:05d}.png"
        with open(folder / name, "wb") as handle:
            handle.write(data)
        closed[name] = time.time()
        time.sleep(1.0 / rate_hz)
    return closed


@dataclass(frozen=True)
class ThreadClock:
    """One thread's CPU seconds and the times it blocked (voluntary context switches), from Linux's /proc."""

    cpu_s: float
    blocked: int

    @classmethod
    def read(cls, pid: int, tid: int) -> "ThreadClock":
        fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        blocked = next(int(line.split(":")[1]) for line in Path(f"/proc/{pid}/task/{tid}/status").read_text()
                       .splitlines() if line.startswith("voluntary_ctxt_switches"))
        return cls((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), blocked)

    @staticmethod
    def threads(pid: int) -> dict[tuple[int, int], "ThreadClock"]:
        """Every thread of the process and of its children (the daemon's model process), by (pid, tid)."""
        pids = [pid] + [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        clocks = {}
        for process in pids:
            for tid in os.listdir(f"/proc/{process}/task"):
                try:
                    clocks[(process, int(tid))] = ThreadClock.read(process, int(tid))
                except (FileNotFoundError, ProcessLookupError):  # a thread that ended meanwhile
                    pass
        return clocks
