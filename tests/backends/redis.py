"""The redis backend: a random key prefix on the Redis at 127.0.0.1:6379, deleted afterwards.

Each connection is a new RedisDriver on the same prefix, as another process would have.

CONVEYOR_TEST_REDIS_URL points this backend (the contract suite's redis runs) at another
Redis on 127.0.0.1, such as a sentinel URL (redis+sentinel://127.0.0.1:26379/service) whose
master is a private server: docs/drivers.md, "Sentinel".
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from conveyor.drivers.redis.keys import QueueKeys
from conveyor.drivers.redis.sentinel import SentinelUrl, is_sentinel
from tests.backends import NOT_UTF8, PICKLED, Damage, Storage, require_service

URL = os.environ.get("CONVEYOR_TEST_REDIS_URL") or "redis://127.0.0.1:6379/0"
START = 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no'

#: A job is a hash of text fields: any field can hold any bytes, or be missing (None).
DAMAGES = [
    Damage("attempt", "x"),
    Damage("attempt", None),
    Damage("rescued", "x"),
    Damage("max_attempts", None),
    Damage("priority", "high"),
    Damage("created_at", "yesterday"),
    Damage("timeout", "long"),
    Damage("payload", PICKLED),
    Damage("payload", NOT_UTF8),
    Damage("name", NOT_UTF8),
    Damage("queue", NOT_UTF8),
    Damage("unique", NOT_UTF8),
    Damage("meta", "{not json"),
    Damage("meta", NOT_UTF8),
    Damage("error", "{broken"),
    Damage("id", NOT_UTF8, "tolerate"),  # the id is read from the key, never the hash
    Damage("rank", None, "tolerate"),  # reserve ranks it as priority 0
    Damage("state", None, "tolerate"),  # reserve writes its own
    Damage("available_at", "soon"),
    Damage("lease_expires_at", "soon", "tolerate"),  # reserve writes its own
    Damage("payload", None),
    Damage("name", None),
    Damage("retry_delay", "{broken", "tolerate"),  # read as a 1-second retry delay
    Damage("meta", "[1, 2]"),
]


def raw_client(url: str = URL) -> Any:
    """A redis-py asyncio client of the server at `url`, or of the master its sentinels name."""
    from redis.asyncio import Redis
    from redis.asyncio.connection import parse_url
    from redis.asyncio.sentinel import Sentinel

    if not is_sentinel(url):
        return Redis.from_url(url)
    where = SentinelUrl.parse(url)
    settings = {key: value for key, value in parse_url(where.plain).items() if key != "host"}
    settings.pop("port", None)
    return Sentinel(where.sentinels).master_for(where.service, **settings)


async def damage(prefix: str, job_id: str, field: str, raw: object) -> None:
    """Write `raw` into `field` of the job's hash (None deletes the field)."""
    client = raw_client()
    key = QueueKeys.of(prefix, "q").job + job_id  # the tests' queue: no walk of the database
    if not await client.exists(key):
        # SCAN walks the whole database whatever the match: big steps, few round trips.
        matches = client.scan_iter(match=f"{prefix}*:job:{job_id}", count=10_000)
        [key] = [key async for key in matches]
    try:
        if raw is None:
            await client.hdel(key, field)
        else:
            await client.hset(key, field, raw)  # type: ignore[arg-type]
    finally:
        await client.aclose()


def fresh_prefix() -> str:
    """A prefix no other test uses, so tests may share the server (and run in parallel)."""
    return f"conveyor-test:{uuid.uuid4().hex[:12]}:"


async def delete_prefix(prefix: str, url: str = URL) -> int:
    """Delete every key under `prefix` (SCAN MATCH, never KEYS); returns how many."""
    client = raw_client(url)
    deleted = 0
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += await client.delete(*batch)
                batch.clear()
        if batch:
            deleted += await client.delete(*batch)
    finally:
        await client.aclose()
    return deleted


@asynccontextmanager
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    require_service("redis", urlsplit(URL.split(",")[0]).port or 6379, START)
    from conveyor.drivers.redis import RedisDriver

    prefix = fresh_prefix()
    try:
        yield Storage(lambda: RedisDriver(URL, prefix=prefix), partial(damage, prefix), DAMAGES)
    finally:
        await delete_prefix(prefix)
