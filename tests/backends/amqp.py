"""The amqp backend: a random name prefix on the RabbitMQ at 127.0.0.1:5672, deleted afterwards.

Each connection is a new AmqpDriver on the same prefix, as another process would have. The
queues and exchanges the drivers declared are deleted when the test ends.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

from tests.backends import Storage, require_service

URL = "amqp://guest:guest@127.0.0.1:5672/"
START = "rabbitmq-server -detached (guest/guest on 127.0.0.1:5672)"


def fresh_prefix() -> str:
    """A prefix no other test uses, so tests may share the broker (and run in parallel)."""
    return f"conveyor-test.{uuid.uuid4().hex[:12]}."


async def delete_prefix(prefix: str, queues: set[str], alone: Iterable[str] = ()) -> None:
    """Delete the delay levels under `prefix`, the broker queues of these conveyor queues and
    the `alone` queues named (AmqpDriver.alone_queue(): the broker would delete each a minute
    after its driver closed)."""
    import aiormq

    from conveyor.drivers.amqp.topology import LEVELS, Names

    names = Names(prefix)
    connection = await aiormq.connect(URL)
    try:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_delete(names.work(queue))
            await channel.queue_delete(names.failed(queue))
        for name in alone:
            await channel.queue_delete(name)
        for level in range(LEVELS):
            await channel.queue_delete(names.delay(level))
            await channel.exchange_delete(names.delay(level))
        await channel.exchange_delete(names.deliver)
    finally:
        await connection.close()


@asynccontextmanager
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    require_service("amqp", 5672, START)
    from conveyor.drivers.amqp import AmqpDriver

    prefix = fresh_prefix()
    made: list[AmqpDriver] = []

    def connect() -> AmqpDriver:
        driver = AmqpDriver(URL, prefix=prefix)
        made.append(driver)
        return driver

    try:
        yield Storage(connect)
    finally:
        queues = set().union(*(driver.declared() for driver in made)) if made else set()
        if made:
            await delete_prefix(prefix, queues, [driver.alone_queue() for driver in made])
