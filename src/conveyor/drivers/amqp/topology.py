"""The names, queues and exchanges the amqp driver uses, and how a job is written as a message.

`P` is the prefix (default `conveyor.`):

    P q.<queue>        durable classic queue: the queue's due jobs, one persistent message each,
                       x-max-priority 10 (see amqp_priority)
    P failed.<queue>   durable classic queue nobody consumes: failed (and cancelled) jobs
    P deliver          headers exchange (or the name `?exchange=` gives): a message whose
                       header `conveyor-work-queue` is `P q.<queue>` goes to that queue
                       (where delayed messages come back to); the work queue's whole name,
                       so prefixes may share the exchange. Each is bound by the header
                       `conveyor-queue` = <queue> too, what earlier versions sent
    P alone.<id>       durable classic queue of one driver (one worker process), consumed by it
                       alone: the copy of the job it runs alone (see driver.py); x-message-ttl
                       0 and dead-lettered to P deliver, so a copy whose holder died goes back
                       to its work queue at once; x-expires deletes it a minute after its
                       driver is gone
    P delay.<N>        N = 0..35: a topic exchange and a queue of that name; the queue holds its
                       messages 2^N ms (x-message-ttl) and dead-letters them to P delay.<N-1>
                       (N = 0: to P deliver)

Delays without plugins: a job due in d ms is published to `P delay.35` with a routing key of
36 words, the bits of d from bit 35 down to bit 0 ("0.0.1. ... .1"). Exchange N sends a
message whose bit N is 1 to queue N (which holds it 2^N ms) and one whose bit is 0 straight on
to exchange N-1. So the message waits the sum of its bits' waits, d ms exactly, plus the
broker's own latency: never early. Every message of one delay queue has the same TTL, so they
expire in order at the queue's head. The longest delay is 2^36 - 1 ms, about 795 days.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from aiormq.abc import AbstractChannel
from aiormq.exceptions import ChannelInvalidStateError
from pamqp import commands as spec
from pamqp.base import Frame
from pamqp.common import Arguments
from pydantic_core import from_json, to_json

from conveyor.drivers.amqp.intake import Delivery
from conveyor.drivers.amqp.pipeline import rpc_all
from conveyor.job import ErrorInfo, JobState, NewJob

__all__ = [
    "LEVELS",
    "QUEUE_HEADER",
    "ROUTE_HEADER",
    "Names",
    "amqp_priority",
    "delay_key",
    "given_back",
    "message_count",
    "new_record",
    "parse_record",
    "record_body",
]

#: Delay levels: bit N of a delay in milliseconds waits 2^N ms.
LEVELS = 36
MAX_DELAY_MS = (1 << LEVELS) - 1
#: The header a delayed message is routed back by: its work queue's name (prefix included).
ROUTE_HEADER = "conveyor-work-queue"
#: The header earlier versions routed by, the conveyor queue's name alone (which every prefix
#: sharing the exchange has alike): still bound, for their messages still in the delay levels.
QUEUE_HEADER = "conveyor-queue"
#: The work queues' x-max-priority: the broker keeps 11 priority levels apart (0..10).
MAX_PRIORITY = 10
#: conveyor's default priority 0 sits in the middle of the broker's levels.
PRIORITY_OFFSET = 5


def amqp_priority(priority: int) -> int:
    """A job's priority as a message priority: p + 5 kept within 0..10, so priorities -5..5
    keep their order and those beyond share the nearest end's level."""
    return min(MAX_PRIORITY, max(0, priority + PRIORITY_OFFSET))


class Names:
    """The broker names under one prefix."""

    def __init__(self, prefix: str, exchange: str | None = None) -> None:
        self.prefix = prefix
        self.deliver = exchange or f"{prefix}deliver"

    def work(self, queue: str) -> str:
        return f"{self.prefix}q.{queue}"

    def failed(self, queue: str) -> str:
        return f"{self.prefix}failed.{queue}"

    def delay(self, level: int) -> str:
        return f"{self.prefix}delay.{level}"

    def alone(self, driver: str) -> str:
        return f"{self.prefix}alone.{driver}"


def delay_ms(delay: float) -> int:
    """A delay in seconds as whole milliseconds, rounded up (never early), capped."""
    return min(MAX_DELAY_MS, max(0, math.ceil(delay * 1000)))


def delay_key(ms: int) -> str:
    """The routing key of a delay: its bits from bit LEVELS-1 down to bit 0, one word each."""
    return ".".join("1" if ms >> bit & 1 else "0" for bit in range(LEVELS - 1, -1, -1))


async def declare_delays(channel: AbstractChannel, names: Names, timeout: float) -> None:
    """The shared delay levels (the delivery exchange is declared already); idempotent.

    One round trip, not one per declaration: each goes out with no-wait, then a passive
    declare waits for its reply. The broker handles a channel's methods in order, so that
    reply means every one before it took; one it refused closed the channel, and the wait
    raises its error. A refusal that closes the channel before the last no-wait went out
    makes the next call raise that the channel is closed: the broker's reason is raised."""
    try:
        await _declare_delays(channel, names, timeout)
    except ChannelInvalidStateError:
        await asyncio.wait_for(channel.closing, timeout)  # raises the broker's reason
        raise


async def _declare_delays(channel: AbstractChannel, names: Names, timeout: float) -> None:
    for level in range(LEVELS):
        await channel.exchange_declare(
            names.delay(level), exchange_type="topic", durable=True, nowait=True, timeout=timeout
        )
    for level in range(LEVELS):
        after = names.delay(level - 1) if level else names.deliver
        arguments: Arguments = {"x-message-ttl": 2**level, "x-dead-letter-exchange": after}
        await channel.queue_declare(
            names.delay(level), durable=True, arguments=arguments, nowait=True, timeout=timeout
        )
        stars = "*." * (LEVELS - 1 - level)
        await channel.queue_bind(
            names.delay(level),
            names.delay(level),
            routing_key=f"{stars}1.#",
            nowait=True,
            timeout=timeout,
        )
        await channel.exchange_bind(
            after, names.delay(level), routing_key=f"{stars}0.#", nowait=True, timeout=timeout
        )
    await channel.exchange_declare(names.delay(0), passive=True, timeout=timeout)


def queue_methods(names: Names, queue: str) -> list[Frame]:
    """The declarations of a conveyor queue's work and failed queues (each answered with its
    message count) and the work queue's bindings (no-wait: the failed queue's declaration,
    answered after them, says they took)."""
    work = names.work(queue)
    binds = [
        spec.Queue.Bind(
            queue=work,
            exchange=names.deliver,
            arguments={"x-match": "all", header: value},
            nowait=True,
        )
        for header, value in ((ROUTE_HEADER, work), (QUEUE_HEADER, queue))
    ]
    arguments: Arguments = {"x-max-priority": MAX_PRIORITY}
    return [
        spec.Queue.Declare(queue=work, durable=True, arguments=arguments),
        *binds,
        spec.Queue.Declare(queue=names.failed(queue), durable=True),
    ]


async def declare_queues(
    channel: AbstractChannel, names: Names, queues: Sequence[str], timeout: float
) -> dict[str, tuple[int, int]]:
    """Conveyor queues' work and failed queues, all in one round trip (wire.rpc_all);
    idempotent. Returns each one's message counts, work and failed (ready messages only: a
    delivered, unacknowledged one is not counted)."""
    methods = [method for queue in queues for method in queue_methods(names, queue)]
    replies = iter(await rpc_all(channel, methods, timeout))
    return {queue: (message_count(next(replies)), message_count(next(replies))) for queue in queues}


def message_count(reply: Frame) -> int:
    """The message count a queue's declaration was answered with."""
    assert isinstance(reply, spec.Queue.DeclareOk)
    return reply.message_count or 0


#: How long a driver's alone queue outlives its last consumer, in ms: its copy, back in the
#: queue when the consumer's connection died, is dead-lettered at once (x-message-ttl 0).
ALONE_EXPIRES_MS = 60_000


async def declare_alone(channel: AbstractChannel, names: Names, driver: str, timeout: float) -> str:
    """One driver's alone queue (see the module docstring); idempotent. Returns its name."""
    name = names.alone(driver)
    arguments: Arguments = {
        "x-message-ttl": 0,
        "x-dead-letter-exchange": names.deliver,
        "x-expires": ALONE_EXPIRES_MS,
    }
    await channel.queue_declare(name, durable=True, arguments=arguments, timeout=timeout)
    return name


def new_record(job: NewJob, now: float) -> dict[str, Any]:
    """The stored form of a new job: read_job's field names, meta and error as JSON text."""
    return {
        "id": job.id,
        "queue": job.queue,
        "name": job.name,
        "payload": job.payload,
        "state": JobState.PENDING.value,
        "attempt": 0,
        "max_attempts": job.max_attempts,
        "priority": job.priority,
        "created_at": now,
        "available_at": now + job.delay,
        "timeout": job.timeout,
        "retry_delay": job.retry_delay,
        "meta": json.dumps(job.meta) if job.meta else "{}",
        "error": None,
        "rescued": 0,
        "finished_at": None,
    }


def with_error(record: Mapping[str, Any], error: ErrorInfo | None) -> dict[str, Any]:
    """The record with `error` (kept as it was when None)."""
    changed = dict(record)
    if error is not None:
        changed["error"] = json.dumps(error.to_dict())
    return changed


def record_body(record: Mapping[str, Any]) -> bytes:
    """A record as a message body: written by pydantic-core (about 5x json.dumps here; every
    pushed job is one), or by json.dumps for text it refuses (lone surrogates, which a
    damaged record read back may hold)."""
    try:
        return to_json(record)
    except ValueError:
        return json.dumps(record, separators=(",", ":")).encode()


def parse_record(body: bytes) -> dict[str, Any] | None:
    """A message body written by this driver, or None for anything else.

    Read with pydantic-core's JSON parser, about 3x json.loads on a job record (every reserve
    reads one per job); what it refuses (a lone surrogate escape, UTF-16 text) json.loads
    reads as before."""
    try:
        record = from_json(body)
    except ValueError:
        try:
            record = json.loads(body)
        except ValueError:
            return None
    if type(record) is not dict or not isinstance(record.get("id"), str):
        return None
    return record


def given_back(message: Delivery) -> dict[str, Any] | bytes:
    """What a delivery never handed out goes back as: the same, but a redelivered job (its
    holder died) with its rescue counted, which the fresh copy would forget. Not one marked
    alone: its charge (driver.py's `_charge`) counts the rescue, redelivered or not."""
    if message.redelivered:
        record = parse_record(message.body)
        rescued = None if record is None else record.get("rescued") or 0
        if record is not None and type(rescued) is int and record.get("alone") is not True:
            return {**record, "rescued": rescued + 1}
    return message.body
