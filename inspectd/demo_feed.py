"""``inspectd demo-feed``: drop fresh synthetic images into a watched folder over time.

For trying the daemon without a camera: each image is newly generated (new
seed), so reruns are never duplicates of what the store already holds.
Half are defective. Files are written under a hidden name and renamed in,
as a careful camera would.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

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
