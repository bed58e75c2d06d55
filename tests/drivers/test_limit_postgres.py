"""PostgreSQL at its connection limit (a role of the test's own with CONNECTION LIMIT n): pushes
go on with the connections the driver holds; a call that can get none fails within its timeout
with an error that names the limit and what to do, the password masked; a worker refused at
start-up says so and starts once a connection is free; a refused LISTEN is tried again after
a pause, not at every reserve; a blocking push refused a connection of its own goes through
the event loop's.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from conveyor import JobState
from conveyor.drivers.sql.postgres import PostgresDriver
from conveyor.errors import BackendUnavailableError
from tests.backends import postgres
from tests.backends.limits import (
    PASSWORD,
    first_attempt,
    held_postgres,
    limited_registry,
    postgres_end_sessions,
    postgres_role,
    pushed_at_once,
    refused_push,
    runs_while_others_hold_the_rest,
    starts_once_freed,
)

pytestmark = pytest.mark.timeout(60)


def names_the_limit(error: str) -> None:
    assert "connection limit is reached" in error, error
    assert "too many connections for role" in error, error
    assert "pool_size" in error and "CONNECTION LIMIT" in error, error
    assert PASSWORD not in error and "***" in error, error


async def test_pushes_at_the_limit_go_on_with_the_connection_the_driver_holds() -> None:
    prefix = postgres.fresh_prefix()
    with postgres_role(2) as url:
        registry = limited_registry(url, 10, prefix=prefix)
        try:
            await registry.push("q", "noop", {})  # the driver holds one connection
            async with held_postgres(url, 1):  # and someone else the other
                await pushed_at_once(registry, 30)
        finally:
            await registry.close()
            await postgres.drop_tables(prefix)


async def test_a_push_that_gets_no_connection_names_the_limit_within_its_timeout() -> None:
    prefix = postgres.fresh_prefix()
    with postgres_role(2) as url:
        registry = limited_registry(url, prefix=prefix)
        try:
            await registry.push("q", "noop", {})
            await postgres_end_sessions(url)  # the driver's connection ended...
            async with held_postgres(url, 2):  # ...and the limit taken by others
                error = await refused_push(registry)
            names_the_limit(error)
            assert "none of the driver's own connections came free within 1s" in error
            # Connections free again: the pool's next attempt (after its back-off) connects.
            async with asyncio.timeout(15):
                while True:
                    try:
                        await registry.push("q", "noop", {})
                        break
                    except BackendUnavailableError:
                        pass
        finally:
            await registry.close()
            await postgres.drop_tables(prefix)


async def test_opening_at_the_limit_names_the_limit() -> None:
    with postgres_role(1) as url:
        async with held_postgres(url, 1):
            driver = PostgresDriver.from_url(f"{url}&prefix={postgres.fresh_prefix()}&pool_size=3")
            with pytest.raises(BackendUnavailableError) as raised:
                await driver.open()
        names_the_limit(str(raised.value))
        assert "pool_size (now 3)" in str(raised.value)


async def test_a_worker_refused_at_start_up_says_why_and_starts_once_a_connection_is_free(
    caplog: pytest.LogCaptureFixture,
) -> None:
    prefix = postgres.fresh_prefix()
    caplog.set_level(logging.WARNING, "conveyor.worker")
    with postgres_role(3) as url:
        pusher = limited_registry(url, prefix=prefix)
        registry = limited_registry(url, prefix=prefix, poll_interval=0.05)
        try:  # the pusher holds one connection, others the two left
            hold = held_postgres(url, 2)
            await starts_once_freed(pusher, registry, hold, caplog, pusher_holds=True)
        finally:
            await postgres.drop_tables(prefix)
    names_the_limit(first_attempt(caplog))


async def test_a_running_worker_runs_every_job_while_others_hold_the_rest_of_the_limit() -> None:
    prefix = postgres.fresh_prefix()
    with postgres_role(4) as url:
        registry = limited_registry(url, 10, prefix=prefix, concurrency=8, poll_interval=0.05)
        try:
            await runs_while_others_hold_the_rest(registry, held_postgres, url)
        finally:
            await postgres.drop_tables(prefix)


async def test_a_refused_listen_is_tried_again_after_a_pause_not_at_every_reserve() -> None:
    with postgres_role(2) as url:
        driver = PostgresDriver.from_url(f"{url}&prefix={postgres.fresh_prefix()}&timeout=1")
        attempts = 0
        connect = driver._listener._connect

        async def counted() -> Any:
            nonlocal attempts
            attempts += 1
            return await connect()

        driver._listener._connect = counted  # type: ignore[method-assign]
        try:
            await driver.open()  # one pooled connection
            async with held_postgres(url, 1):  # nothing left for the LISTEN
                for _ in range(50):  # a backlog: reserve after reserve
                    await driver.reserve(["q"], 10, 30.0, "w")
            assert 1 <= attempts <= 3, attempts  # before: one attempt per reserve, 50
        finally:
            await driver.close()
            await postgres.drop_tables(driver.prefix)


def test_a_blocking_push_refused_a_connection_of_its_own_takes_the_loops() -> None:
    import psycopg

    prefix = postgres.fresh_prefix()
    with postgres_role(2) as url:
        registry = limited_registry(url, 10, prefix=prefix)
        try:
            registry.blocking.push("q", "noop", {})  # opens the driver: one pooled connection
            with psycopg.connect(url.split("?", 1)[0]):  # someone else takes the other
                # From this plain thread, on a connection of its own the server refuses:
                # before, a DriverError (too many connections), though the loop's pool had one.
                job_id = registry.blocking.push("q", "noop", {})
            info = registry.blocking.job_info(job_id)
            assert info is not None and info.state is JobState.PENDING
        finally:
            registry.blocking.close()
            asyncio.run(postgres.drop_tables(prefix))
