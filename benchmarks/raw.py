"""The raw client's one-command rate, measured in the same run as conveyor's push: the yardstick
issue 16 sets (`push` at >= 0.8 of it). One write per "push", one at a time, as an application
without a job queue would write a row or a key:

- redis: one `HSET` of a key with a payload field (redis-py, asyncio);
- postgres: one autocommit `INSERT` of an (id, payload) row (psycopg 3, asyncio);
- mysql: one autocommit `INSERT` (asyncmy, the driver conveyor uses);
- sqlite: one `INSERT` committed at `synchronous=FULL` in WAL mode (sqlite3), the durability
  conveyor's pushes have;
- amqp: one persistent message published and confirmed (aiormq) to a durable queue shaped as
  the driver's (x-max-priority 10).

For amqp, `raw_batch_rates` also measures the broker's own ceiling for `push_many` and for a
worker: persistent, confirmed messages published in batches (each written at once, as the
driver writes them) and consumed with a prefetch and an ack per 100 messages, with no job
records, JSON or worker in between.

Each writes to a table or keys of its own and removes them afterwards. `raw_writer` gives one
write at a time, so that a benchmark can take turns between it and conveyor's push (both then
meet the same load on a shared machine); `raw_rate` times a run of writes on its own.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

PAYLOAD = '{"n": 1}'

#: One raw write, and what it is.
Write = Callable[[], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_writer(kind: str, url: str, folder: Path) -> AsyncIterator[tuple[Write, str] | None]:
    """(one write, what it is) for a driver kind, or None for one without a raw client to
    compare with (memory, sync); what it wrote is removed on the way out."""
    table = f"raw_{uuid.uuid4().hex[:8]}"
    if kind == "redis":
        async with _redis(url, table) as write:
            yield write, "redis-py, one HSET per push"
    elif kind in ("postgres", "postgresql"):
        async with _postgres(url, table) as write:
            yield write, "psycopg, one autocommit INSERT per push"
    elif kind == "mysql":
        async with _mysql(url, table) as write:
            yield write, "asyncmy, one autocommit INSERT per push"
    elif kind == "sqlite":
        async with _sqlite(folder / "raw.db") as write:
            yield write, "sqlite3, one INSERT committed at FULL"
    elif kind in ("amqp", "amqps"):
        async with _amqp(url, table) as write:
            yield write, "aiormq, one confirmed persistent publish"
    else:
        yield None


async def raw_rate(kind: str, url: str, count: int, folder: Path) -> tuple[float, str] | None:
    """(writes per second, what was measured) for a driver kind, or None (see raw_writer)."""
    async with raw_writer(kind, url, folder) as raw:
        if raw is None:
            return None
        write, what = raw
        started = time.perf_counter()
        for _ in range(count):
            await write()
        return count / (time.perf_counter() - started), what


async def _amqp_queue(url: str, table: str) -> tuple[Any, Any]:
    import aiormq

    connection = await aiormq.connect(_without_query(url))
    channel = await connection.channel(publisher_confirms=True)
    await channel.queue_declare(table, durable=True, arguments={"x-max-priority": 10})
    return connection, channel


@contextlib.asynccontextmanager
async def _amqp(url: str, table: str) -> AsyncIterator[Write]:
    from pamqp import commands as spec

    connection, channel = await _amqp_queue(url, table)
    properties = spec.Basic.Properties(delivery_mode=2)

    async def write() -> None:
        await channel.basic_publish(PAYLOAD.encode(), routing_key=table, properties=properties)

    try:
        yield write
    finally:
        await channel.queue_delete(table)
        await connection.close()


async def raw_batch_rates(
    kind: str, url: str, count: int, batch: int, prefetch: int
) -> tuple[float, float] | None:
    """amqp only: (messages/s published in batches, confirmed; messages/s consumed and
    acknowledged) straight on the broker, or None for another kind."""
    if kind not in ("amqp", "amqps"):
        return None
    import asyncio

    from conveyor.drivers.amqp.wire import Outgoing, publish_all

    table = f"raw_{uuid.uuid4().hex[:8]}"
    connection, channel = await _amqp_queue(url, table)
    try:
        message = Outgoing(PAYLOAD.encode(), "", table, None, 5, None)
        started = time.perf_counter()
        for first in range(0, count, batch):
            await publish_all(channel, [message] * min(batch, count - first), 30.0)
        published = count / (time.perf_counter() - started)
        consumer = await connection.channel()
        await consumer.basic_qos(prefetch_count=prefetch)
        done, seen = asyncio.Event(), 0

        async def receive(delivered: Any) -> None:
            nonlocal seen
            seen += 1
            if seen % 100 == 0 or seen == count:
                await consumer.basic_ack(delivered.delivery.delivery_tag, multiple=True)
            if seen == count:
                done.set()

        started = time.perf_counter()
        consuming = await consumer.basic_consume(table, receive)
        await asyncio.wait_for(done.wait(), 120)
        consumed = count / (time.perf_counter() - started)
        await consumer.basic_cancel(consuming.consumer_tag or "")
        return published, consumed
    finally:
        await channel.queue_delete(table)
        await connection.close()


@contextlib.asynccontextmanager
async def _redis(url: str, table: str) -> AsyncIterator[Write]:
    import redis.asyncio as redis

    client = redis.Redis.from_url(_without_query(url))
    written = 0

    async def write() -> None:
        nonlocal written
        written += 1
        await client.execute_command("HSET", f"{table}:{written}", "payload", PAYLOAD)

    try:
        await client.ping()
        yield write
        keys = [f"{table}:{n}" for n in range(1, written + 1)]
        for first in range(0, len(keys), 1000):
            await client.delete(*keys[first : first + 1000])
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def _postgres(url: str, table: str) -> AsyncIterator[Write]:
    import psycopg

    async with await psycopg.AsyncConnection.connect(_without_query(url), autocommit=True) as conn:
        await conn.execute(f"CREATE TABLE {table} (id text PRIMARY KEY, payload text)")

        async def write() -> None:
            await conn.execute(
                f"INSERT INTO {table} (id, payload) VALUES (%s, %s)", (uuid.uuid4().hex, PAYLOAD)
            )

        try:
            yield write
        finally:
            await conn.execute(f"DROP TABLE {table}")


async def mysql_connection(url: str) -> Any:
    """An autocommit asyncmy connection to the server and database of a mysql:// URL."""
    import asyncmy

    parts = urlsplit(url)
    return await asyncmy.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        database=parts.path.lstrip("/") or "test",
        autocommit=True,
    )


@contextlib.asynccontextmanager
async def _mysql(url: str, table: str) -> AsyncIterator[Write]:
    conn = await mysql_connection(url)
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(f"CREATE TABLE {table} (id VARCHAR(64) PRIMARY KEY, payload TEXT)")

            async def write() -> None:
                await cursor.execute(
                    f"INSERT INTO {table} (id, payload) VALUES (%s, %s)",
                    (uuid.uuid4().hex, PAYLOAD),
                )

            try:
                yield write
            finally:
                await cursor.execute(f"DROP TABLE {table}")
    finally:
        conn.close()


@contextlib.asynccontextmanager
async def _sqlite(path: Path) -> AsyncIterator[Write]:
    db = sqlite3.connect(path, isolation_level=None)

    async def write() -> None:
        db.execute("INSERT INTO raw (id, payload) VALUES (?, ?)", (uuid.uuid4().hex, PAYLOAD))

    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("CREATE TABLE raw (id TEXT PRIMARY KEY, payload TEXT)")
        yield write
    finally:
        db.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def _without_query(url: str) -> str:
    """The URL without conveyor's options (prefix=...), which the raw clients do not know."""
    return url.partition("?")[0]
