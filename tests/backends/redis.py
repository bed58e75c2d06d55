"""The redis backend: a random key prefix on the Redis at 127.0.0.1:6379, deleted afterwards.

Each connection is a new RedisDriver on the same prefix, as another process would have.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tests.backends import Storage, require_service

URL = "redis://127.0.0.1:6379/0"
START = 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no'


def fresh_prefix() -> str:
    """A prefix no other test uses, so tests may share the server (and run in parallel)."""
    return f"conveyor-test:{uuid.uuid4().hex[:12]}:"


async def delete_prefix(prefix: str, url: str = URL) -> int:
    """Delete every key under `prefix` (SCAN MATCH, never KEYS); returns how many."""
    from redis.asyncio import Redis

    client = Redis.from_url(url)
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
    require_service("redis", 6379, START)
    from conveyor.drivers.redis import RedisDriver

    prefix = fresh_prefix()
    try:
        yield Storage(lambda: RedisDriver(URL, prefix=prefix))
    finally:
        await delete_prefix(prefix)
