"""MariaDB at its connection limit (a user of the test's own WITH MAX_USER_CONNECTIONS n): calls
wait for one of the driver's connections to come free instead of failing at once; a call that
gets none fails within its timeout naming the limit and what to do, the password masked; a
worker refused at start-up says so; a blocking push refused a connection of its own goes
through the event loop's; a worker running as others take the rest of the limit runs every job.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from conveyor import JobState
from tests.backends import mysql
from tests.backends.limits import (
    PASSWORD,
    first_attempt,
    held_mysql,
    limited_registry,
    mysql_end_sessions,
    mysql_user,
    pushed_at_once,
    refused_push,
    runs_while_others_hold_the_rest,
    starts_once_freed,
    taken_once_freed,
)

pytestmark = pytest.mark.timeout(60)


def names_the_limit(error: str) -> None:
    assert "connection limit is reached" in error, error
    assert "max_user_connections" in error, error
    assert "pool_size" in error and "MAX_USER_CONNECTIONS" in error, error
    assert PASSWORD not in error, error


async def test_pushes_at_the_limit_wait_for_the_connections_the_driver_holds() -> None:
    prefix = mysql.fresh_prefix()
    with mysql_user(2) as url:
        registry = limited_registry(url, 10, prefix=prefix)
        try:
            await registry.push("q", "noop", {})  # the driver holds one connection
            async with held_mysql(url, 1):  # and someone else the other
                # Before: two thirds failed at once ("has exceeded the 'max_user_connections'
                # resource"), though the driver's connection was free within milliseconds.
                await pushed_at_once(registry, 30)
        finally:
            await registry.close()
            await mysql.drop_tables(prefix)


async def test_a_push_that_gets_no_connection_names_the_limit_within_its_timeout() -> None:
    prefix = mysql.fresh_prefix()
    with mysql_user(2) as url:
        registry = limited_registry(url, prefix=prefix)
        try:
            await registry.push("q", "noop", {})
            await mysql_end_sessions(url)  # the driver's connection ended...
            async with held_mysql(url, 2) as held:  # ...and the limit taken by others
                error = await refused_push(registry)
                names_the_limit(error)
                assert "none of the driver's own connections came free within 1s" in error
                await taken_once_freed(registry, held)  # one freed while a push waits
        finally:
            await registry.close()
            await mysql.drop_tables(prefix)


async def test_a_worker_refused_at_start_up_says_why_and_starts_once_a_connection_is_free(
    caplog: pytest.LogCaptureFixture,
) -> None:
    prefix = mysql.fresh_prefix()
    caplog.set_level(logging.WARNING, "conveyor.worker")
    with mysql_user(3) as url:
        pusher = limited_registry(url, prefix=prefix)
        registry = limited_registry(url, prefix=prefix, poll_interval=0.05)
        try:
            await starts_once_freed(pusher, registry, held_mysql(url, 3), caplog)
        finally:
            await mysql.drop_tables(prefix)
    names_the_limit(first_attempt(caplog))


async def test_a_running_worker_runs_every_job_while_others_hold_the_rest_of_the_limit() -> None:
    prefix = mysql.fresh_prefix()
    with mysql_user(4) as url:
        registry = limited_registry(url, 10, prefix=prefix, concurrency=8, poll_interval=0.05)
        try:
            await runs_while_others_hold_the_rest(registry, held_mysql, url)
        finally:
            await mysql.drop_tables(prefix)


def test_a_blocking_push_refused_a_connection_of_its_own_takes_the_loops() -> None:
    import pymysql

    prefix = mysql.fresh_prefix()
    with mysql_user(2) as url:
        registry = limited_registry(url, 10, prefix=prefix)
        user = url.split("://", 1)[1].split(":", 1)[0]
        try:
            registry.blocking.push("q", "noop", {})  # opens the driver: one pooled connection
            with pymysql.connect(host="127.0.0.1", user=user, password=PASSWORD, database="test"):
                # From this plain thread, on a connection of its own the server refuses:
                # before, a DriverError (max_user_connections), though the loop's pool had one.
                job_id = registry.blocking.push("q", "noop", {})
            info = registry.blocking.job_info(job_id)
            assert info is not None and info.state is JobState.PENDING
        finally:
            registry.blocking.close()
            asyncio.run(mysql.drop_tables(prefix))
