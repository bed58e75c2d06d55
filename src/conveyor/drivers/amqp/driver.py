"""The RabbitMQ driver: one durable classic queue per conveyor queue, one message per job.

A push publishes a persistent message and returns once the broker confirmed it (publisher
confirms; `push_many` publishes its batch at once and waits for every confirm). `reserve`
takes messages with basic.get on this driver's holding channels (HOLDERS, in parallel),
unacknowledged: a job stays reserved for as long as its channel lives, and a token (this
driver, its connection, the channel, the delivery tag) settles it only there.

Why basic.get and not basic.consume with a prefetch: a consumer is sent messages ahead of
what the worker asks for, and any it never hands out go back to the queue marked
redelivered when the worker stops, where conveyor would count them as rescues; and a second
worker could not take what the first one's buffer holds. basic.get takes exactly what was
asked for. Should the channel or connection die, the broker gives
its jobs to another consumer and marks them redelivered; a settle after that is refused, as a
settle of a lost lease is on every driver. So leases have no clock here (`timed_leases` is
False): renewing is keeping the connection alive, and the broker's `consumer_timeout` (30
minutes by default) bounds how long one job may stay unacknowledged.

`release` and `fail` publish the job's next form first (to the work queue, a delay level or
the failed queue), confirmed, and acknowledge the delivery second: a crash in between runs a
job twice, never loses it. A message that is not a job (published by someone else) is still
reserved, with `unreadable` naming what is wrong, and failed as it came.

What a broker cannot do is declared in `capabilities` and raises Unsupported: looking a job
up by id, listing pending or delayed jobs, unique keys, counts of delayed and succeeded jobs,
job control, schedules. See docs/drivers.md.
"""

from __future__ import annotations

import asyncio
import json
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
    new_record,
    record_body,
    with_error,
)
from conveyor.drivers.base import (
    Capabilities,
    Driver,
    Failure,
    LocalWakeup,
    QueueCounts,
    Release,
    Reservation,
    WorkerCounts,
    WorkerPresence,
)
from conveyor.drivers.record import decode_text, read_job
from conveyor.errors import DriverError
from conveyor.job import JobInfo, JobState, NewJob

__all__ = ["AmqpDriver"]

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
class _Held:
    """A delivery this driver holds: where it came from and what it was."""

    token: str
    channel: AbstractChannel
    tag: int
    info: JobInfo
    record: dict[str, Any] | None
    message: DeliveredMessage


class AmqpDriver(Driver):
    """Jobs as messages in RabbitMQ (see the module docstring).

    `url`: amqp://user:password@host:5672/vhost (amqps:// for TLS); `prefix` starts every queue
    and exchange name (default `conveyor.`, or `?prefix=`); `timeout` (or `?timeout=`, default
    10 s) is every call's deadline and the heartbeat asked of the broker."""

    kind = "amqp"
    capabilities = Capabilities(
        durable=True,
        shared=True,
        timed_leases=False,
        lookup=False,
        exact_counts=False,
        unique=False,
        ordered=False,
        shared_records=False,
    )

    @classmethod
    def from_url(cls, url: str) -> AmqpDriver:
        return cls(url)

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
        self._held: dict[str, _Held] = {}
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

    # -- push --------------------------------------------------------------------------------

    async def push_many(
        self, jobs: Sequence[NewJob], *, connection: object | None = None
    ) -> list[str]:
        self.check_connection(connection)
        if any(job.unique is not None for job in jobs):
            raise self.unsupported(
                "unique jobs (unique=)", "RabbitMQ keeps no index of what is queued"
            )
        now = time.time()
        for queue in {job.queue for job in jobs}:
            await self._queue(queue)
        await self._publish_all(
            [(new_record(job, now), job.delay, job.queue, job.id) for job in jobs], "a push"
        )
        self._pushed.notify()
        return [job.id for job in jobs]

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

    # -- reserve and settle ------------------------------------------------------------------

    async def reserve(
        self, queues: Sequence[str], limit: int, lease: float, worker: str
    ) -> list[JobInfo]:
        self._pushed.forget()
        reserved: list[JobInfo] = []
        for queue in queues:
            if len(reserved) >= limit:
                break
            await self._queue(queue)
            _, holders = await self._channels()
            slots = limit - len(reserved)
            empty = False

            async def take(holder: AbstractChannel, queue: str = queue) -> None:
                nonlocal slots, empty
                while slots > 0 and not empty:
                    slots -= 1  # taken before the call, so channels never take too many
                    message = await holder.basic_get(self.names.work(queue), timeout=self.timeout)
                    if not isinstance(message.delivery, spec.Basic.GetOk):
                        empty = True
                        break
                    reserved.append(self._hold(queue, holder, message, lease, worker))

            outcomes = await asyncio.gather(
                *(take(holder) for holder in holders[: max(1, min(len(holders), slots))]),
                return_exceptions=True,
            )
            errors = [error for error in outcomes if isinstance(error, BaseException)]
            if errors and not reserved:  # jobs taken are handed out whatever else failed
                with self._edge("a reserve"):
                    raise errors[0]
            if errors:
                break
        return reserved

    def _hold(
        self,
        queue: str,
        channel: AbstractChannel,
        message: DeliveredMessage,
        lease: float,
        worker: str,
    ) -> JobInfo:
        delivery = message.delivery
        assert isinstance(delivery, spec.Basic.GetOk)
        tag = delivery.delivery_tag or 0
        now = time.time()
        token = f"{self._id}.{self._generation}.{channel.number}.{tag}"
        record = _parse(message.body)
        raw: dict[str, Any] = dict(record) if record is not None else _foreign(queue, message)
        attempt, rescued = raw.get("attempt"), raw.get("rescued") or 0
        # The stored attempt is what ran before this delivery. A redelivery (its holder died)
        # is a rescue: the attempt it was given then is not counted twice.
        if type(attempt) is int:
            raw["attempt"] = attempt + 1
        if delivery.redelivered and type(rescued) is int:
            raw["rescued"] = rescued + 1
        raw.update(state="reserved", reservation=token, worker=worker, reserved_at=now)
        raw["lease_expires_at"] = now + lease
        info = read_job(raw, now)
        if info.id in self._held:  # the same id twice (a repeated push): keep both settleable
            info = read_job({**raw, "id": f"{info.id}~{tag}"}, now)
        self._held[info.id] = _Held(token, channel, tag, info, record, message)
        return info

    def _take(self, job_id: str, token: str) -> _Held | None:
        """The held delivery if `token` still holds it on a live channel (the fencing check)."""
        held = self._held.get(job_id)
        if held is None or held.token != token:
            return None
        if held.channel.is_closed:
            self._held.pop(job_id, None)
            return None
        return held

    async def _settle(self, held: _Held) -> bool:
        """Acknowledge a held delivery; False when its channel died first (a lost lease)."""
        self._held.pop(held.info.id, None)
        try:
            with self._edge("an ack"):
                async with asyncio.timeout(self.timeout):
                    await held.channel.basic_ack(held.tag)
        except Exception:
            return False
        return True

    async def renew(
        self, reservations: Sequence[Reservation], lease: float, *, alone: bool = False
    ) -> set[str]:
        """A delivery stays held while its channel lives: renewing only checks that it does."""
        if reservations:
            await self._channels()
        return {item.id for item in reservations if self._take(item.id, item.token)}

    async def ack(self, reservations: Sequence[Reservation]) -> set[str]:
        done: set[str] = set()
        for item in reservations:
            held = self._take(item.id, item.token)
            if held is not None and await self._settle(held):
                done.add(item.id)
        return done

    async def release(self, releases: Sequence[Release]) -> set[str]:
        done: set[str] = set()
        for item in releases:
            held = self._take(item.id, item.token)
            if held is None:
                continue
            body: dict[str, Any] | bytes = held.message.body
            if held.record is not None:
                info = held.info
                body = with_error(held.record, item.error)
                body.update(
                    attempt=info.attempt if item.count_attempt else info.attempt - 1,
                    rescued=info.rescued,
                    available_at=time.time() + item.delay,
                )
            await self._publish_all(
                [(body, item.delay, held.info.queue, held.info.id)], "a release"
            )
            if await self._settle(held):
                done.add(item.id)
        if done:
            self._pushed.notify()
        return done

    async def fail(self, failures: Sequence[Failure]) -> set[str]:
        done: set[str] = set()
        for item in failures:
            held = self._take(item.id, item.token)
            if held is None:
                continue
            body: dict[str, Any] | bytes = held.message.body
            if held.record is not None:
                body = with_error(held.record, item.error)
                body.update(
                    state=(JobState.CANCELLED if item.cancelled else JobState.FAILED).value,
                    attempt=held.info.attempt,
                    rescued=held.info.rescued,
                    finished_at=time.time(),
                )
            await self._publish_failed(held.info.queue, body, held.info.id)
            if await self._settle(held):
                done.add(item.id)
        return done

    # -- inspection --------------------------------------------------------------------------

    async def counts(self, queues: Sequence[str]) -> dict[str, QueueCounts]:
        """Pending and failed from the broker (pending: messages not delivered to anyone);
        reserved: what this driver holds; delayed and succeeded are not known."""
        found: dict[str, QueueCounts] = {}
        for queue in queues:
            publisher = await self._queue(queue)
            with self._edge("counting jobs"):
                pending, failed = await declare_queue(publisher, self.names, queue, self.timeout)
            held = sum(
                1
                for item in self._held.values()
                if item.info.queue == queue and not item.channel.is_closed
            )
            found[queue] = QueueCounts(pending=pending, reserved=held, failed=failed)
        return found

    async def list_jobs(
        self, queue: str, state: JobState, limit: int = 100, offset: int = 0
    ) -> list[JobInfo]:
        if state not in (JobState.FAILED, JobState.CANCELLED):
            raise self.unsupported(
                f"listing {state.value} jobs", "RabbitMQ can only count them (queue_info)"
            )
        jobs = [job for job, _ in await self._browse(queue, lambda job: job.state is state)]
        jobs.sort(key=lambda job: job.id)
        return jobs[offset : offset + limit]

    async def get(self, job_id: str) -> JobInfo | None:
        raise self.unsupported("looking a job up by id", "RabbitMQ keeps no index of its messages")

    async def _browse(
        self,
        queue: str,
        wanted: Any,
        act: Any = None,
    ) -> list[tuple[JobInfo, int]]:
        """Read the queue's failed messages on a channel of their own; `act(channel, job,
        message)` may acknowledge some. Closing the channel puts every other one back."""
        await self._queue(queue)
        assert self._connection is not None
        with self._edge("reading failed jobs"):
            channel = await self._connection.channel(publisher_confirms=False)
        found: list[tuple[JobInfo, int]] = []
        try:
            now = time.time()
            for _ in range(BROWSE_LIMIT):
                with self._edge("reading failed jobs"):
                    message = await channel.basic_get(
                        self.names.failed(queue), timeout=self.timeout
                    )
                if not isinstance(message.delivery, spec.Basic.GetOk):
                    break
                record = _parse(message.body)
                raw = dict(record) if record is not None else _foreign(queue, message, "failed")
                job = read_job(raw, now)
                if wanted(job):
                    found.append((job, message.delivery.delivery_tag or 0))
                    if act is not None:
                        await act(channel, job, record, message)
        finally:
            with self._edge("reading failed jobs"):
                async with asyncio.timeout(self.timeout):
                    await channel.close()
        return found

    async def retry_failed(self, queue: str, ids: Sequence[str] | None = None) -> int:
        chosen = None if ids is None else set(ids)

        async def move(
            channel: AbstractChannel, job: JobInfo, record: dict[str, Any] | None, message: Any
        ) -> None:
            body: dict[str, Any] | bytes = message.body
            if record is not None:
                body = dict(record)
                body.update(
                    state="pending", attempt=0, rescued=0, available_at=time.time(),
                    finished_at=None,
                )  # fmt: skip
            await self._publish_all([(body, 0.0, queue, job.id)], "a retry")
            await channel.basic_ack(message.delivery.delivery_tag)

        moved = await self._browse(
            queue,
            lambda job: job.state is JobState.FAILED and (chosen is None or job.id in chosen),
            move,
        )
        if moved:
            self._pushed.notify()
        return len(moved)

    async def _delete(self, queue: str, wanted: Any) -> int:
        async def drop(channel: AbstractChannel, job: JobInfo, record: Any, message: Any) -> None:
            await channel.basic_ack(message.delivery.delivery_tag)

        return len(await self._browse(queue, wanted, drop))

    async def purge(
        self, queue: str, state: JobState = JobState.FAILED, ids: Sequence[str] | None = None
    ) -> int:
        self.check_purgeable(state)
        chosen = None if ids is None else set(ids)
        if state in (JobState.FAILED, JobState.CANCELLED):
            return await self._delete(
                queue, lambda job: job.state is state and (chosen is None or job.id in chosen)
            )
        if state is JobState.PENDING and ids is None:
            publisher = await self._queue(queue)
            with self._edge("purging pending jobs"):
                done = await publisher.queue_purge(self.names.work(queue), timeout=self.timeout)
            return done.message_count or 0
        if state is JobState.SUCCEEDED:
            return 0  # an acknowledged message is gone: none are kept
        raise self.unsupported(f"purging {state.value} jobs by id")

    async def prune(self, queue: str, older_than: float) -> int:
        before = time.time() - older_than
        return await self._delete(
            queue, lambda job: job.finished_at is not None and job.finished_at < before
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


def _parse(body: bytes) -> dict[str, Any] | None:
    """A message body written by this driver, or None for anything else."""
    try:
        record = json.loads(body)
    except ValueError:
        return None
    if type(record) is not dict or not isinstance(record.get("id"), str):
        return None
    return record


def _foreign(queue: str, message: DeliveredMessage, state: str = "pending") -> dict[str, Any]:
    """The raw fields of a message that is not a job: read_job names what is missing."""
    message_id = message.header.properties.message_id
    return {
        "id": message_id if isinstance(message_id, str) else f"foreign-{uuid.uuid4().hex}",
        "queue": queue,
        "name": None,
        "payload": decode_text(message.body),
        "state": state,
        "attempt": 0,
        "max_attempts": 1,
        "priority": 0,
        "created_at": time.time(),
        "available_at": time.time(),
    }
