"""``inspectd demo-feed``: drop fresh synthetic images into a watched folder over time.

For trying the daemon without a camera: each image is newly generated (new
seed), so reruns are never duplicates of what the store already holds.
Half are defective. Files are written under a hidden name and renamed in,
as a careful camera would.

With ``--wait-ready`` (what ``make run`` uses) the first file waits until the
daemon of the same config is ready (its ready file, ``daemon/ready_file``):
loading the model takes seconds warm and a minute or more on a first start,
and files dropped before that would be found in the folder at start, not
seen arriving.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from inspectd.daemon.ready_file import ready_file_path, wait_ready
from inspectd.data.synthetic import make_sample

log = logging.getLogger("inspectd.demo")


def feed(folder: Path, count: int, interval_s: float, size: int = 168, start_delay_s: float = 0.0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    time.sleep(start_delay_s)
    base = time.time_ns() // 1000 % 1_000_000_000
    written = []
    for i in range(count):
        seed = base + i
        sample = make_sample(seed, size, anomalous=(i % 2 == 0))
        name = f"demo-{seed}-{sample.defect or 'good'}.png"
        temp = folder / f".{name}.part"
        sample.image.save(temp, format="PNG")
        os.rename(temp, folder / name)
        written.append(folder / name)
        log.info("dropped %s (%s)", name, sample.description())
        if i + 1 < count:
            time.sleep(interval_s)
    return written


def wait_for_daemon(settings, timeout_s: float) -> dict:
    """Block until the daemon of ``settings`` is ready (``DaemonNotReady`` after ``timeout_s``); its ready file."""
    path = ready_file_path(settings)
    log.info("waiting for the daemon to be ready (its ready file %s; up to %g s)", path, timeout_s)
    started = time.monotonic()
    info = wait_ready(path, timeout_s)
    log.info("daemon ready (pid %s, bundle %s on %s) after %.1f s of waiting: dropping the first file",
             info.get("pid"), info.get("bundle"), info.get("device"), time.monotonic() - started)
    return info
