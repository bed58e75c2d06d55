"""The amqp driver's counts and its failed queues: listing, retrying, purging, pruning."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from aiormq.abc import AbstractChannel
from pamqp import commands as spec

from conveyor.drivers.amqp.channels import BROWSE_LIMIT, AmqpChannels
from conveyor.drivers.amqp.intake import Delivery, delivery_of
from conveyor.drivers.amqp.pipeline import closing, rpc_all
from conveyor.drivers.amqp.topology import message_count, parse_record
from conveyor.drivers.amqp.wire import ack_all
from conveyor.drivers.base import QueueCounts
from conveyor.drivers.record import decode_text, read_job
from conveyor.errors import DriverError
from conveyor.job import JobInfo, JobState

__all__ = ["AmqpInspection", "foreign_record", "parse_record"]

#: A failed job read off its queue: its record (None: not a job) and the message it came in.
Taken = tuple[dict[str, Any] | None, Delivery]
#: What a retry, purge or prune does with the failed jobs it read, a batch at a time.
Act = Callable[[AbstractChannel, list[Taken]], Awaitable[None]]
#: How many failed jobs a retry publishes (and a retry, purge or prune acknowledges) at once.
ACT_BATCH = 500


class AmqpInspection(AmqpChannels):
    """Counts from the broker, and failed jobs read from their queue without consuming them."""

    # -- inspection --------------------------------------------------------------------------

    async def counts(self, queues: Sequence[str]) -> dict[str, QueueCounts]:
        """Pending and failed from the broker (pending: messages not delivered to anyone);
        reserved: what this driver holds; delayed and succeeded are not known. One round trip
        for all the queues (passive declares), after one declaring those not declared yet."""
        queues = list(dict.fromkeys(queues))
        try:
            counted = await self._count(queues)
        except DriverError:
            if self._declared.issuperset(queues):
                raise
            counted = await self._count(queues)  # one was deleted behind this driver: anew
        found: dict[str, QueueCounts] = {}
        for queue, (pending, failed) in counted.items():
            held = sum(
                1
                for item in self._held.values()
                if item.info.queue == queue and not closing(item.channel)
            )
            # Sent to this driver's consumers but not handed out yet: still pending.
            pending += self._ready_count(queue)
            found[queue] = QueueCounts(pending=pending, reserved=held, failed=failed)
        return found

    async def _count(self, queues: list[str]) -> dict[str, tuple[int, int]]:
        """Each queue's ready messages, work and failed."""
        publisher = await self._queues(queues)
        names = [
            name for queue in queues for name in (self.names.work(queue), self.names.failed(queue))
        ]
        asked = [spec.Queue.Declare(queue=name, passive=True) for name in names]
        with self._edge("counting jobs"), self._declared_anew_if_missing(*queues):
            replies = iter(await rpc_all(publisher, asked, self.timeout))
        return {
            queue: (message_count(next(replies)), message_count(next(replies))) for queue in queues
        }

    async def list_jobs(
        self,
        queue: str,
        state: JobState,
        limit: int = 100,
        offset: int = 0,
        *,
        name: str | None = None,
        after: str | None = None,
    ) -> list[JobInfo]:
        if state not in (JobState.FAILED, JobState.CANCELLED):
            raise self.unsupported(f"listing {state.value} jobs", _UNLISTED[state])
        jobs = [
            job
            for job, _ in (
                await self._browse(
                    queue,
                    lambda job: (
                        job.state is state
                        and name in (None, job.name)
                        and (after is None or job.id > after)
                    ),
                )
            )[0]
        ]
        jobs.sort(key=lambda job: job.id)
        return jobs[offset : offset + limit]

    async def named_ids(
        self, queue: str, state: JobState, name: str, size: int
    ) -> AsyncIterator[list[str]]:
        """Every id of job name `name` that one read of the failed queue finds, in one page:
        a read passes over the whole queue, so pages of `size` (each a read, and each acted
        on by another) made a retry or purge by name take reads in proportion to the jobs.
        Read again after the caller acted while a read stopped at BROWSE_LIMIT."""
        if state not in (JobState.FAILED, JobState.CANCELLED):
            raise self.unsupported(
                f"purging {state.value} jobs by job name", _UNPURGED.get(state, _UNLISTED[state])
            )
        seen: set[str] = set()
        while True:
            found, cut_short = await self._browse(
                queue, lambda job: job.state is state and job.name == name and job.id not in seen
            )
            ids = sorted({job.id for job, _ in found})
            if not ids:
                return
            seen.update(ids)
            yield ids
            if not cut_short:
                return

    async def get(self, job_id: str) -> JobInfo | None:
        raise self.unsupported("looking a job up by id", "RabbitMQ keeps no index of its messages")

    async def _browse(
        self,
        queue: str,
        wanted: Callable[[JobInfo], bool],
        act: Act | None = None,
        until: Callable[[JobInfo], bool] | None = None,
    ) -> tuple[list[tuple[JobInfo, int]], bool]:
        """Read the queue's failed messages on a channel of their own; `act(channel, taken)`
        is handed the jobs `wanted` (each with its record and message) ACT_BATCH at a time,
        and last what is left before the channel closes, and may acknowledge them; the first
        job `until(job)` is true of ends the read. Closing the channel puts every other one
        back. Returns the jobs `wanted` and whether the read stopped at BROWSE_LIMIT
        messages, before the queue's end."""
        task = asyncio.current_task()
        cancels = task.cancelling() if task is not None else 0
        await self._queue(queue)
        assert self._connection is not None
        with self._edge("reading failed jobs"):
            channel = await self._connection.channel(publisher_confirms=False)
        found: list[tuple[JobInfo, int]] = []
        taken: list[Taken] = []
        cut_short = True
        try:
            now = time.time()
            for _ in range(BROWSE_LIMIT):
                with self._edge("reading failed jobs"), self._declared_anew_if_missing(queue):
                    message = await channel.basic_get(
                        self.names.failed(queue), timeout=self.timeout
                    )
                if not isinstance(message.delivery, spec.Basic.GetOk):
                    cut_short = False
                    break
                record = parse_record(message.body)
                raw = (
                    dict(record)
                    if record is not None
                    else foreign_record(queue, delivery_of(message), "failed")
                )
                job = read_job(raw, now)
                if until is not None and until(job):
                    cut_short = False
                    break
                if wanted(job):
                    found.append((job, message.delivery.delivery_tag or 0))
                    if act is None:
                        continue
                    taken.append((record, delivery_of(message)))
                    if len(taken) >= ACT_BATCH:
                        await act(channel, taken)
                        taken = []
            if act is not None and taken:
                await act(channel, taken)
        finally:
            await self._close_whole(channel)
        if task is not None and task.cancelling() > cancels:
            # A cancel that came while aiormq closed the channel can be lost in it (seen about
            # once in 30 burst workers, whose prune then slept its 60 s out before the worker
            # could exit): raised here, as it would have been.
            raise asyncio.CancelledError
        return found, cut_short

    async def _close_whole(self, channel: AbstractChannel) -> None:
        """Close the channel, whatever comes meanwhile: aiormq answers a cancel that reaches
        its Channel.Close halfway by sending a second one, which the broker may answer by
        closing the whole connection (CHANNEL_ERROR; a burst worker's prune cancelled at its
        stop did it, and the next calls failed). A cancel is raised once the close is done."""

        async def close() -> None:
            with self._edge("reading failed jobs"):
                async with asyncio.timeout(self.timeout):
                    await channel.close()

        closing = asyncio.ensure_future(close())
        try:
            await asyncio.shield(closing)
        except asyncio.CancelledError:
            await asyncio.wait([closing])  # bounded by the close's own timeout
            if not closing.cancelled():
                closing.exception()  # the cancel is what the caller hears of
            raise

    async def _act_on_all(
        self,
        queue: str,
        wanted: Callable[[JobInfo], bool],
        act: Act,
        until: Callable[[JobInfo], bool] | None = None,
    ) -> int:
        """`_browse` with `act`, again while a read stopped at BROWSE_LIMIT and acted on some
        (what `act` acknowledged is off the queue, so the next read reaches further): a retry,
        purge or prune of more failed jobs than one read holds took the first BROWSE_LIMIT
        and said that was all. How many jobs it acted on."""
        done = 0
        while True:
            found, cut_short = await self._browse(queue, wanted, act, until)
            done += len(found)
            if not (found and cut_short):
                return done

    async def retry_failed(self, queue: str, ids: Sequence[str] | None = None) -> int:
        chosen = None if ids is None else set(ids)

        async def move(channel: AbstractChannel, taken: list[Taken]) -> None:
            # Published (confirmed) in one batch first, acknowledged second: a crash between
            # the two leaves a job both pending and failed, never neither.
            copies = []
            for record, message in taken:
                body: dict[str, Any] | bytes = message.body
                if record is not None:
                    body = dict(record)
                    body.update(
                        state="pending", attempt=0, rescued=0, available_at=time.time(),
                        finished_at=None,
                    )  # fmt: skip
                copies.append(self._outgoing(body, 0.0, queue, message))
            await self._publish_all(copies, "a retry")
            await self._ack_read(channel, taken)

        moved = await self._act_on_all(
            queue,
            lambda job: job.state is JobState.FAILED and (chosen is None or job.id in chosen),
            move,
        )
        if moved:
            self._sent_to([queue])
        return moved

    async def _delete(
        self,
        queue: str,
        wanted: Callable[[JobInfo], bool],
        until: Callable[[JobInfo], bool] | None = None,
    ) -> int:
        async def drop(channel: AbstractChannel, taken: list[Taken]) -> None:
            await self._ack_read(channel, taken)

        return await self._act_on_all(queue, wanted, drop, until)

    async def _ack_read(self, channel: AbstractChannel, taken: list[Taken]) -> None:
        """Acknowledge, so take off the failed queue, these messages read on `channel`."""
        with self._edge("acting on failed jobs"):
            await ack_all(channel, [message.tag for _, message in taken], ())

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
            with self._edge("purging pending jobs"), self._declared_anew_if_missing(queue):
                done = await publisher.queue_purge(self.names.work(queue), timeout=self.timeout)
            # Then what the broker already sent this driver's consumer (a worker's, kept
            # between reserves): the queue is empty now, so no more come in their place.
            return (done.message_count or 0) + await self._drop_ready(queue)
        if state is JobState.SUCCEEDED:
            return 0  # an acknowledged message is gone: none are kept
        if state is JobState.PENDING:
            raise self.unsupported(
                "purging pending jobs by id",
                "a queue is not an index: purge all of the queue's pending jobs (no ids)",
            )
        raise self.unsupported(
            f"purging {state.value} jobs",
            "they wait in the delay levels the queues share, out of reach one by one",
        )

    async def prune(self, queue: str, older_than: float) -> int:
        """The failed queue holds its jobs in the order they failed: the first one that
        finished within the retention ends the prune. So a worker's prune (every minute) reads
        what it deletes and one more, not the whole queue, which a reader meanwhile
        (`conveyor failed list`, a retry by id) would not see."""
        before = time.time() - older_than
        return await self._delete(
            queue,
            lambda job: job.finished_at is not None and job.finished_at < before,
            lambda job: job.finished_at is not None and job.finished_at >= before,
        )


#: Why RabbitMQ cannot list the jobs of a state, and what it can tell instead.
_UNLISTED = {
    JobState.PENDING: "a queue is not an index: it can only count them (queue_info)",
    JobState.RESERVED: "a queue is not an index: queue_info counts what this process holds",
    JobState.DELAYED: "they wait in the delay levels the queues share, neither listed nor counted",
    JobState.SUCCEEDED: "an acknowledged message is gone: none are kept, so none are counted",
}


#: What to do instead of purging a state's jobs by name, where it differs from _UNLISTED.
_UNPURGED = {
    JobState.PENDING: "a queue is not an index: purge all of the queue's pending jobs (no name)",
}


def foreign_record(queue: str, message: Delivery, state: str = "pending") -> dict[str, Any]:
    """The raw fields of a message that is not a job: read_job names what is missing."""
    message_id = message.message_id
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
