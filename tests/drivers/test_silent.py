"""Connections that go silent, on the postgres, mysql and redis drivers: a call on one fails
within its timeout and the next call works on a new connection; a call that cannot get a
connection fails within its timeout too; waiting, closing and a stopping LISTEN never hang.

A TCP proxy in front of the real server blackholes the connections open at that moment (bytes
dropped both ways, sockets left open) and, when asked, swallows new ones for a while
(tests/backends/proxy.py). Each driver here has `timeout=1`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

import conveyor.drivers.sql.postgres.listener as pg_listener
from conveyor.drivers import driver_from_url
from conveyor.drivers.base import Driver
from conveyor.drivers.sql.postgres import PostgresDriver
from conveyor.errors import BackendUnavailableError
from conveyor.job import NewJob
from tests.backends import eventually, require_service
from tests.backends.proxy import Proxy
from tests.contract.helpers import make_job

pytestmark = pytest.mark.timeout(30)

#: Seconds a call may take beyond its timeout before the test calls it hung (a loaded machine).
SLACK = 1.5

#: kind -> (port of the real server, driver URL through the proxy's {port}, with {prefix})
SERVERS = {
    "postgres": (5432, "postgresql://postgres@127.0.0.1:{port}/test?timeout=1&prefix={prefix}"),
    "mysql": (3306, "mysql://root@127.0.0.1:{port}/test?timeout=1&prefix={prefix}"),
    "redis": (6379, "redis://127.0.0.1:{port}/0?timeout=1&prefix={prefix}"),
}


@dataclass
class Server:
    kind: str
    proxy: Proxy
    through: str  # a driver URL through the proxy
    direct: str  # the same straight to the server


@pytest.fixture(params=list(SERVERS))
async def server(request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    async with _server(request.param) as found:
        yield found


@pytest.fixture
async def postgres() -> AsyncIterator[Server]:
    async with _server("postgres") as found:
        yield found


@contextlib.asynccontextmanager
async def _server(kind: str) -> AsyncIterator[Server]:
    """A proxy in front of the real server of `kind`, and a table or key prefix of its own."""
    backend = importlib.import_module(f"tests.backends.{kind}")
    port, through = SERVERS[kind]
    require_service(kind, port, backend.START)
    prefix = backend.fresh_prefix()
    proxy = Proxy(port)
    await proxy.start()
    try:
        url = through.format(port=proxy.port, prefix=prefix)
        yield Server(kind, proxy, url, f"{backend.URL}?prefix={prefix}")
    finally:
        await proxy.close()
        if kind == "redis":
            await backend.delete_prefix(prefix)
        else:
            await backend.drop_tables(prefix)


@pytest.fixture
async def opened(server: Server) -> AsyncIterator[Driver]:
    driver = driver_from_url(server.through)
    await driver.open()
    await driver.counts(["q"])  # a connection in the pool, now idle
    yield driver
    await asyncio.wait_for(driver.close(), 10)


async def _fails_within(seconds: float, call: object) -> BackendUnavailableError:
    began = time.monotonic()
    with pytest.raises(BackendUnavailableError) as failed:
        await asyncio.wait_for(call, seconds + 10)  # type: ignore[arg-type]
    took = time.monotonic() - began
    assert took < seconds + SLACK, f"the call took {took:.1f}s"
    return failed.value


async def test_a_call_on_a_silent_connection_fails_within_its_timeout_then_the_next_works(
    server: Server, opened: Driver
) -> None:
    server.proxy.blackhole()
    await _fails_within(1.0, opened.counts(["q"]))
    # New connections get through: the silent one was thrown away, not pooled again.
    assert (await opened.counts(["q"]))["q"].pending == 0


async def test_a_single_push_on_a_silent_connection_fails_within_its_timeout_then_the_next_works(
    server: Server, opened: Driver
) -> None:
    await opened.push(make_job())  # the push statement is ready on the pooled connection
    server.proxy.blackhole()
    await _fails_within(1.0, opened.push(make_job()))

    await opened.push(make_job())
    assert (await opened.counts(["q"]))["q"].pending in (2, 3)  # the silent one may be in


async def test_a_streamed_push_whose_connection_goes_silent_midway_stores_nothing(
    postgres: Server,
) -> None:
    # postgres writes each part into one COPY as it comes: the server falls silent after the
    # first part went out, and the push fails within its timeout, its transaction never
    # committed.
    driver = driver_from_url(postgres.through)
    await driver.open()
    jobs = [make_job() for _ in range(400)]

    async def parts() -> AsyncIterator[list[NewJob]]:
        yield jobs[:200]
        await asyncio.sleep(0.05)  # the first part on the wire
        postgres.proxy.blackhole()
        yield jobs[200:]

    try:
        await _fails_within(1.0, driver.push_stream(parts()))
    finally:
        await asyncio.wait_for(driver.close(), 10)
    direct = driver_from_url(postgres.direct)
    try:
        assert (await direct.counts(["q"]))["q"].pending == 0
    finally:
        await direct.close()


async def test_a_call_that_cannot_get_a_connection_fails_within_its_timeout(
    server: Server, opened: Driver
) -> None:
    server.proxy.blackhole(new_for=30)
    await _fails_within(1.0, opened.counts(["q"]))
    # Every new connection is swallowed now: the next call cannot get one either.
    await _fails_within(1.0, opened.counts(["q"]))
    assert server.proxy.swallowed >= 1


async def test_calls_that_kept_failing_while_connections_were_swallowed_work_after_healing(
    server: Server, opened: Driver
) -> None:
    # Several callers at once, each giving up as the next takes the pool's lock: the race in
    # which asyncmy's checkout once swallowed its cancellation and hung for good.
    server.proxy.blackhole(new_for=3.0)
    healed = time.monotonic() + 3.0

    async def keep_calling() -> None:
        while time.monotonic() < healed:
            with contextlib.suppress(BackendUnavailableError):
                await opened.counts(["q"])

    await asyncio.gather(*(keep_calling() for _ in range(4)))

    async def works() -> bool:
        with contextlib.suppress(BackendUnavailableError):
            return (await opened.counts(["q"]))["q"].pending == 0
        return False

    await eventually(works, 5.0)


async def test_waiting_for_jobs_ends_on_time_while_the_connections_are_silent(
    server: Server, opened: Driver
) -> None:
    await opened.reserve(["q"], 1, 30.0, "w")  # postgres starts listening here
    server.proxy.blackhole(new_for=30)
    began = time.monotonic()
    await asyncio.wait_for(opened.wait(["q"], 0.2), 10)
    # redis reads the next due time first, which waits out its timeout (1 s).
    assert time.monotonic() - began < 0.2 + 1.0 + SLACK


async def test_closing_a_driver_whose_connections_went_silent_never_hangs(
    server: Server, opened: Driver
) -> None:
    await opened.reserve(["q"], 1, 30.0, "w")
    server.proxy.blackhole(new_for=30)
    began = time.monotonic()
    await asyncio.wait_for(opened.close(), 10)
    assert time.monotonic() - began < 1.0 + SLACK


async def test_a_silent_listen_connection_is_replaced_and_wakes_workers_again(
    postgres: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(pg_listener, "QUIET_CHECK", 0.3)
    caplog.set_level(logging.INFO, logger="conveyor.postgres")
    listening = PostgresDriver.from_url(postgres.through)
    pushing = PostgresDriver.from_url(postgres.direct)
    try:
        await listening.reserve(["q"], 1, 30.0, "w")
        postgres.proxy.blackhole()

        async def listening_again() -> bool:
            return "listening on" in caplog.text

        await eventually(listening_again, 0.3 + 1.0 + 5.0)
        assert "gave no answer to the LISTEN check within 1s" in caplog.text
        waiting = asyncio.create_task(listening.wait(["q"], 10.0))
        await asyncio.sleep(0.1)
        began = time.monotonic()
        await pushing.push_many([make_job()])
        await asyncio.wait_for(waiting, 5)
        assert time.monotonic() - began < 1.0, "the push did not wake the worker"
    finally:
        await listening.close()
        await pushing.close()


async def test_stopping_a_listen_connection_that_went_silent_mid_check_is_prompt(
    postgres: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # psycopg, cancelled mid-statement, sends a cancel request and waits up to 5 s (3.3; for
    # ever in older versions) for an answer that a silent connection never gives.
    monkeypatch.setattr(pg_listener, "QUIET_CHECK", 0.1)
    driver = PostgresDriver.from_url(postgres.through)
    await driver.reserve(["q"], 1, 30.0, "w")
    postgres.proxy.blackhole()
    await asyncio.sleep(0.3)  # the check's SELECT 1 is now waiting for an answer
    began = time.monotonic()
    await asyncio.wait_for(driver.close(), 10)
    assert time.monotonic() - began < 0.5
