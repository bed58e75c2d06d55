"""Redis at its maxclients (a private redis-server started with --maxclients n): calls wait for
one of the driver's connections to come back instead of failing at once; a call that gets none
fails within its timeout naming the limit and what to do; a worker refused at start-up says
so; a worker running as others take the rest runs every job; a failed connect never leaves
the pool a connection more than max_connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from conveyor import JobState, Worker
from conveyor.drivers.redis.connection import make_client
from tests.backends.limits import (
    first_attempt,
    limited_registry,
    pushed_at_once,
    refused_push,
    run_every_job,
    starts_once_freed,
    taken_once_freed,
)
from tests.backends.private import PrivateRedis, private_redis

pytestmark = pytest.mark.timeout(60)

#: Connections the private server takes, all clients counted.
MAXCLIENTS = 4


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateRedis]:
    with private_redis(
        tmp_path, persistent=False, options=["--maxclients", str(MAXCLIENTS)]
    ) as made:
        yield made


@contextlib.contextmanager
def held(server: PrivateRedis, count: int | None = None) -> Iterator[list[redis.Redis]]:
    """`count` connections of another program (None: as many as the server still takes)."""
    clients: list[redis.Redis] = []
    try:
        while count is None or len(clients) < count:
            try:  # a single connection, made here, with no retry of its own
                client = redis.Redis(
                    port=server.port, single_connection_client=True, retry=Retry(NoBackoff(), 0)
                )
            except redis.ConnectionError:
                break
            clients.append(client)
        yield clients
    finally:
        for client in clients:
            client.close()


def names_the_limit(error: str) -> None:
    assert "connection limit is reached" in error, error
    assert "max number of clients reached" in error, error
    assert "maxclients" in error and "max_connections" in error, error


async def test_pushes_at_maxclients_wait_for_the_connection_the_driver_holds(
    server: PrivateRedis,
) -> None:
    registry = limited_registry(server.url, 10)
    try:
        await registry.push("q", "noop", {})  # the driver holds one connection
        with held(server):
            # Before: all but one failed ("max number of clients reached"), each at once or
            # after the connection's own retries, though the driver's connection was free.
            await pushed_at_once(registry, 30)
    finally:
        await registry.close()


async def test_a_push_that_gets_no_connection_names_the_limit_within_its_timeout(
    server: PrivateRedis,
) -> None:
    registry = limited_registry(server.url)
    try:
        with held(server) as others:
            error = await refused_push(registry)
            names_the_limit(error)
            assert "none of the driver's own connections came free within 1s" in error
            await taken_once_freed(registry, others)  # one freed while a push waits
    finally:
        await registry.close()


async def test_a_worker_refused_at_start_up_says_why_and_starts_once_a_connection_is_free(
    server: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "conveyor.worker")
    pusher = limited_registry(server.url)
    registry = limited_registry(server.url, poll_interval=0.05)
    await starts_once_freed(pusher, registry, held(server), caplog)
    names_the_limit(first_attempt(caplog))


async def test_a_running_worker_runs_every_job_while_others_hold_the_rest(
    server: PrivateRedis,
) -> None:
    registry = limited_registry(server.url, 10, concurrency=8, poll_interval=0.05)
    worker = Worker(registry, "w")
    with held(server, 1):  # one taken by others before the worker starts
        task = asyncio.create_task(worker.run())
        try:
            await registry.push("q", "noop", {})
            with held(server):  # and every one left, once it runs
                await run_every_job(registry, task, 60)
        finally:
            worker.stop(now=True)
            await asyncio.wait_for(task, 10)
            await registry.close()


async def test_a_failed_connect_leaves_the_pool_no_connection_past_max_connections(
    tmp_path: Path,
) -> None:
    server = PrivateRedis(tmp_path, persistent=False)  # not started: nothing listens yet
    client = make_client(server.url, {"max_connections": 1})
    try:
        with pytest.raises(redis.ConnectionError):
            await client.ping()
        server.start()
        # Two at once on a pool of one: the second waits for the first's connection. Before,
        # the failed connect had given the pool a second slot, and the second command failed
        # with redis-py's "Too many connections".
        assert await asyncio.gather(client.ping(), client.ping()) == [True, True]
    finally:
        await client.aclose()
        server.close()


def test_a_blocking_push_refused_a_connection_of_its_own_takes_the_loops(
    server: PrivateRedis,
) -> None:
    registry = limited_registry(server.url, 10)
    try:
        registry.blocking.push("q", "noop", {})  # opens the driver: one pooled connection
        with held(server):
            # From this plain thread, on a connection of its own the server refuses: before,
            # a BackendUnavailableError (maxclients), though the loop's pool had one.
            job_id = registry.blocking.push("q", "noop", {})
        info = registry.blocking.job_info(job_id)
        assert info is not None and info.state is JobState.PENDING
    finally:
        registry.blocking.close()
