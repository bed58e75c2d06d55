"""The settings that keep silent connections from hanging a worker, as the drivers apply them:
the `timeout` option, TCP keepalives, the server's idle-transaction timeout, the check of a
connection that sat idle, the deadline itself, and migrations, which may outlast it.

The servers are the ones of this machine; a silent connection is played by the TCP proxy of
tests/backends/proxy.py. Every driver here has `timeout=1`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import conveyor.drivers.sql.mysql.checkout as my_checkout
import conveyor.drivers.sql.postgres.connection as pg_connection
from conveyor.drivers import keepalive
from conveyor.drivers.redis import RedisDriver
from conveyor.drivers.redis.connection import WaitingPool, make_client
from conveyor.drivers.sql.deadline import Deadline
from conveyor.drivers.sql.driver import SqlDriver
from conveyor.drivers.sql.mysql import MysqlDriver
from conveyor.drivers.sql.postgres import PostgresDriver
from conveyor.drivers.sql.queries import Query
from conveyor.errors import BackendUnavailableError, ConfigError
from tests.backends import mysql, postgres, require_service
from tests.backends.proxy import Proxy

pytestmark = pytest.mark.timeout(30)

#: kind -> (driver class, the real server's port, URL through a proxy on {port} with {prefix})
SQL = {
    "postgres": (PostgresDriver, 5432, "postgresql://postgres@127.0.0.1:{port}/test"),
    "mysql": (MysqlDriver, 3306, "mysql://root@127.0.0.1:{port}/test"),
}
#: A statement that takes 1.5 s on each server.
SLEEP = {"postgres": "SELECT pg_sleep(1.5)", "mysql": "DO SLEEP(1.5)"}


@pytest.fixture(params=list(SQL))
async def sql(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, Proxy, SqlDriver]]:
    """(kind, a proxy in front of its server, a driver through it with timeout=1)."""
    kind = request.param
    backend = {"postgres": postgres, "mysql": mysql}[kind]
    cls, port, url = SQL[kind]
    require_service(kind, port, backend.START)
    prefix = backend.fresh_prefix()
    proxy = Proxy(port)
    await proxy.start()
    driver = cls.from_url(f"{url.format(port=proxy.port)}?timeout=1&prefix={prefix}")
    try:
        yield kind, proxy, driver
    finally:
        await driver.close()
        await proxy.close()
        await backend.drop_tables(prefix)


# -- the option ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "read"),
    [
        (PostgresDriver.from_url, lambda d: d.target.timeout),
        (MysqlDriver.from_url, lambda d: d.target.timeout),
    ],
)
def test_the_timeout_option_is_read_from_the_url(
    make: Callable[[str], Any], read: Callable[[Any], float]
) -> None:
    scheme = "postgresql" if make == PostgresDriver.from_url else "mysql"
    assert read(make(f"{scheme}://u@h/db?timeout=2.5")) == 2.5
    assert read(make(f"{scheme}://u@h/db")) == 10.0


def test_the_timeout_option_is_not_handed_to_libpq() -> None:
    driver = PostgresDriver.from_url("postgresql://u@h/db?timeout=3&sslmode=disable")
    assert "timeout=3" not in driver.target.conninfo
    assert "sslmode=disable" in driver.target.conninfo


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf"])
@pytest.mark.parametrize(
    "url", ["postgresql://u@h/db?timeout={}", "mysql://u@h/db?timeout={}", "redis://h/0?timeout={}"]
)
def test_a_timeout_that_no_call_could_meet_is_refused(url: str, value: str) -> None:
    make = {"p": PostgresDriver.from_url, "m": MysqlDriver.from_url, "r": RedisDriver}[url[0]]
    with pytest.raises(ConfigError, match="timeout"):
        make(url.format(value))


def test_the_timeout_keyword_is_checked_too() -> None:
    with pytest.raises(ConfigError, match="timeout"):
        PostgresDriver("postgresql://u@h/db", timeout=0)
    with pytest.raises(ConfigError, match="timeout"):
        MysqlDriver("mysql://u@h/db", timeout=-2)
    assert PostgresDriver("postgresql://u@h/db", timeout=4).target.timeout == 4


# -- keepalives and server-side timeouts ------------------------------------------------------


def test_postgres_gets_keepalives_unless_its_url_sets_them() -> None:
    given = pg_connection.Target("postgresql://u@h/db", timeout=3).kwargs
    assert given["keepalives"] == 1
    assert given["keepalives_idle"] == keepalive.IDLE
    assert given["keepalives_interval"] == keepalive.INTERVAL
    assert given["keepalives_count"] == keepalive.COUNT
    assert given["tcp_user_timeout"] == 3000
    own = pg_connection.Target("postgresql://u@h/db?keepalives_idle=60&tcp_user_timeout=0").kwargs
    assert "keepalives_idle" not in own and "tcp_user_timeout" not in own


def _assert_keepalives(sock: socket.socket, timeout: float) -> None:
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    for option, value in keepalive.tcp_options(timeout).items():
        assert sock.getsockopt(socket.IPPROTO_TCP, option) == value


async def test_pooled_sql_connections_have_keepalives_and_an_idle_transaction_timeout(
    sql: tuple[str, Proxy, SqlDriver],
) -> None:
    kind, _, driver = sql
    await driver.open()
    if kind == "postgres":
        setting = "SHOW idle_in_transaction_session_timeout"
        assert (await driver._conn.fetch(Query("s", "", setting), {}))[0] == {
            "idle_in_transaction_session_timeout": "1s"
        }
        pool = driver._conn._pool  # type: ignore[attr-defined]
        async with pool.connection() as conn:
            with socket.socket(fileno=conn.pgconn.socket) as sock:
                try:
                    _assert_keepalives(sock, 1.0)
                finally:
                    sock.detach()
    else:
        setting = "SELECT @@session.idle_transaction_timeout AS seconds"
        assert (await driver._conn.fetch(Query("s", "", setting), {}))[0] == {"seconds": 1}
        pool = driver._conn._pool  # type: ignore[attr-defined]
        connection = await driver._conn._checkout.acquire(pool)  # type: ignore[attr-defined]
        try:
            _assert_keepalives(connection._transport.get_extra_info("socket"), 1.0)
        finally:
            pool.release(connection)


def test_redis_clients_have_keepalives_and_the_timeout() -> None:
    client = make_client("redis://127.0.0.1:6379/0?timeout=2", {})
    blocking = make_client("redis://127.0.0.1:6379/0", {"timeout": 3}, blocking=True)
    given = client.connection_pool.connection_kwargs
    # The command client's deadline is the driver's, one asyncio.timeout around each call
    # (tests/drivers/test_silent.py), not redis-py's socket_timeout (a task per write).
    assert given["socket_timeout"] is None
    assert given["socket_keepalive"] is True
    assert given["socket_keepalive_options"] == keepalive.tcp_options(2)
    assert isinstance(client.connection_pool, WaitingPool)
    assert RedisDriver("redis://127.0.0.1:6379/0?timeout=2")._edge.timeout == 2
    assert blocking.connection_pool.connection_kwargs["socket_timeout"] is None
    assert blocking.connection_pool.timeout == 3  # type: ignore[attr-defined]


# -- deadlines ---------------------------------------------------------------------------------


async def test_a_slow_statement_fails_at_its_deadline_and_the_driver_carries_on(
    sql: tuple[str, Proxy, SqlDriver], caplog: pytest.LogCaptureFixture
) -> None:
    kind, _, driver = sql
    await driver.open()
    began = time.monotonic()
    with pytest.raises(BackendUnavailableError, match="gave no answer to slow within 1s"):
        await driver._conn.fetch(Query("slow", "", SLEEP[kind]), {})
    assert time.monotonic() - began < 2.0
    assert "gave no answer to slow within 1s: connection discarded" in caplog.text
    assert (await driver.counts(["q"]))["q"].pending == 0


async def test_a_migration_may_run_longer_than_the_call_timeout(
    sql: tuple[str, Proxy, SqlDriver],
) -> None:
    kind, _, driver = sql
    await driver.open()
    await driver._conn.transaction(lambda tx: tx.script(SLEEP[kind]))


async def test_an_idle_connection_that_went_silent_is_replaced_before_a_call_gets_it(
    sql: tuple[str, Proxy, SqlDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, proxy, driver = sql
    monkeypatch.setattr(pg_connection, "IDLE_CHECK", 0.2)
    monkeypatch.setattr(my_checkout, "IDLE_CHECK", 0.2)
    await driver.counts(["q"])
    await asyncio.sleep(0.3)
    proxy.blackhole()
    # The check (under half the timeout) finds the connection silent; the call gets a new one.
    assert (await driver.counts(["q"]))["q"].pending == 0


async def test_a_deadline_breaks_the_connection_once_it_passes() -> None:
    killed: list[float] = []
    began = time.monotonic()
    with Deadline(0.1, lambda: killed.append(time.monotonic() - began)) as deadline:
        await asyncio.sleep(0.3)
    assert deadline.expired and len(killed) == 1 and 0.09 < killed[0] < 0.3


async def test_a_deadline_left_in_time_never_fires() -> None:
    killed: list[bool] = []
    with Deadline(0.1, lambda: killed.append(True)) as deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    assert not deadline.expired and killed == []


async def test_a_deadline_extended_fires_later() -> None:
    killed: list[bool] = []
    with Deadline(0.1, lambda: killed.append(True)) as deadline:
        deadline.extend(0.5)
        deadline.extend(0.05)  # never shortened
        await asyncio.sleep(0.2)
        assert killed == []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                while not killed:
                    await asyncio.sleep(0.01)
    assert deadline.expired and killed == [True]


async def test_a_checkout_given_up_on_ends_even_if_it_swallows_a_cancellation() -> None:
    async def stubborn() -> None:
        # asyncio.wait_for on Python 3.11 returns, swallowing the cancellation, when it lands
        # as the connect completes; asyncmy then waits for a handshake that never comes.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)
        await asyncio.sleep(10)

    task = asyncio.ensure_future(stubborn())
    await asyncio.sleep(0)
    my_checkout._cancel_until_done(task)
    await asyncio.wait_for(asyncio.wait({task}), 2 * my_checkout.CANCEL_AGAIN + 1)
    assert task.cancelled()


async def test_opening_on_a_server_that_accepts_but_never_answers_gives_up_within_the_timeout(
    sql: tuple[str, Proxy, SqlDriver],
) -> None:
    """A port of another service, or a hung server: the first connection's handshake is bounded
    (mysql's pool made it with no deadline, and `conveyor list` waited forever)."""
    _, proxy, driver = sql
    proxy.blackhole(new_for=60)
    started = time.monotonic()

    with pytest.raises(BackendUnavailableError):
        await driver.open()

    assert time.monotonic() - started < 5
