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
import time
from collections.abc import Sequence
from typing import Any

from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp import commands as spec

from conveyor.drivers.amqp.channels import Held
from conveyor.drivers.amqp.inspection import AmqpInspection, foreign_record, parse_record
from conveyor.drivers.amqp.topology import (
    new_record,
    with_error,
)
from conveyor.drivers.base import (
    Capabilities,
    Failure,
    Release,
    Reservation,
)
from conveyor.drivers.record import read_job
from conveyor.job import JobInfo, JobState, NewJob

__all__ = ["AmqpDriver"]


class AmqpDriver(AmqpInspection):
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
        record = parse_record(message.body)
        raw: dict[str, Any] = dict(record) if record is not None else foreign_record(queue, message)
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
        self._held[info.id] = Held(token, channel, tag, info, record, message)
        return info

    def _take(self, job_id: str, token: str) -> Held | None:
        """The held delivery if `token` still holds it on a live channel (the fencing check)."""
        held = self._held.get(job_id)
        if held is None or held.token != token:
            return None
        if held.channel.is_closed:
            self._held.pop(job_id, None)
            return None
        return held

    async def _settle(self, held: Held) -> bool:
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
