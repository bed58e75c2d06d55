"""The consuming side of the amqp driver: the intake channel's consumers, one per queue a
reserve asks of (its prefetch no larger than the free slots, and only rising), the read that
catches up with what the queues sent, and the cancel that gives back what was sent and never
handed out once no worker of this driver reserves a queue (`stop_reserving`) or the driver
closes. AmqpDriver (driver.py) reserves and settles on top of it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection, Sequence

import aiormq
from aiormq.abc import AbstractChannel
from pamqp import commands as spec
from pamqp.base import Frame

from conveyor.drivers.amqp.inspection import AmqpInspection
from conveyor.drivers.amqp.intake import Delivery
from conveyor.drivers.amqp.pipeline import closing, rpc_all
from conveyor.drivers.amqp.topology import given_back
from conveyor.drivers.amqp.wire import ack_all
from conveyor.drivers.base import QueueCounts
from conveyor.errors import DriverError

__all__ = ["CATCH_UP", "MAX_PREFETCH", "AmqpConsumers"]

#: The largest prefetch count AMQP can express.
MAX_PREFETCH = 65_535
#: How long a reserve that found nothing waits for a delivery while a queue holds messages
#: ready (see AmqpConsumers._catch_up), and how often it looks meanwhile.
CATCH_UP = 0.25
CATCH_UP_STEP = 0.001


class AmqpConsumers(AmqpInspection):
    """The intake's consumers: what a reserve consumes, and what a stop gives back."""

    async def _consume_all(self, slots: dict[str, int]) -> tuple[AbstractChannel, set[str]]:
        """The intake channel, once it consumes each queue with a prefetch of at least its
        `slots` (the deliveries this driver holds of it plus the free slots a reserve asks
        for); and the queues consumed anew or with a higher prefetch. One round trip for all
        (one more to declare those not declared yet): a qos per distinct prefetch added, each
        followed by the consumes it applies to.

        A prefetch only rises, by adding a consumer for the difference: cancelling one would
        leave what it was sent unacknowledged and unseen. The broker sends a consumer no
        more than its prefetch unacknowledged, so what waits here beside what runs is at
        most the free slots, plus the finished jobs whose acks are on their way: of each
        queue, for a worker serving several (a prefetch shared by a channel's consumers,
        global QoS, is deprecated in RabbitMQ and refused from 4.3)."""
        await self._queues(slots)
        _, intake = await self._channels()
        assert isinstance(intake, aiormq.Channel)  # its consumers are registered below
        wanted = {queue: min(MAX_PREFETCH, count) for queue, count in slots.items()}
        rising = {q: more for q, n in wanted.items() if (more := n - self._prefetch.get(q, 0)) > 0}
        methods: list[Frame] = []
        for more in sorted(set(rising.values())):
            methods.append(spec.Basic.Qos(prefetch_count=more))
            for queue in (queue for queue, added in rising.items() if added == more):
                # The tag is chosen here and known before the broker's first delivery to it.
                # From a count, not len(_consumers): a consumer cancelled by stop_reserving
                # would make a later one reuse a live tag (refused: DuplicateConsumerTag).
                tag = f"conveyor.{self._id}.{self._generation}.{self._consumers_made}"
                self._consumers_made += 1
                self._consumers[tag] = queue
                intake.consumers[tag] = self._fallback(intake)  # as aiormq's basic_consume
                consume = spec.Basic.Consume(
                    queue=self.names.work(queue), consumer_tag=tag, nowait=True
                )
                methods.append(consume)
            consume.nowait = False  # the last one's reply says that every one before it took
        if methods:
            with self._edge("consuming"), self._declared_anew_if_missing(*rising):
                await rpc_all(intake, methods, self.timeout)
            self._prefetch.update((queue, wanted[queue]) for queue in rising)
        return intake, set(rising)

    async def counts(self, queues: Sequence[str]) -> dict[str, QueueCounts]:
        """The broker's counts (AmqpInspection.counts), after catching up, as a reserve does,
        on the queues this driver consumes and published to since its last reserve: a
        release's next attempt may be on its way to this driver's own consumer, counted
        neither among the broker's ready messages nor among the deliveries it holds. A burst
        worker that looked just then would stop with that attempt unrun (the likely cause of
        one such stop in a loaded CI run; not reproduced at will). Only while this driver
        holds no job, as a burst worker's look does: a busy one's full prefetch would make the
        catch-up wait for a delivery that cannot come (a metrics scrape's counts, say)."""
        intake, consumed = self._intake, set().union(*self._reserving.values())
        if intake is not None and not closing(intake) and not self._held:
            sent = [q for q in dict.fromkeys(queues) if q in self._sent and q in consumed]
            await self._catch_up(sent, intake)
        return await super().counts(queues)

    async def _catch_up(self, queues: Sequence[str], intake: AbstractChannel) -> None:
        """Return once every message these queues sent the intake channel so far is in
        `_ready`: a queue answers a declare after the deliveries it sent before it, in order.
        One round trip for all of them.

        Not always the delivery an ack makes room for: the broker frees a consumer's prefetch
        in a process of its own, and the declare's answer can overtake that delivery (seen
        under load: a reserve right after an ack found nothing while the queue held jobs). So
        while a queue that still holds messages ready has sent none, wait, up to CATCH_UP
        seconds in all (another consumer may take them)."""
        if not queues:
            return
        methods = [
            spec.Queue.Declare(queue=self.names.work(queue), passive=True) for queue in queues
        ]
        with self._edge("a reserve"), self._declared_anew_if_missing(*queues):
            replies = await rpc_all(intake, methods, self.timeout)
        await asyncio.sleep(0)  # the receivers of those deliveries run first
        holding = [
            queue
            for queue, reply in zip(queues, replies, strict=True)
            if isinstance(reply, spec.Queue.DeclareOk) and reply.message_count
        ]
        loop = asyncio.get_running_loop()
        give_up = loop.time() + min(CATCH_UP, self.timeout)
        while any(not self._ready.get(queue) for queue in holding) and loop.time() < give_up:
            await asyncio.sleep(CATCH_UP_STEP)

    async def stop_reserving(self, queues: Sequence[str], worker: str) -> None:
        """Stop consuming the queues of `queues` no other worker of this driver reserves, and
        give back what their consumers were sent and not handed out (`_stop_consuming`). A
        worker of the same name in this process (the same `worker`) still at work consumes
        anew at its next reserve, which this wakes."""
        mine = self._reserving.get(worker, set())
        mine.difference_update(queues)
        if not mine:
            self._reserving.pop(worker, None)
        others = set().union(*self._reserving.values())
        if unserved := [queue for queue in dict.fromkeys(queues) if queue not in others]:
            await self._stop_consuming(unserved)
            self._pushed.notify()

    async def _stop_consuming(self, queues: Collection[str]) -> None:
        """Cancel the intake channel's consumers of `queues`, and give back what they were
        sent and never handed out, as fresh copies in the order a reserve would have taken
        them (published, confirmed, then the originals acknowledged): requeued, they would
        come back marked redelivered, counted as a rescue (see topology.given_back).
        Deliveries handed out stay held. A queue a reserve consumed anew meanwhile (another
        worker's) keeps its deliveries for that reserve."""
        intake = self._intake
        if intake is None or closing(intake):
            return  # a closed channel's deliveries went back to their queues
        tags = [tag for tag, queue in self._consumers.items() if queue in queues]
        for queue in queues:
            self._prefetch.pop(queue, None)  # a reserve from now on consumes anew
        # Cancelled first, the tags still known: what a queue sent before the cancel arrives
        # before its answer, into `_ready`. All in one round trip (a cancel at a time: 0.26 s
        # to stop a worker on 300 queues).
        with self._edge("giving back prefetched jobs"):
            await rpc_all(
                intake, [spec.Basic.Cancel(consumer_tag=tag) for tag in tags], self.timeout
            )
        await asyncio.sleep(0)  # a delivery passed on whole reaches `_fallback` first
        for tag in tags:
            self._consumers.pop(tag, None)
            if isinstance(intake, aiormq.Channel):
                intake.consumers.pop(tag, None)  # as aiormq's basic_cancel does
        ready = sorted(
            (entry, queue)
            for queue in queues
            if queue not in self._prefetch
            for entry in self._ready.pop(queue, [])
        )
        messages = [(message, queue) for (_, _, message), queue in ready]
        await self._give_back(intake, messages)

    async def _give_back(
        self, intake: AbstractChannel, messages: Sequence[tuple[Delivery, str]]
    ) -> None:
        """Publish copies of these deliveries of `intake` to their queues, then acknowledge
        them. Should the copies fail, the deliveries are requeued instead (each counted a
        rescue when it comes back, a copy stored before the failure runs twice): left
        unacknowledged on a live channel, nobody would run them."""
        if not messages:
            return
        tags = [message.tag for message, _ in messages]
        copies = [
            self._outgoing(given_back(message), 0.0, queue, message) for message, queue in messages
        ]
        try:
            await self._publish_all(copies, "giving back prefetched jobs")
        except DriverError:
            with self._edge("giving back prefetched jobs"):
                for tag in tags:
                    await intake.basic_reject(tag, requeue=True)
            self._unacked.difference_update(tags)
            raise
        with self._edge("giving back prefetched jobs"):
            await ack_all(intake, tags, self._unacked)
        self._unacked.difference_update(tags)

    async def close(self) -> None:
        """Give back what the consumers were sent and never handed out (`_stop_consuming`),
        then close the connection: what it held goes back to its queues, redelivered."""
        self._reserving.clear()
        with contextlib.suppress(DriverError):
            await self._stop_consuming({*self._consumers.values(), *self._ready})
        await super().close()
