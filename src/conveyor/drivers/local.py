"""What a driver keeps in this process only: worker records (the memory driver's, and amqp's:
RabbitMQ has no place to keep them; its `shared_records` capability is False) and the wake-up
that pushes through a driver instance give its own waiting workers (`LocalWakeup`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable

from conveyor.drivers.base import Driver, WorkerCounts, WorkerPresence

__all__ = ["LocalWakeup", "LocalWorkerRecords"]


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


class LocalWakeup:
    """Ends `wait` early on pushes made through this driver instance: the wake-up a driver
    without cross-process notification can still give a worker in the pushing process."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._waits_on: asyncio.AbstractEventLoop | None = None  # the loop _event serves

    def notify(self, queues: Iterable[str] | None = None) -> None:
        """A job was pushed, released or retried (in `queues`, where known: what a subclass
        tells other processes; None for any): wake the waiters."""
        self._event.set()

    def forget(self) -> None:
        """Called as reserve starts: a push from here on wakes the next `wait`."""
        self._event.clear()

    @property
    def notified(self) -> bool:
        """Whether a push was made through this driver since the last `forget`."""
        return self._event.is_set()

    async def wait(self, timeout: float) -> bool:
        """Return True on a notification, False after `timeout` seconds without one."""
        loop = asyncio.get_running_loop()
        if loop is not self._waits_on:
            # An Event serves the loop of its first waiter only: a driver closed and opened
            # again on another loop (a web app's lifespan run again, as in each `with
            # TestClient(app)`) waits on a new one, notified or not as the old one was.
            notified, self._event, self._waits_on = self.notified, asyncio.Event(), loop
            if notified:
                self._event.set()
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
        # that lands just as the push does, and a stopping worker then hangs here.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                return await self._event.wait()
        return False
