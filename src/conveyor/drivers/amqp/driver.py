"""The RabbitMQ driver: one durable classic queue per conveyor queue, one message per job.

A push publishes a persistent message and returns once the broker confirmed it (publisher
confirms; `push_many` writes its batch at once and waits for every confirm). `reserve` hands
out what the intake channel's consumers were sent, unacknowledged: a job stays reserved for as
long as its channel lives, and a token (this driver, its connection, the channel, the delivery
tag) settles it only there.

The consumers' prefetch is what the driver holds of a queue plus the free slots a reserve asks
for, and only rises (see AmqpConsumers._consume_all in consumers.py), so little waits here that
another worker could have run. What was sent but never handed out would come back marked
redelivered if the channel closed, which conveyor counts as a rescue: at `close`, and once no
worker of this driver reserves a queue (`stop_reserving`), the driver cancels its consumers of
the queue and gives those back as fresh copies instead (`_stop_consuming`): a process whose
worker stopped keeps none of a queue's jobs from the workers that run on. Should the channel or
connection die, the broker gives its jobs to another consumer and marks them redelivered; a
settle after that is refused, as a settle of a lost lease is on every driver. So leases have no
clock here (`timed_leases` is False): renewing is keeping the connection alive, and the
broker's `consumer_timeout` (30 minutes by default) bounds how long one job may stay
unacknowledged.

A rescued job the worker runs alone (`renew(..., alone=True)`) is held as a copy marked
`alone` in this driver's own queue, which dead-letters it back to the work queue, still marked,
should the connection close before it is settled; the next reserve of a marked message
charges the death as an attempt (`_run_alone`, `_charge`). A death among other jobs, or while
a rescued job waits its turn, comes back unmarked and costs nothing (see JobInfo).

`release` and `fail` publish the job's next form first (to the work queue, a delay level or
the failed queue), confirmed, and acknowledge the delivery second: a crash in between runs a
job twice, never loses it. A message that is not a job (published by someone else) is still
reserved, with `unreadable` naming what is wrong, and failed as it came.

Priorities: the work queues have x-max-priority 10 (see topology.amqp_priority). What a
broker cannot do is declared in `capabilities` and raises Unsupported: looking a job up by id,
listing pending or delayed jobs, unique keys, counts of delayed and succeeded jobs, job
control, schedules. See docs/drivers.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp import commands as spec

from conveyor.drivers.amqp.channels import Held
from conveyor.drivers.amqp.consumers import AmqpConsumers
from conveyor.drivers.amqp.inspection import foreign_record, parse_record
from conveyor.drivers.amqp.intake import Delivery, delivery_of
from conveyor.drivers.amqp.pipeline import closing
from conveyor.drivers.amqp.topology import (
    MAX_DELAY_MS,
    amqp_priority,
    declare_alone,
    new_record,
    record_body,
    with_error,
)
from conveyor.drivers.amqp.wire import Outgoing, ack_all
from conveyor.drivers.base import Capabilities, Failure, Release, Reservation
from conveyor.drivers.record import read_job
from conveyor.errors import DriverError
from conveyor.job import JobInfo, JobState, NewJob

__all__ = ["AmqpDriver"]


class AmqpDriver(AmqpConsumers):
    """Jobs as messages in RabbitMQ (see the module docstring).

    `url`: amqp://user:password@host:5672/vhost (amqps:// for TLS); `prefix` starts every queue
    and exchange name (default `conveyor.`, or `?prefix=`); `?exchange=` names the delivery
    exchange; `timeout` (or `?timeout=`, default 10 s) is every call's deadline and the
    heartbeat asked of the broker."""

    kind = "amqp"
    capabilities = Capabilities(
        durable=True,
        shared=True,
        notify=True,
        timed_leases=False,
        lookup=False,
        exact_counts=False,
        unique=False,
        ordered=False,
        shared_records=False,
        error_history=False,
    )

    @classmethod
    def from_url(cls, url: str) -> AmqpDriver:
        return cls(url)

    # -- push --------------------------------------------------------------------------------

    async def push_many(
        self, jobs: Sequence[NewJob], *, connection: object | None = None
    ) -> list[str]:
        self.check_connection(connection)
        if any(job.unique is not None for job in jobs):
            raise self.unsupported(
                "unique jobs (unique=)",
                "RabbitMQ keeps no index of what is queued: push without unique=, or put the"
                " queue on a driver that keeps unique keys (redis, postgres, mysql, sqlite)",
            )
        longest = max((job.delay for job in jobs), default=0.0)
        if longest > MAX_DELAY_MS / 1000:
            # The delay levels hold a message no longer: it would run that much early.
            raise self.unsupported(
                f"a delay longer than {MAX_DELAY_MS / 86_400_000:.0f} days (2^36 - 1 ms, what its"
                f" delay levels can hold), not {longest / 86400:.0f} days",
                "push the job nearer its time, or put its queue on another driver",
            )
        now = time.time()
        await self._queues((job.queue for job in jobs), "a push")
        await self._publish_all(
            (self._outgoing(new_record(job, now), job.delay, job.queue) for job in jobs),
            "a push",
            delayed=any(job.delay > 0 for job in jobs),
        )
        self._sent_to(job.queue for job in jobs)
        return [job.id for job in jobs]

    # -- reserve and settle ------------------------------------------------------------------

    async def reserve(
        self, queues: Sequence[str], limit: int, lease: float, worker: str
    ) -> list[JobInfo]:
        """Hand out deliveries the intake channel's consumers were sent, highest priority
        first across all `queues` (then in the order they arrived), so no queue comes strictly
        first. One round trip per queue (a passive declare) first collects all a queue has sent
        so far: of the queues this driver pushed to (or began consuming, or raised the prefetch
        of) since its last reserve, holding fewer than asked, so a reserve right after a push
        finds all it pushed; and of every queue holding none, when none of `queues` holds any,
        unless a wait just ran out without a delivery (an idle worker's poll: a delivery would
        have woken it, and one on its way still wakes the next wait).
        A reserve that finds deliveries waiting asks no other queue: a busy worker, or one a
        delivery woke (on the last of 300 queues), takes what has arrived at once; a delivery
        wakes `wait`, and the next reserve takes the rest."""
        self._reserving.setdefault(worker, set()).update(queues)
        sent, self._sent = self._sent, set()
        quiet, self._quiet = self._quiet, False
        self._pushed.forget()
        holding = Counter(held.info.queue for held in self._held.values())
        intake, raised = await self._consume_all({q: holding[q] + limit for q in queues})
        intakes = dict.fromkeys(queues, intake)
        ready = {queue: self._ready_count(queue) for queue in queues}
        arrived = sum(ready.values())
        await self._catch_up(
            [
                queue
                for queue in intakes
                if (ready[queue] < limit and queue in sent | raised)
                or (not arrived and not quiet and not ready[queue])
            ],
            intake,
        )
        reserved: list[JobInfo] = []
        charged: dict[str, list[tuple[Delivery, dict[str, Any]]]] = {}
        while len(reserved) < limit:
            heads = [(heap[0][:2], queue) for queue in intakes if (heap := self._ready.get(queue))]
            if not heads:
                break
            queue = min(heads)[1]
            _, _, message = heapq.heappop(self._ready[queue])
            record = parse_record(message.body)
            if record is not None and record.get("alone") is True:
                charged.setdefault(queue, []).append((message, record))
            else:
                reserved.append(self._hold(queue, intakes[queue], message, record, lease, worker))
        await self._charge_all(intakes, charged, raise_error=not reserved)
        return reserved

    async def _charge_all(
        self,
        intakes: dict[str, AbstractChannel],
        charged: dict[str, list[tuple[Delivery, dict[str, Any]]]],
        *,
        raise_error: bool,
    ) -> None:
        """`_charge` each queue's deliveries. One that fails (its copy not confirmed) puts
        them back in line for the next reserve, still unacknowledged: dropped, they stayed
        held on a live connection and never ran. Its error is raised only when `raise_error`
        (the reserve has no job to return, which would be lost with it)."""
        failed: DriverError | None = None
        for queue, those in charged.items():
            try:
                await self._charge(queue, intakes[queue], those)
            except DriverError as exc:
                failed = exc
                for message, _ in those:
                    self._arrivals += 1
                    entry = (-message.priority, self._arrivals, message)
                    heapq.heappush(self._ready.setdefault(queue, []), entry)
        if failed is not None and raise_error:
            raise failed

    async def _charge(
        self, queue: str, intake: AbstractChannel, charged: list[tuple[Delivery, dict[str, Any]]]
    ) -> None:
        """Charge the attempt to jobs whose worker died while it ran them alone: each is
        published again (confirmed) with its attempt counted, one more rescue and no alone
        mark, and the delivery acknowledged second; the copy comes back as a new delivery.

        Such a delivery is the copy `_run_alone` made: it returned to its work queue only
        because the connection holding it closed before the job was settled."""
        copies = []
        for message, record in charged:
            attempt, rescued = record.get("attempt"), record.get("rescued") or 0
            body = {key: value for key, value in record.items() if key != "alone"}
            if type(attempt) is int:
                body["attempt"] = attempt + 1
            if type(rescued) is int:
                body["rescued"] = rescued + 1
            copies.append(self._outgoing(body, 0.0, queue, message))
        await self._publish_all(copies, "charging a job that died alone")
        tags = [message.tag for message, _ in charged]
        with self._edge("an ack"):
            await ack_all(intake, tags, self._unacked)
        self._unacked.difference_update(tags)

    def _hold(
        self,
        queue: str,
        channel: AbstractChannel,
        message: Delivery,
        record: dict[str, Any] | None,
        lease: float,
        worker: str,
    ) -> JobInfo:
        tag = message.tag
        now = time.time()
        token = f"{self._id}.{self._generation}.{channel.number}.{tag}"
        raw: dict[str, Any] = dict(record) if record is not None else foreign_record(queue, message)
        attempt, rescued = raw.get("attempt"), raw.get("rescued") or 0
        # The stored attempt is what ran before this delivery. A redelivery (its holder died)
        # is a rescue: the attempt it was given then is not counted twice. Deliveries never
        # handed out are given back as fresh copies (`_stop_consuming`), so only a channel
        # that died unannounced marks them redelivered.
        if type(attempt) is int:
            raw["attempt"] = attempt + 1
        if message.redelivered and type(rescued) is int:
            raw["rescued"] = rescued + 1
        raw.update(state="reserved", reservation=token, worker=worker, reserved_at=now)
        raw["lease_expires_at"] = now + lease
        info = read_job(raw, now)
        if info.id in self._held:  # the same id twice (a repeated push): keep both settleable
            info = read_job({**raw, "id": f"{info.id}~{tag}"}, now)
        self._held[info.id] = Held(token, channel, tag, info, record, message)
        return info

    def _claim(self, job_id: str, token: str) -> Held | None:
        """The held delivery if `token` still holds it on a live channel (the fencing check)."""
        held = self._held.get(job_id)
        if held is None or held.token != token:
            return None
        channel = held.channel
        if closing(channel) or (channel is not self._intake and channel is not self._publisher):
            self._held.pop(job_id, None)
            return None
        return held

    def _claim_all(self, items: Sequence[Reservation | Release | Failure]) -> list[Held]:
        found = (self._claim(item.id, item.token) for item in items)
        return [held for held in found if held is not None]

    async def renew(
        self, reservations: Sequence[Reservation], lease: float, *, alone: bool = False
    ) -> set[str]:
        """A delivery stays held while its channel lives: renewing only checks that it does.
        `alone` moves the job to this driver's alone queue first (see `_run_alone`)."""
        if reservations:
            await self._channels()
        kept = {item.id for item in reservations if self._claim(item.id, item.token)}
        if alone:
            for item in reservations:
                if item.id in kept and not await self._run_alone(self._held[item.id]):
                    kept.discard(item.id)
        return kept

    async def _run_alone(self, held: Held) -> bool:
        """Mark a held job as running alone, in a form that outlives this process: its copy
        marked `alone` is published (confirmed) to this driver's alone queue, which only this
        connection consumes; once it arrives, the original delivery is acknowledged and the
        copy is what the driver holds and settles. Should the connection close before the job
        is settled (the worker died, or its connection did), the broker puts the copy back in
        the alone queue, whose x-message-ttl of 0 dead-letters it to the work queue at once,
        and the next reserve of it charges the attempt (`_charge`). False when the job was
        lost meanwhile (its original delivery could not be acknowledged: another worker
        gets that one, so the copy is dropped)."""
        if held.record is None or held.channel is not self._intake:
            # Not a job conveyor wrote (failed as it came, never run), or marked already.
            return True
        publisher = await self._alone_consumer()
        info = held.info
        record = {**held.record, "attempt": info.attempt - 1, "rescued": info.rescued}
        job_id = str(record.get("id"))
        arrived = asyncio.get_running_loop().create_future()
        self._alone_waiting[job_id] = arrived
        try:
            message = Outgoing(
                record_body({**record, "alone": True}), "", self.names.alone(self._id),
                self.names.work(info.queue), amqp_priority(info.priority), job_id,
            )  # fmt: skip
            await self._publish_all([message], "marking a job alone")
            with self._edge("marking a job alone"):
                async with asyncio.timeout(self.timeout):
                    copy = await arrived
        finally:
            self._alone_waiting.pop(job_id, None)
        assert isinstance(copy.delivery, spec.Basic.Deliver)
        tag = copy.delivery.delivery_tag or 0
        try:
            with self._edge("an ack"):
                await ack_all(held.channel, [held.tag], self._unacked)
        except DriverError:
            with contextlib.suppress(DriverError), self._edge("an ack"):
                await ack_all(publisher, [tag], ())
            self._held.pop(info.id, None)
            return False
        self._unacked.discard(held.tag)
        held.channel, held.tag, held.record = publisher, tag, record
        held.message = delivery_of(copy)
        return True

    async def _alone_consumer(self) -> AbstractChannel:
        """The publishing channel, once it consumes this driver's alone queue."""
        publisher, _ = await self._channels()
        if self._alone_on is not publisher:
            waiting = self._alone_waiting

            async def arrived(message: DeliveredMessage) -> None:
                job_id = message.header.properties.message_id or ""
                future = waiting.get(job_id)
                if future is not None and not future.done():
                    future.set_result(message)
                else:
                    # Its mark gave up waiting (and raised): the original delivery is still
                    # held, so this late copy is dropped, not run twice.
                    await publisher.basic_ack(delivery_of(message).tag)

            with self._edge("marking a job alone"):
                name = await declare_alone(publisher, self.names, self._id, self.timeout)
                await publisher.basic_consume(name, arrived, timeout=self.timeout)
            self._alone_on = publisher
        return publisher

    async def ack(self, reservations: Sequence[Reservation]) -> set[str]:
        return await self._ack(self._claim_all(reservations))

    async def release(self, releases: Sequence[Release]) -> set[str]:
        """Publish each job's next form (confirmed), then acknowledge the deliveries."""
        helds, messages = [], []
        for item in releases:
            held = self._claim(item.id, item.token)
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
            helds.append(held)
            messages.append(self._outgoing(body, item.delay, held.info.queue, held.message))
        await self._publish_all(messages, "a release", delayed=any(m.exchange for m in messages))
        done = await self._ack(helds)
        if done:
            self._sent_to(held.info.queue for held in helds)
        return done

    async def fail(self, failures: Sequence[Failure]) -> set[str]:
        """Publish each job to its failed queue (confirmed), then acknowledge the deliveries."""
        helds, messages = [], []
        for item in failures:
            held = self._claim(item.id, item.token)
            if held is None:
                continue
            body: dict[str, Any] | bytes = held.message.body
            if held.record is not None:
                body = with_error(held.record, item.error)
                info = held.info
                body.update(
                    state=(JobState.CANCELLED if item.cancelled else JobState.FAILED).value,
                    attempt=info.attempt,
                    rescued=info.rescued,
                    worker=info.worker,  # who ran it last, as the other drivers keep
                    reserved_at=info.reserved_at,
                    finished_at=time.time(),
                )
            helds.append(held)
            messages.append(self._outgoing(body, 0.0, held.info.queue, held.message, failed=True))
        await self._publish_all(messages, "storing failed jobs")
        return await self._ack(helds)
