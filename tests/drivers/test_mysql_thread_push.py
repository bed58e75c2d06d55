"""The blocking facade's push on MySQL, stored from the calling thread (`push_in_thread`) on a
PyMySQL connection of the driver's own (drivers/sql/mysql/threads.py): the same row as the
async push, waiting workers woken (of the same driver, and of another by the doorbell),
several threads at once within the pool's size, a connection that died while idle replaced, a
silent server given up at the timeout, and a driver opened again never reusing a connection
from before."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pymysql
import pytest

import conveyor.drivers.sql.threads as threads_module
from conveyor import Registry
from conveyor.drivers.sql.mysql import MysqlDriver
from conveyor.errors import BackendUnavailableError
from tests.backends import Drivers, require_service
from tests.backends.mysql import START, URL, drop_tables, fresh_prefix
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
    require_service("mysql", 3306, START)


@pytest.fixture
def prefix() -> Iterator[str]:
    fresh = fresh_prefix()
    yield fresh
    asyncio.run(drop_tables(fresh))


@pytest.fixture
async def drivers(prefix: str) -> AsyncIterator[Drivers[MysqlDriver]]:
    made = Drivers(MysqlDriver, URL, prefix)
    yield made
    await made.close_all()


def connections(driver: MysqlDriver) -> list[pymysql.Connection]:  # type: ignore[type-arg]
    """The PyMySQL connections the driver keeps for plain threads, idle."""
    return [conn for conn, _ in driver._threads._idle]


def make_registry(prefix: str, pool_size: int = 10) -> Registry:
    return mail_registry(MysqlDriver(URL, prefix=prefix, pool_size=pool_size))


def test_a_blocking_push_is_stored_from_the_calling_thread_as_the_async_push_stores_it(
    prefix: str,
) -> None:
    registry = make_registry(prefix)
    try:
        first = registry.blocking.push("q", "mail", Mail("a@example.com"))  # opens the driver
        driver = queue_driver(registry, MysqlDriver)
        assert connections(driver) == []
        options = dict(priority=7, timeout=30.0, meta={"k": "v"}, retry=4)

        second = registry.blocking.push("q", "mail", Mail("b"), **options)  # type: ignore[arg-type]
        third = registry.blocking.push("q", "mail", Mail("a@example.com"))

        assert len(connections(driver)) == 1  # one, kept and used again
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
        assert 1 <= len(connections(queue_driver(registry, MysqlDriver))) <= 3
    finally:
        registry.blocking.close()


async def test_push_in_thread_wakes_waiting_workers_here_and_in_another_driver(
    drivers: Drivers[MysqlDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("conveyor.drivers.sql.mysql.wakeup.TICK_IDLE", 5.0)  # slow looks:
    monkeypatch.setattr("conveyor.drivers.sql.mysql.wakeup.TICK_BUSY", 5.0)  # only a wake-up
    pusher, other = await drivers.open(), await drivers.open()  # ends the waits soon
    waits = []
    for driver in (pusher, other):
        assert await driver.reserve(["q"], 1, 30.0, "w") == []
        waits.append(asyncio.create_task(driver.wait(["q"], 30.0)))
    await asyncio.sleep(0.1)

    job = make_job()
    assert await asyncio.to_thread(pusher.push_in_thread, job) == job.id

    await asyncio.wait_for(asyncio.gather(*waits), SLACK)
    [taken] = await other.reserve(["q"], 1, 30.0, "w")
    assert taken.id == job.id


async def test_push_in_thread_declines_a_unique_key_and_a_driver_not_opened(
    drivers: Drivers[MysqlDriver],
) -> None:
    driver = drivers.make()
    assert await asyncio.to_thread(driver.push_in_thread, make_job()) is None
    await driver.open()
    assert await asyncio.to_thread(driver.push_in_thread, make_job(unique="k")) is None
    assert (await driver.counts(["q"]))["q"].pending == 0


async def test_a_connection_that_died_while_idle_is_replaced(
    drivers: Drivers[MysqlDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(threads_module, "IDLE_CHECK", 0.0)  # every reuse is checked first
    driver = await drivers.open()
    await asyncio.to_thread(driver.push_in_thread, make_job())
    [kept] = connections(driver)
    admin = pymysql.connect(host="127.0.0.1", user="root", database="test", autocommit=True)
    try:
        with admin.cursor() as cursor:
            cursor.execute("KILL %s", (kept.thread_id(),))
    finally:
        admin.close()

    job = make_job()
    assert await asyncio.to_thread(driver.push_in_thread, job) == job.id
    assert (await driver.counts(["q"]))["q"].pending == 2


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    proxy = Proxy(3306)
    await proxy.start()
    yield proxy
    await proxy.close()


async def test_push_in_thread_on_a_silent_server_fails_within_its_timeout(
    proxy: Proxy, drivers: Drivers[MysqlDriver]
) -> None:
    driver = await drivers.open(f"mysql://root@127.0.0.1:{proxy.port}/test", timeout=1.0)
    await asyncio.to_thread(driver.push_in_thread, make_job())  # its connection is open
    proxy.blackhole()  # open connections go silent

    started = time.monotonic()
    with pytest.raises(BackendUnavailableError, match=f"127.0.0.1:{proxy.port}"):
        await asyncio.to_thread(driver.push_in_thread, make_job())
    assert time.monotonic() - started < 1 + SLACK
    assert connections(driver) == []  # the silent one was dropped

    job = make_job()  # new connections are not silent: the next push makes one
    assert await asyncio.to_thread(driver.push_in_thread, job) == job.id


async def test_a_driver_opened_again_never_uses_a_connection_from_before(
    drivers: Drivers[MysqlDriver],
) -> None:
    driver = await drivers.open()
    await asyncio.to_thread(driver.push_in_thread, make_job())
    assert len(connections(driver)) == 1
    await driver.close()
    assert connections(driver) == []

    await driver.open()
    job = make_job()
    assert await asyncio.to_thread(driver.push_in_thread, job) == job.id
    assert len(connections(driver)) == 1
