"""Boxes sharing one PostgreSQL store may start at the same moment: their migrations must not collide."""

from __future__ import annotations

import threading

from inspectd.store.database import head_revision, migrate, open_engine


def test_boxes_starting_together_on_an_empty_postgresql_store_both_migrate(postgres_server):
    for attempt in range(3):
        url = postgres_server.fresh_database(f"concurrent_{attempt}")
        engines = [open_engine(url) for _ in range(4)]
        barrier = threading.Barrier(len(engines))
        outcomes: list[object] = [None] * len(engines)

        def start(index: int) -> None:
            barrier.wait()
            try:
                outcomes[index] = migrate(engines[index])
            except Exception as exc:  # recorded: the assertion names it
                outcomes[index] = exc

        threads = [threading.Thread(target=start, args=(i,)) for i in range(len(engines))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        for engine in engines:
            engine.dispose()
        assert outcomes == [head_revision()] * len(engines), outcomes
