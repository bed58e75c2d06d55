"""The blocking facade's push on PostgreSQL, stored from the calling thread (`push_in_thread`)
on a synchronous connection of the driver's own (drivers/sql/postgres/threads.py): the same
row as the async push, its NOTIFY heard by a waiting driver, several threads at once within
the pool's size, a connection that died while idle replaced, a silent server given up at the
timeout, and a driver closed and opened again never reusing a connection from before."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest

import conveyor.drivers.sql.threads as threads_module
from conveyor import Registry
from conveyor.drivers.sql.postgres import PostgresDriver
from conveyor.drivers.sql.postgres.connection import PostgresConnection
from conveyor.errors import BackendUnavailableError
from tests.backends import require_service
from tests.backends.postgres import START, URL, drop_tables, fresh_prefix
from tests.backends.proxy import Proxy
from tests.contract.helpers import (
    Mail,
    mail_registry,
    make_job,
    push_from_threads,
    queue_driver,
    stored_alike,
)

pytestmark = pytest.mark.timeout(60)

#: Seconds a loaded machine may add to a bound.
SLACK = 2.0


@pytest.fixture(autouse=True)
def server() -> None:
    require_service("postgres", 5432, START)


@pytest.fixture
def prefix() -> Iterator[str]:
    fresh = fresh_prefix()
    yield fresh
    asyncio.run(drop_tables(fresh))


def connections(driver: PostgresDriver) -> int:
    """How many synchronous connections the driver keeps for plain threads."""
    conn = driver._conn
    assert isinstance(conn, PostgresConnection)
    return len(conn._threads._idle)


def make_registry(prefix: str, pool_size: int = 10) -> Registry:
    return mail_registry(PostgresDriver(URL, prefix=prefix, pool_size=pool_size))


def test_a_blocking_push_is_stored_from_the_calling_thread_as_the_async_push_stores_it(
    prefix: str,
) -> None:
    registry = make_registry(prefix)
    try:
        first = registry.blocking.push("q", "mail", Mail("a@example.com"))  # opens the driver
        driver = queue_driver(registry, PostgresDriver)
        assert connections(driver) == 0
        options = dict(priority=7, timeout=30.0, meta={"k": "v"}, retry=4)

        second = registry.blocking.push("q", "mail", Mail("b"), **options)  # type: ignore[arg-type]
        third = registry.blocking.push("q", "mail", Mail("a@example.com"))

        assert connections(driver) == 1  # one, kept and used again
        mine, theirs = stored_alike(
            registry.blocking.job_info(third), registry.blocking.job_info(first)
        )
        assert mine == theirs
        info = registry.blocking.job_info(second)
        assert info is not None
        assert (info.priority, info.timeout, info.meta, info.max_attempts) == (
            7, 30.0, {"k": "v"}, 5,
        )  # fmt: skip
        assert registry.blocking.queue_info()["q"].pending == 3
    finally:
        registry.blocking.close()


def test_blocking_pushes_from_more_threads_than_the_pool_are_all_stored(prefix: str) -> None:
    registry = make_registry(prefix, pool_size=3)
    try:
        registry.blocking.push("q", "mail", Mail("first"))
        threads, each = 8, 25
        ids = push_from_threads(
            lambda text: registry.blocking.push("q", "mail", Mail(text)), threads, each
        )
        assert len({job_id for mine in ids for job_id in mine}) == threads * each
        assert registry.blocking.queue_info()["q"].pending == threads * each + 1
        assert 1 <= connections(queue_driver(registry, PostgresDriver)) <= 3
    finally:
        registry.blocking.close()


@pytest.fixture
async def drivers(prefix: str) -> AsyncIterator[list[PostgresDriver]]:
    made: list[PostgresDriver] = []
    yield made
    for driver in made:
        await driver.close()


async def test_push_in_thread_notifies_a_waiting_driver(
    prefix: str, drivers: list[PostgresDriver]
) -> None:
    worker, pusher = PostgresDriver(URL, prefix=prefix), PostgresDriver(URL, prefix=prefix)
    drivers += [worker, pusher]
    await pusher.open()
    assert await worker.reserve(["q"], 1, 30.0, "w") == []
    waiting = asyncio.create_task(worker.wait(["q"], 30.0))
    await asyncio.sleep(0.1)

    job = make_job()
    assert await asyncio.to_thread(pusher.push_in_thread, job) == job.id

    await asyncio.wait_for(waiting, 5.0)  # not its 30 s
    [taken] = await worker.reserve(["q"], 1, 30.0, "w")
    assert taken.id == job.id


async def test_push_in_thread_declines_a_unique_key_and_a_driver_not_opened(
    prefix: str, drivers: list[PostgresDriver]
) -> None:
    driver = PostgresDriver(URL, prefix=prefix)
    drivers.append(driver)
    assert await asyncio.to_thread(driver.push_in_thread, make_job()) is None
    await driver.open()
    assert await asyncio.to_thread(driver.push_in_thread, make_job(unique="k")) is None
    assert (await driver.counts(["q"]))["q"].pending == 0


async def test_a_connection_that_died_while_idle_is_replaced(
    prefix: str, drivers: list[PostgresDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(threads_module, "IDLE_CHECK", 0.0)  # every reuse is checked first
    driver = PostgresDriver(URL, prefix=prefix)
    drivers.append(driver)
    await driver.open()
    await asyncio.to_thread(driver.push_in_thread, make_job())
    conn = driver._conn
    assert isinstance(conn, PostgresConnection)
    [(kept, _)] = conn._threads._idle
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (kept.info.backend_pid,))

    job = make_job()
    assert await asyncio.to_thread(driver.push_in_thread, job) == job.id
    assert (await driver.counts(["q"]))["q"].pending == 2


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    proxy = Proxy(5432)
    await proxy.start()
    yield proxy
    await proxy.close()


async def test_push_in_thread_on_a_silent_server_fails_within_its_timeout(
    proxy: Proxy, prefix: str, drivers: list[PostgresDriver]
) -> None:
    url = f"postgresql://postgres@127.0.0.1:{proxy.port}/test?timeout=1"
    driver = PostgresDriver.from_url(f"{url}&prefix={prefix}")
    drivers.append(driver)
    await driver.open()
    await asyncio.to_thread(driver.push_in_thread, make_job())  # its connection is open
    proxy.blackhole()  # open connections go silent

    started = time.monotonic()
    with pytest.raises(BackendUnavailableError, match="gave no answer to push within 1s"):
        await asyncio.to_thread(driver.push_in_thread, make_job())
    assert time.monotonic() - started < 1 + SLACK
    assert connections(driver) == 0  # the silent one was dropped

    job = make_job()  # new connections are not silent: the next push makes one
    assert await asyncio.to_thread(driver.push_in_thread, job) == job.id


async def test_a_driver_opened_again_never_uses_a_connection_from_before(
    prefix: str, drivers: list[PostgresDriver]
) -> None:
    driver = PostgresDriver(URL, prefix=prefix)
    drivers.append(driver)
    await driver.open()
    await asyncio.to_thread(driver.push_in_thread, make_job())
    assert connections(driver) == 1
    await driver.close()
    assert connections(driver) == 0

    await driver.open()
    job = make_job()
    assert await asyncio.to_thread(driver.push_in_thread, job) == job.id
    assert connections(driver) == 1
