"""How many CPU threads torch may use for inference.

torch defaults to one intra-op thread per core. When other processes share
the cores (a camera driver, a second line's daemon, a backup), its threads
spin at barriers while their peers are descheduled: a batch of 4 took 9-21 s
instead of 0.4-1 s on a 2-core box (20-70x). One thread per process was not
affected, and on an idle 2-core box 1 and 2 threads were equally fast for
the small models. Hence ``model.threads: 1`` by default; raise it on a
dedicated CPU-only box running a large quantized model.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("inspectd.model")


def limit_cpu_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # only settable before the first parallel work; intra-op threads are what matter
        log.debug("interop threads already fixed at %d", torch.get_num_interop_threads())
