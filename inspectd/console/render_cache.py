"""The console's pictures: rendered in a small thread pool, off the event loop, and kept in a byte-bounded LRU.

Why: the console serves every request from one asyncio event loop. A picture rendered on it (a photo decoded,
a map coloured, a PNG encoded) held every other page of every user until it was done: seconds for a camera
photo, and anyone who can drop a file in a camera folder could do it on purpose. Here

* a render runs in a worker thread (PIL and numpy release the GIL while they decode, resize and encode), at
  most ``workers`` at once, so that pages keep answering and the memory of renders in flight stays bounded;
* its bytes are kept under their key (inspection, kind, token, size) in a least-recently-used cache of at most
  ``budget_bytes``: hovering the words of the reasoning back and forth costs nothing the second time;
* concurrent requests for one key wait for the one render in flight instead of starting their own.

A failed render (a missing photo, a changed one) is not kept: the next request tries again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

import anyio
import anyio.to_thread

DEFAULT_BUDGET_BYTES = 64 * 1024 * 1024
DEFAULT_WORKERS = 1  # see RenderCache's docstring


class _Flight:
    """One render in progress; waiters for its key take its bytes."""

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.body: bytes | None = None


class RenderCache:
    """Use from one event loop (the console's): the bookkeeping runs on the loop, only ``render`` in threads.

    One worker by default: the console shares its machine with the daemon's model, and on a 2-core box two
    workers rendering 36 MP photos made /history's median 3.6x its idle one (8 vs 2 ms) for renders done in
    half the time; one kept it at 0.7-1.3x (``benchmarks/console_render.py``). A render is a second or two.
    """

    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES, workers: int = DEFAULT_WORKERS) -> None:
        self.budget_bytes = budget_bytes
        self.limiter = anyio.CapacityLimiter(workers)  # its own: Starlette's other thread work keeps the default
        self._entries: OrderedDict[Hashable, bytes] = OrderedDict()
        self._flights: dict[Hashable, _Flight] = {}
        self.bytes = 0
        self.hits = 0  # served from the cache or from another request's render
        self.renders = 0  # render calls started

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    async def get(self, key: Hashable, render: Callable[[], bytes]) -> bytes:
        """The bytes under ``key``; ``render()`` runs in a worker thread when no one has them or is making them.
        Its exception reaches this caller (and nobody else: waiters for a failed render try again)."""
        while True:
            body = self._entries.get(key)
            if body is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return body
            flight = self._flights.get(key)
            if flight is None:
                break
            await flight.done.wait()
            if flight.body is not None:
                self.hits += 1
                return flight.body
        flight = self._flights[key] = _Flight()
        try:
            self.renders += 1
            body = await anyio.to_thread.run_sync(render, limiter=self.limiter)
            flight.body = body
            self._keep(key, body)
            return body
        finally:
            del self._flights[key]
            flight.done.set()

    def _keep(self, key: Hashable, body: bytes) -> None:
        if len(body) > self.budget_bytes:
            return
        self._entries[key] = body
        self.bytes += len(body)
        while self.bytes > self.budget_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= len(evicted)
