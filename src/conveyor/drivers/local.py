"""Worker records kept in this process only: the memory driver's, and amqp's (RabbitMQ has no
place to keep them; its `shared_records` capability is False)."""

from __future__ import annotations

import time

from conveyor.drivers.base import Driver, WorkerCounts, WorkerPresence

__all__ = ["LocalWorkerRecords"]


class LocalWorkerRecords(Driver):
    """`record_stats`, `worker_stats`, `beat` and `alive` over two dicts of this process."""

    def __init__(self) -> None:
        self._stats: dict[str, WorkerCounts] = {}
        self._beats: dict[str, WorkerPresence] = {}

    async def record_stats(self, worker: str, counts: WorkerCounts) -> None:
        self._stats[worker] = self._stats.get(worker, WorkerCounts()) + counts

    async def worker_stats(self) -> dict[str, WorkerCounts]:
        return dict(self._stats)

    async def beat(self, identity: str, worker: str, *, stopping: bool = False) -> None:
        if stopping:
            self._beats.pop(identity, None)
            return
        now = time.time()
        started = self._beats[identity].started_at if identity in self._beats else now
        self._beats[identity] = WorkerPresence(identity, worker, started, now)

    async def alive(self, within: float) -> list[WorkerPresence]:
        since = time.time() - within
        found = [presence for presence in self._beats.values() if presence.seen_at >= since]
        return sorted(found, key=lambda presence: presence.started_at)
