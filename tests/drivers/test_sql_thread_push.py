"""The blocking facade's push on PostgreSQL and MySQL, stored from the calling thread
(`push_in_thread`) on a synchronous connection of the driver's own (drivers/sql/threads.py:
psycopg's, PyMySQL's): the same row as the async push, waiting workers woken (of the same
driver and of another), more threads than the pool's size, a connection that died while idle
replaced, a silent server given up at the timeout, and a driver opened again never reusing a
connection from before. SQLite's (a connection per calling thread) is test_sqlite_thread_push.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import psycopg
import pymysql
import pytest

import conveyor.drivers.sql.threads as threads_module
from conveyor import Registry
from conveyor.drivers.sql.driver import SqlDriver
from conveyor.drivers.sql.mysql import MysqlDriver
from conveyor.drivers.sql.postgres import PostgresDriver
from conveyor.errors import BackendUnavailableError
from tests.backends import mysql, postgres, require_service
from tests.backends.proxy import Proxy
from tests.contract.helpers import Mail, mail_registry, make_job, push_from_threads, stored_alike

pytestmark = pytest.mark.timeout(60)

#: Seconds a loaded machine may add to a bound.
SLACK = 2.0


async def end_postgres_connection(conn: Any) -> None:
    async with await psycopg.AsyncConnection.connect(postgres.URL, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))


async def end_mysql_connection(conn: Any) -> None:
    admin = pymysql.connect(host="127.0.0.1", user="root", database="test", autocommit=True)
    try:
        with admin.cursor() as cursor:
            cursor.execute("KILL %s", (conn.thread_id(),))
    finally:
        admin.close()


@dataclass(frozen=True)
class Server:
    kind: type[SqlDriver]
    backend: ModuleType  # tests.backends.postgres or .mysql
    port: int
    end_connection: Callable[[Any], Awaitable[None]]  # ends a connection from the server's side

    def url(self, prefix: str, port: int | None = None, **options: object) -> str:
        """The test server's URL, or the same through a proxy on `port`."""
        url = self.backend.URL
        if port is not None:
            url = url.replace(f":{self.port}/", f":{port}/")
        query = "&".join(f"{key}={value}" for key, value in {"prefix": prefix, **options}.items())
        return f"{url}?{query}"


SERVERS = {
    "postgres": Server(PostgresDriver, postgres, 5432, end_postgres_connection),
    "mysql": Server(MysqlDriver, mysql, 3306, end_mysql_connection),
}


@pytest.fixture(params=sorted(SERVERS))
def server(request: pytest.FixtureRequest) -> Server:
    chosen = SERVERS[request.param]
    require_service(request.param, chosen.port, chosen.backend.START)
    return chosen


@pytest.fixture
def prefix(server: Server) -> Iterator[str]:
    fresh: str = server.backend.fresh_prefix()
    yield fresh
    asyncio.run(server.backend.drop_tables(fresh))


@pytest.fixture
async def drivers() -> AsyncIterator[list[SqlDriver]]:
    made: list[SqlDriver] = []
    yield made
    for driver in made:
        await driver.close()


async def opened(server: Server, drivers: list[SqlDriver], url: str) -> Any:
    driver = server.kind.from_url(url)
    drivers.append(driver)
    await driver.open()
    return driver


def kept(driver: Any) -> list[Any]:
    """The connections the driver keeps for plain threads, idle."""
    return [conn for conn, _ in driver._threads._idle]


def make_registry(server: Server, prefix: str, **options: object) -> Registry:
    return mail_registry(server.kind.from_url(server.url(prefix, **options)))


def driver_of(registry: Registry) -> Any:
    return registry._resolve_driver(registry.queues["q"].driver)


def test_a_blocking_push_is_stored_from_the_calling_thread_as_the_async_push_stores_it(
    server: Server, prefix: str
) -> None:
    registry = make_registry(server, prefix)
    try:
        first = registry.blocking.push("q", "mail", Mail("a@example.com"))  # opens the driver
        assert kept(driver_of(registry)) == []
        options = dict(priority=7, timeout=30.0, meta={"k": "v"}, retry=4)

        second = registry.blocking.push("q", "mail", Mail("b"), **options)  # type: ignore[arg-type]
        third = registry.blocking.push("q", "mail", Mail("a@example.com"))

        assert len(kept(driver_of(registry))) == 1  # one, kept and used again
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


def test_blocking_pushes_from_more_threads_than_the_pool_are_all_stored(
    server: Server, prefix: str
) -> None:
    registry = make_registry(server, prefix, pool_size=3)
    try:
        registry.blocking.push("q", "mail", Mail("first"))
        threads, each = 8, 25
        ids = push_from_threads(
            lambda text: registry.blocking.push("q", "mail", Mail(text)), threads, each
        )
        assert len({job_id for mine in ids for job_id in mine}) == threads * each
        assert registry.blocking.queue_info()["q"].pending == threads * each + 1
        assert 1 <= len(kept(driver_of(registry))) <= 3
    finally:
        registry.blocking.close()


async def test_push_in_thread_wakes_waiting_workers_here_and_in_another_driver(
    server: Server, prefix: str, drivers: list[SqlDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("conveyor.drivers.sql.mysql.wakeup.TICK_IDLE", 3.0)  # MySQL's looks
    monkeypatch.setattr("conveyor.drivers.sql.mysql.wakeup.TICK_BUSY", 3.0)  # slowed down
    pusher = await opened(server, drivers, server.url(prefix))
    other = await opened(server, drivers, server.url(prefix))
    waits = []
    for driver in (pusher, other):
        assert await driver.reserve(["q"], 1, 30.0, "w") == []
        waits.append(asyncio.create_task(driver.wait(["q"], 30.0)))
    await asyncio.sleep(0.1)

    job = make_job()
    assert await asyncio.to_thread(pusher.push_in_thread, job) == job.id

    await asyncio.wait_for(asyncio.gather(*waits), SLACK)  # not their 30 s, nor the looks' 3
    [taken] = await other.reserve(["q"], 1, 30.0, "w")
    assert taken.id == job.id


async def test_push_in_thread_declines_a_unique_key_and_a_driver_not_opened(
    server: Server, prefix: str, drivers: list[SqlDriver]
) -> None:
    driver = server.kind.from_url(server.url(prefix))
    drivers.append(driver)
    assert await asyncio.to_thread(driver.push_in_thread, make_job()) is None
    await driver.open()
    assert await asyncio.to_thread(driver.push_in_thread, make_job(unique="k")) is None
    assert (await driver.counts(["q"]))["q"].pending == 0


@pytest.mark.parametrize("idle_check", [0.0, 60.0])
async def test_a_connection_the_server_ended_is_replaced(
    server: Server,
    prefix: str,
    drivers: list[SqlDriver],
    monkeypatch: pytest.MonkeyPatch,
    idle_check: float,
) -> None:
    """Found out by the check before reuse (IDLE_CHECK 0: every reuse), or, within IDLE_CHECK
    of its last use (60), by the push itself, which runs once more on a new connection, as the
    async push does: before, it failed with BackendUnavailableError (a restart, a KILL)."""
    monkeypatch.setattr(threads_module, "IDLE_CHECK", idle_check)
    driver = await opened(server, drivers, server.url(prefix))
    await asyncio.to_thread(driver.push_in_thread, make_job())
    [connection] = kept(driver)
    await server.end_connection(connection)

    job = make_job()
    assert await asyncio.to_thread(driver.push_in_thread, job) == job.id
    assert (await driver.counts(["q"]))["q"].pending == 2
    assert kept(driver) != [connection]


async def test_push_in_thread_on_a_silent_server_fails_within_its_timeout(
    server: Server, prefix: str, drivers: list[SqlDriver]
) -> None:
    proxy = Proxy(server.port)
    await proxy.start()
    try:
        driver = await opened(server, drivers, server.url(prefix, proxy.port, timeout=1))
        await asyncio.to_thread(driver.push_in_thread, make_job())  # its connection is open
        proxy.blackhole()  # open connections go silent

        started = time.monotonic()
        with pytest.raises(BackendUnavailableError, match=f"127.0.0.1:{proxy.port}"):
            await asyncio.to_thread(driver.push_in_thread, make_job())
        assert time.monotonic() - started < 1 + SLACK
        assert kept(driver) == []  # the silent one was dropped

        job = make_job()  # new connections are not silent: the next push makes one
        assert await asyncio.to_thread(driver.push_in_thread, job) == job.id
    finally:
        await proxy.close()


async def test_a_driver_opened_again_never_uses_a_connection_from_before(
    server: Server, prefix: str, drivers: list[SqlDriver]
) -> None:
    driver = await opened(server, drivers, server.url(prefix))
    await asyncio.to_thread(driver.push_in_thread, make_job())
    assert len(kept(driver)) == 1
    await driver.close()
    assert kept(driver) == []

    await driver.open()
    job = make_job()
    assert await asyncio.to_thread(driver.push_in_thread, job) == job.id
    assert len(kept(driver)) == 1
