"""The Redis driver's connection pool (connection.WaitingPool): an idle connection is handed
out and taken back the short way, still checked before use, and a connection slot is never
lost, whatever the command's end (a reply, an error, a cancel).

The shared Redis on 127.0.0.1:6379, keys under a prefix of each test's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.exceptions
from redis.asyncio import Redis
from redis.auth.token import SimpleToken

from conveyor.drivers.redis.connection import make_client
from tests.backends import require_service
from tests.backends.private import spare_port, wait_for_port
from tests.backends.redis import START, URL, delete_prefix, fresh_prefix

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def client() -> AsyncIterator[tuple[Redis, str]]:
    """The driver's command client, with at most 3 connections, and a key prefix."""
    require_service("redis", 6379, START)
    prefix = fresh_prefix()
    made = make_client(URL, {"max_connections": 3})
    yield made, prefix
    await delete_prefix(prefix)
    await made.aclose()


async def test_a_reply_left_unread_is_not_read_by_the_next_command(
    client: tuple[Redis, str],
) -> None:
    redis_client, prefix = client
    await redis_client.set(f"{prefix}answer", "right")
    # A BLPOP given up on the client's side: its reply comes once the list gets an item.
    waiting = asyncio.create_task(redis_client.execute_command("BLPOP", f"{prefix}list", 5))
    await asyncio.sleep(0.2)
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    await redis_client.lpush(f"{prefix}list", "stale")
    await asyncio.sleep(0.1)

    for _ in range(6):  # every connection of the pool in turn
        assert await redis_client.get(f"{prefix}answer") == "right"


async def test_a_connection_the_server_closed_is_replaced(client: tuple[Redis, str]) -> None:
    redis_client, prefix = client
    await redis_client.set(f"{prefix}answer", "right")
    own_id = await redis_client.client_id()
    # Killed by another client: the pool's idle connection is closed under it.
    async with Redis.from_url(URL) as other:
        assert await other.client_kill_filter(_id=own_id) == 1

    assert await redis_client.get(f"{prefix}answer") == "right"


async def test_no_connection_slot_is_lost_whatever_a_command_ends_with(
    client: tuple[Redis, str],
) -> None:
    redis_client, prefix = client
    await redis_client.set(f"{prefix}text", "not a list")

    async def cancelled() -> None:
        task = asyncio.create_task(redis_client.execute_command("BLPOP", f"{prefix}none", 5))
        await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def refused() -> None:
        with pytest.raises(redis.exceptions.ResponseError):
            await redis_client.lpush(f"{prefix}text", "x")

    async def answered() -> None:
        await redis_client.incr(f"{prefix}count")

    await asyncio.gather(*(step() for _ in range(20) for step in (cancelled, refused, answered)))

    # Three commands that each hold a connection for a while, at once: all three slots are
    # free again, or one of them would wait for a slot until the timeout.
    blocked = [redis_client.execute_command("BLPOP", f"{prefix}empty{n}", 0.3) for n in range(3)]
    assert await asyncio.wait_for(asyncio.gather(*blocked), 5) == [None, None, None]
    assert await redis_client.get(f"{prefix}count") == "20"
    pool = redis_client.connection_pool
    assert len(pool._in_use_connections) == 0  # type: ignore[attr-defined]
    assert len(pool._available_connections) <= 3  # type: ignore[attr-defined]


async def test_a_connection_given_a_new_token_authenticates_with_it_when_it_comes_back(
    tmp_path: Path,
) -> None:
    """redis-py's streaming credential providers hand a connection in use a new token, which
    the pool sends (AUTH) when the connection comes back: the short way must not skip it."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = spare_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path),
         "--save", "", "--appendonly", "no",
         "--user", "alice", "on", ">secret", "~*", "&*", "+@all"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, up=True)
        made = make_client(f"redis://127.0.0.1:{port}/0", {})
        pool = made.connection_pool
        assert await made.execute_command("ACL WHOAMI") == "default"
        connection = await pool.get_connection()
        connection.set_re_auth_token(SimpleToken("secret", -1, 0, {"oid": "alice"}))
        await pool.release(connection)

        assert await made.execute_command("ACL WHOAMI") == "alice"
        await made.aclose()
    finally:
        server.kill()
        server.wait()
