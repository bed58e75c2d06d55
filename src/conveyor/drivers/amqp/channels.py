"""The amqp driver's connection, channels and publishing, and what it keeps in this process:
the base its reservation and inspection halves build on (see conveyor.drivers.amqp.driver)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiormq
from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage
from pamqp import commands as spec

from conveyor.drivers.amqp.connection import Edge, Settings, parse_url
from conveyor.drivers.amqp.topology import (
    QUEUE_HEADER,
    Names,
    declare_delays,
    declare_queue,
    delay_key,
    delay_ms,
    record_body,
)
from conveyor.drivers.base import (
    Driver,
    LocalWakeup,
    WorkerCounts,
    WorkerPresence,
)
from conveyor.errors import DriverError
from conveyor.job import JobInfo

__all__ = ["AmqpChannels"]

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
#: Where a driver made without a URL (a bare `amqp`, QUEUE_DRIVER=amqp) finds its broker.
URL_ENV = "CONVEYOR_AMQP_URL"
#: The most messages one browse of a failed queue reads (list, retry, purge, prune).
BROWSE_LIMIT = 100_000
#: Holding channels per driver: a reserve of several jobs runs one basic.get per channel at
#: once (aiormq runs one at a time on a channel), which is what makes a busy worker fast.
HOLDERS = 4
#: Marks in `_declared` for the shared exchanges, beside the conveyor queues declared.
DELIVER = ""
DELAYS = "\x00delays"


@dataclass(slots=True)
class Held:
    """A delivery this driver holds: where it came from and what it was."""

    token: str
    channel: AbstractChannel
    tag: int
    info: JobInfo
    record: dict[str, Any] | None
    message: DeliveredMessage


class AmqpChannels(Driver):
    """One connection: a confirming channel that publishes and declares, and HOLDERS channels
    that hold reserved deliveries."""

    def __init__(
        self, url: str = "", *, prefix: str | None = None, timeout: float | None = None
    ) -> None:
        url = url or os.environ.get(URL_ENV, "") or DEFAULT_URL
        self._url = self.url = url
        self._settings: Settings = parse_url(url, prefix, timeout)
        self.prefix = self._settings.prefix
        self.timeout = self._settings.timeout
        self.max_job_time = self._settings.consumer_timeout
        self.names = Names(self.prefix)
        self._connection: AbstractConnection | None = None
        self._publisher: AbstractChannel | None = None
        self._holders: list[AbstractChannel] = []
        self._id = uuid.uuid4().hex[:12]
        self._generation = 0
        self._held: dict[str, Held] = {}
        self._declared: set[str] = set()  # on this connection
        self._ever_declared: set[str] = set()
        self._lock = asyncio.Lock()
        self._pushed = LocalWakeup()
        self._stats: dict[str, WorkerCounts] = {}
        self._beats: dict[str, WorkerPresence] = {}

    def _location(self) -> str:
        return self._url

    def _edge(self, what: str) -> Edge:
        return Edge(self._settings.location, what)

    # -- connection --------------------------------------------------------------------------

    async def open(self) -> None:
        await self._channels()

    async def _channels(self) -> tuple[AbstractChannel, list[AbstractChannel]]:
        """The publishing (confirming) and holding channels, reconnecting when they died."""
        publisher, holders = self._publisher, self._holders
        if (
            publisher is not None
            and not publisher.is_closed
            and len(holders) == HOLDERS
            and not any(holder.is_closed for holder in holders)
        ):
            return publisher, holders
        async with self._lock:
            with self._edge("a connection"):
                async with asyncio.timeout(self.timeout):
                    await self._connect()
        assert self._publisher is not None
        return self._publisher, self._holders

    async def _connect(self) -> None:
        connection = self._connection
        if connection is None or connection.is_closed:
            self._connection = connection = await aiormq.connect(self._settings.url)
            self._declared.clear()
            self._publisher = None
            self._holders = []
            self._held.clear()
            self._generation += 1
        if self._publisher is None or self._publisher.is_closed:
            self._publisher = await connection.channel(publisher_confirms=True)
        # A delivery held on a channel that closed went back to its queue: a lease lost
        # (`_take` refuses it). The channel is replaced.
        self._holders = [holder for holder in self._holders if not holder.is_closed]
        while len(self._holders) < HOLDERS:
            self._holders.append(await connection.channel(publisher_confirms=False))
        if self._declared == set():
            await self._publisher.exchange_declare(
                self.names.deliver, exchange_type="headers", durable=True, timeout=self.timeout
            )
            self._declared.add(DELIVER)

    async def _queue(self, queue: str) -> AbstractChannel:
        """The publishing channel, once `queue`'s broker queues are declared."""
        publisher, _ = await self._channels()
        if queue not in self._declared:
            with self._edge(f"declaring queue {queue!r}"):
                await declare_queue(publisher, self.names, queue, self.timeout)
            self._declared.add(queue)
            self._ever_declared.add(queue)
        return publisher

    async def migrate(self) -> None:
        await self.open()

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        self._publisher = None
        self._holders = []
        self._held.clear()
        if connection is not None and not connection.is_closed:
            try:
                async with asyncio.timeout(self.timeout):
                    await connection.close()
            except (TimeoutError, OSError, aiormq.exceptions.AMQPError):
                pass

    async def durability(self) -> str:
        """Persistent messages on durable queues, confirmed only once RabbitMQ wrote them to
        disk: a returned push survives a crash of the broker or its machine."""
        return "persistent, confirmed"

    async def _publish_all(
        self, items: Sequence[tuple[dict[str, Any] | bytes, float, str, str]], what: str
    ) -> None:
        """Publish each (record or raw body, delay, queue, id) to its work queue or delay level;
        returns once the broker confirmed every one."""
        publisher = await self._queue(items[0][2]) if items else None
        if publisher is None:
            return
        with self._edge(what):
            async with asyncio.timeout(self.timeout):
                confirms = await asyncio.gather(
                    *(self._publish(publisher, *item) for item in items)
                )
        for confirm in confirms:
            if not isinstance(confirm, spec.Basic.Ack):
                raise DriverError(
                    f"RabbitMQ did not confirm {what} ({type(confirm).__name__}): nothing of"
                    " it counts as stored; try again"
                )

    async def _publish(
        self,
        channel: AbstractChannel,
        body: dict[str, Any] | bytes,
        delay: float,
        queue: str,
        job_id: str,
    ) -> object:
        ms = delay_ms(delay)
        properties = spec.Basic.Properties(
            delivery_mode=2,
            content_type="application/json",
            message_id=job_id,
            headers={QUEUE_HEADER: queue},
        )
        data = record_body(body) if isinstance(body, dict) else body
        if ms:
            if DELAYS not in self._declared:  # the delay levels, declared on first use
                await declare_delays(channel, self.names, self.timeout)
                self._declared.add(DELAYS)
            return await channel.basic_publish(
                data, exchange=self.names.delay(35), routing_key=delay_key(ms),
                properties=properties,
            )  # fmt: skip
        return await channel.basic_publish(
            data, exchange="", routing_key=self.names.work(queue), properties=properties
        )

    async def _publish_failed(self, queue: str, body: dict[str, Any] | bytes, job_id: str) -> None:
        publisher = await self._queue(queue)
        data = record_body(body) if isinstance(body, dict) else body
        properties = spec.Basic.Properties(
            delivery_mode=2, message_id=job_id, headers={QUEUE_HEADER: queue}
        )
        with self._edge("storing a failed job"):
            confirm = await publisher.basic_publish(
                data, exchange="", routing_key=self.names.failed(queue),
                properties=properties, timeout=self.timeout,
            )  # fmt: skip
        if not isinstance(confirm, spec.Basic.Ack):
            raise DriverError(
                f"RabbitMQ did not confirm a failed job ({type(confirm).__name__}): it stays"
                " reserved; try again"
            )

    async def wait(self, queues: Sequence[str], timeout: float) -> None:
        await self._pushed.wait(timeout)

    # -- worker records: kept in this process only (`shared_records` is False) ---------------

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

    def declared(self) -> set[str]:
        """The conveyor queues this driver declared (for tests that clean up after them)."""
        return set(self._ever_declared)
