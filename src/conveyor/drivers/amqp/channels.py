"""The amqp driver's connection, channels and publishing, and what it keeps in this process:
the base its reservation and inspection halves build on (see conveyor.drivers.amqp.driver)."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import os
import re
import uuid
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass
from typing import Any

import aiormq
from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage
from pamqp import commands as spec

from conveyor.drivers import KIND_URL_ENV
from conveyor.drivers.amqp.connection import (
    ROOM,
    Edge,
    Settings,
    blocked_by,
    is_blocked,
    parse_url,
)
from conveyor.drivers.amqp.intake import Delivery, SplittingReader, SplittingTransport, delivery_of
from conveyor.drivers.amqp.pipeline import closing
from conveyor.drivers.amqp.topology import (
    Names,
    amqp_priority,
    declare_delays,
    declare_queues,
    delay_key,
    delay_ms,
    record_body,
)
from conveyor.drivers.amqp.wire import Outgoing, ack_all, publish_all
from conveyor.drivers.local import LocalWakeup, LocalWorkerRecords
from conveyor.errors import BackendUnavailableError, DriverError
from conveyor.job import JobInfo

__all__ = ["AmqpChannels"]

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
#: Where a driver made without a URL (a bare `amqp`, QUEUE_DRIVER=amqp) finds its broker.
URL_ENV = KIND_URL_ENV["amqp"]
#: The most messages one browse of a failed queue reads (list, retry, purge, prune).
BROWSE_LIMIT = 100_000
#: How RabbitMQ says why it closed a channel on a message past its max_message_size.
_TOO_LARGE = re.compile(r"message size (\d+) is larger than configured max size (\d+)")

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
    message: Delivery


class AmqpChannels(LocalWorkerRecords):
    """One connection: a confirming channel that publishes and declares, and an intake
    channel whose consumers receive the work queues' messages (see AmqpConsumers._consume_all)."""

    def __init__(
        self, url: str = "", *, prefix: str | None = None, timeout: float | None = None
    ) -> None:
        super().__init__()
        url = url or os.environ.get(URL_ENV, "") or DEFAULT_URL
        self._url = self.url = url
        self._settings: Settings = parse_url(url, prefix, timeout)
        self.prefix = self._settings.prefix
        self.timeout = self._settings.timeout
        self.max_job_time = self._settings.consumer_timeout
        self.names = Names(self.prefix, self._settings.exchange)
        self._connection: AbstractConnection | None = None
        self._publisher: AbstractChannel | None = None
        self._intake: AbstractChannel | None = None
        #: The connection's reader, which takes the intake channel's deliveries off the
        #: socket (see intake.py).
        self._reader: SplittingReader | None = None
        #: Per conveyor queue, the prefetch its consumers on the intake channel add up to.
        self._prefetch: dict[str, int] = {}
        #: The intake channel's consumers: their tags (this driver's choice) and queues; how
        #: many were ever made (a tag is never used twice, though consumers are cancelled).
        self._consumers: dict[str, str] = {}
        self._consumers_made = 0
        #: The queues each worker reserves (by the name given to reserve), until it stops.
        self._reserving: dict[str, set[str]] = {}
        #: Per conveyor queue, deliveries not handed out yet: (-priority, arrival, delivery).
        self._ready: dict[str, list[tuple[int, int, Delivery]]] = {}
        self._arrivals = 0
        #: Delivery tags of the intake channel not acknowledged yet (held or ready).
        self._unacked: set[int] = set()
        self._id = uuid.uuid4().hex[:12]
        self._generation = 0
        self._held: dict[str, Held] = {}
        #: The publishing channel that consumes this driver's alone queue (see
        #: AmqpDriver._run_alone), and the copies awaited there, by job id.
        self._alone_on: AbstractChannel | None = None
        self._alone_waiting: dict[str, asyncio.Future[DeliveredMessage]] = {}
        self._declared: set[str] = set()  # on this connection
        self._ever_declared: set[str] = set()
        self._lock = asyncio.Lock()
        self._lock_loop: asyncio.AbstractEventLoop | None = None  # the loop _lock serves
        self._pushed = LocalWakeup()
        #: Queues pushed to here since a reserve began; the last wait ran out unwoken (reserve).
        self._sent: set[str] = set()
        self._quiet = False

    def _location(self) -> str:
        return self._url

    def _edge(self, what: str) -> Edge:
        return Edge(self._settings.location, what, self._connection)

    # -- connection --------------------------------------------------------------------------

    async def open(self) -> None:
        await self._channels()

    async def _channels(self, what: str = "this call") -> tuple[AbstractChannel, AbstractChannel]:
        """The publishing (confirming) and intake channels, reconnecting when they died;
        once RabbitMQ no longer blocks the connection (`_unblocked`)."""
        publisher, intake = self._publisher, self._intake
        if (
            publisher is not None
            and not closing(publisher)
            and intake is not None
            and not closing(intake)
        ):
            if is_blocked(self._connection):
                await self._unblocked(what)
            return publisher, intake
        async with self._connecting():
            with self._edge("a connection"):
                async with asyncio.timeout(self.timeout):
                    await self._connect()
        assert self._publisher is not None and self._intake is not None
        return self._publisher, self._intake

    def _connecting(self) -> asyncio.Lock:
        """The lock that serializes connecting, made anew on a new event loop: an asyncio lock
        that was ever waited for belongs to its loop, and a driver closed on one loop may be
        used on another (a web app's lifespan run again, the blocking facade's loop)."""
        loop = asyncio.get_running_loop()
        if self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def _connect(self) -> None:
        connection = self._connection
        if connection is None or connection.is_closed:
            transport = SplittingTransport()
            self._connection = connection = await aiormq.connect(
                self._settings.url, transport_factory=transport
            )
            self._reader = transport.reader
            self._declared.clear()
            self._publisher = self._intake = None
            self._held.clear()
            self._generation += 1
        if self._publisher is None or closing(self._publisher):
            self._publisher = await connection.channel(publisher_confirms=True)
        if self._intake is None or closing(self._intake):
            # A delivery held on a channel that closed went back to its queue: a lease lost
            # (`_claim` refuses it). Its consumers and undelivered messages went with it.
            self._prefetch.clear()
            self._consumers.clear()
            self._ready.clear()
            self._unacked.clear()
            self._intake = intake = await connection.channel(publisher_confirms=False)
            intake.on_consumer_cancel_callbacks.add(self._cancelled)
            assert self._reader is not None
            self._reader.split(intake.number, self._receiver(intake), self._passed(intake))
        if self._declared == set():
            await self._publisher.exchange_declare(
                self.names.deliver, exchange_type="headers", durable=True, timeout=self.timeout
            )
            self._declared.add(DELIVER)

    async def _queue(self, queue: str) -> AbstractChannel:
        """The publishing channel, once `queue`'s broker queues are declared."""
        return await self._queues([queue])

    async def _queues(self, queues: Iterable[str], what: str = "this call") -> AbstractChannel:
        """The publishing channel, once the broker queues of every one of `queues` are
        declared: those not declared on this connection yet, all in one round trip."""
        publisher, _ = await self._channels(what)
        new = [queue for queue in dict.fromkeys(queues) if queue not in self._declared]
        if new:
            more = f" and {len(new) - 1} more" if len(new) > 1 else ""
            with self._edge(f"declaring queue {new[0]!r}{more}"):
                await declare_queues(publisher, self.names, new, self.timeout)
            self._declared.update(new)
            self._ever_declared.update(new)
        return publisher

    async def migrate(self) -> None:
        await self.open()

    async def close(self) -> None:
        """Close the connection: what it held goes back to its queues (see
        AmqpDriver.close, which gives back what was never handed out first)."""
        connection, self._connection = self._connection, None
        self._publisher = self._intake = None
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

    # -- intake: what the consumers were sent -----------------------------------------------

    @contextlib.contextmanager
    def _declared_anew_if_missing(self, *queues: str) -> Iterator[None]:
        """Let the next call declare `queues` anew when the broker says it has no such queue
        (one of them, when several went together): deleted behind this driver (before its
        consumer was made: no cancel said so), it was refused at every reserve, or every
        read of its failed jobs, for ever."""
        try:
            yield
        except aiormq.exceptions.ChannelNotFoundEntity:
            self._declared.difference_update(queues)
            raise

    def _cancelled(self, cancel: spec.Basic.Cancel) -> None:
        """The broker cancelled a consumer (its queue was deleted): consume the queue again,
        declared anew, at the next reserve. Deliveries it sent stay held or ready."""
        queue = self._consumers.pop(cancel.consumer_tag or "", None)
        if queue is not None:
            self._prefetch.pop(queue, None)
            self._declared.discard(queue)

    def _receiver(self, channel: AbstractChannel) -> Callable[[Sequence[Delivery]], None]:
        """What takes the intake channel's deliveries in, as their bytes arrive: each waits
        in its queue's `_ready` heap, highest priority first, for a reserve."""
        ready, unacked, consumers = self._ready, self._unacked, self._consumers

        def receive(deliveries: Sequence[Delivery]) -> None:
            if channel is not self._intake:
                return  # a closed channel's delivery: the broker requeued it
            arrivals = self._arrivals
            for delivery in deliveries:
                queue = consumers.get(delivery.consumer_tag)
                if queue is None:
                    continue  # a cancelled consumer's: the channel's close gives it back
                unacked.add(delivery.tag)
                arrivals += 1
                heap = ready.get(queue)
                if heap is None:
                    heap = ready[queue] = []
                heapq.heappush(heap, (-delivery.priority, arrivals, delivery))
            self._arrivals = arrivals
            self._pushed.notify()

        return receive

    def _passed(self, channel: AbstractChannel) -> Callable[[Sequence[int]], None]:
        """What takes in the tags of deliveries the reader passed on whole, as their bytes
        arrive: unacknowledged from then on, though they reach `_fallback` only later
        (aiormq's consumer task). Else an ack of the deliveries after one, merged into a
        `multiple` ack (wire.merged_acks), took it too, before it ran, and its own ack then
        made the broker close the intake channel ("unknown delivery tag")."""

        def passed(tags: Sequence[int]) -> None:
            if channel is self._intake:
                self._unacked.update(tags)

        return passed

    def _fallback(
        self, channel: AbstractChannel
    ) -> Callable[[DeliveredMessage], Coroutine[Any, Any, None]]:
        """The consumer callback aiormq calls for a delivery intake.py passed on whole."""
        receive = self._receiver(channel)

        async def fallback(message: DeliveredMessage) -> None:
            receive([delivery_of(message)])

        return fallback

    def _ready_count(self, queue: str) -> int:
        return len(self._ready.get(queue, ()))

    async def _drop_ready(self, queue: str) -> int:
        """Acknowledge, so drop, the deliveries of `queue` this driver was sent but never
        handed out (a purge of pending jobs: the broker's purge leaves unacknowledged
        deliveries alone); how many."""
        heap = self._ready.pop(queue, [])
        intake = self._intake
        if not heap or intake is None or closing(intake):
            return 0  # a closed channel's deliveries went back to the queue
        tags = [entry[2].tag for entry in heap]
        with self._edge("purging pending jobs"):
            await ack_all(intake, tags, self._unacked)
        self._unacked.difference_update(tags)
        return len(tags)

    async def _ack(self, helds: Sequence[Held]) -> set[str]:
        """Acknowledge held deliveries in one write per channel; the ids whose channel still
        lived (a delivery of a channel that died went back to its queue: a lost lease). A
        job running alone is held on the publishing channel (see AmqpDriver._run_alone)."""
        for held in helds:
            self._held.pop(held.info.id, None)
        done: set[str] = set()
        for channel in (self._intake, self._publisher):
            live = [held for held in helds if held.channel is channel]
            if channel is None or closing(channel) or not live:
                continue
            tags = [held.tag for held in live]
            unacked = self._unacked if channel is self._intake else ()
            try:
                with self._edge("an ack"):
                    await ack_all(channel, tags, unacked)
            except DriverError:
                continue
            if channel is self._intake:
                self._unacked.difference_update(tags)
            done.update(held.info.id for held in live)
        return done

    # -- publishing --------------------------------------------------------------------------

    def _outgoing(
        self,
        body: dict[str, Any] | bytes,
        delay: float,
        queue: str,
        like: Delivery | None = None,
        *,
        failed: bool = False,
    ) -> Outgoing:
        """A job's message, to the work queue, the delay levels (after `delay` s) or the
        failed queue: a record written by this driver, or the raw body of `like` (a message
        that is not a job), which keeps its id and priority."""
        if isinstance(body, dict):
            data, job_id = record_body(body), body.get("id")
            priority = body.get("priority")
            priority = amqp_priority(priority) if type(priority) is int else 0
        else:
            data, job_id, priority = body, None, 0
            if like is not None:
                job_id, priority = like.message_id, like.priority
        message_id = job_id if isinstance(job_id, str) else None
        if failed:
            return Outgoing(data, "", self.names.failed(queue), None, priority, message_id)
        ms = delay_ms(delay)
        if ms:
            route = self.names.work(queue)
            return Outgoing(data, self.names.delay(35), delay_key(ms), route, priority, message_id)
        return Outgoing(data, "", self.names.work(queue), None, priority, message_id)

    async def _publish_all(
        self, messages: Iterable[Outgoing], what: str, *, delayed: bool = False
    ) -> None:
        """Publish these messages (`delayed`: some may go to the delay levels), a few large
        writes for all; returns once the broker confirmed every one. `messages` may be a
        generator: each slice is built as the one before it goes out (see wire.publish_all)."""
        if isinstance(messages, Sized) and not messages:
            return
        publisher, _ = await self._channels(what)
        if delayed and DELAYS not in self._declared:
            with self._edge("declaring the delay levels"):
                await declare_delays(publisher, self.names, self.timeout)
            self._declared.add(DELAYS)
        with self._edge(what):
            confirms = await publish_all(publisher, messages, self.timeout)
        refused = confirms.refused + confirms.missing + confirms.returned
        if not refused:
            return
        sent = refused + confirms.acked
        if confirms.returned:
            self._declared.clear()  # deleted behind this driver: the next call declares anew
            raise BackendUnavailableError(
                f"RabbitMQ at {self._settings.location.shown!r} had no queue for"
                f" {confirms.returned} of {sent} messages of {what} (deleted since this driver"
                " declared it?): nothing of it counts as stored; try again, which declares the"
                " queues anew"
            )
        too_large = _TOO_LARGE.search(str(confirms.closed_by or ""))
        if confirms.missing and too_large:
            size, most = too_large.groups()
            stored = f"{confirms.acked} of its {sent} messages" if confirms.acked else "none"
            raise DriverError(
                f"RabbitMQ at {self._settings.location.shown!r} refused {what}: a message of"
                f" {size} bytes is larger than its max_message_size ({most} bytes), and trying"
                " again cannot help: push a smaller payload (keep large data elsewhere and push"
                " a reference to it), or raise max_message_size in rabbitmq.conf (stored before"
                f" the refusal: {stored})"
            )
        if confirms.missing and is_blocked(self._connection):
            # Raised as the broker read this publish: it reads nothing more of the connection
            # (the rest of the message, acks, calls) until the alarm clears, and stores it then.
            raise BackendUnavailableError(
                f"{self._alarm(self._connection)} {what.capitalize()} was sent as the alarm"
                f" began and not confirmed within {self.timeout:g} s ({refused} of {sent}"
                " messages): the broker stores it once the alarm clears, if this connection"
                " stays open until then, so pushing it again may store it twice. Give the"
                f" broker room ({ROOM})"
            )
        if confirms.missing:
            raise BackendUnavailableError(
                f"RabbitMQ at {self._settings.location.shown!r} did not confirm {what} in"
                f" time or closed the channel ({refused} of {sent} messages"
                " unconfirmed): nothing of it counts as stored; try again"
            )
        raise DriverError(
            f"RabbitMQ refused {what} (basic.nack for {refused} of {sent} messages):"
            " nothing of it counts as stored; try again"
        )

    async def _unblocked(self, what: str) -> None:
        """Wait, up to the deadline, while RabbitMQ blocks this connection's publishes (one of
        its resource alarms is raised: connection.blocked). It reads nothing more of the
        connection until the alarm clears, so nothing is written meanwhile: a message would
        be stored then, after its push had failed (a push tried again stored it twice), and a
        call would go unanswered, its channel closed, and the frames written after that close
        made the broker close the connection once it read them, giving back every job held."""
        connection = self._connection
        assert connection is not None
        try:
            async with asyncio.timeout(self.timeout):
                await connection.ready()
        except TimeoutError:
            if not is_blocked(connection):
                return  # unblocked as the deadline struck
            raise BackendUnavailableError(
                f"{self._alarm(connection)} Nothing of {what} was sent in the"
                f" {self.timeout:g} s waited: try again once the broker has room ({ROOM})"
            ) from None

    def _alarm(self, connection: object) -> str:
        """What a RabbitMQ blocking `connection`'s publishes is doing, and why."""
        reason = blocked_by(connection) or "a resource alarm"
        return (
            f"RabbitMQ at {self._settings.location.shown!r} is blocking publishers"
            f" ({reason}): its memory use is above its vm_memory_high_watermark or its free"
            " disk below its disk_free_limit, and it takes no message until that alarm clears."
        )

    async def wait(self, queues: Sequence[str], timeout: float) -> None:
        self._quiet = not await self._pushed.wait(timeout)

    def _sent_to(self, queues: Iterable[str]) -> None:
        """Jobs were published to `queues` here: wake `wait`; the next reserve catches up."""
        self._sent.update(queues)
        self._pushed.notify()

    def declared(self) -> set[str]:
        """The conveyor queues this driver declared (for tests that clean up after them)."""
        return set(self._ever_declared)

    def alone_queue(self) -> str:
        """The name of this driver's own alone queue (see AmqpDriver._run_alone), which the
        broker deletes a minute after the driver's connection closed (for tests that clean
        up after them at once)."""
        return self.names.alone(self._id)
