"""Round trips per call, counted through a proxy (tests.backends.proxy) in front of the real
server: a worker's reserve, renew and settles of a whole batch cost one round trip each, as a
single push does, whatever the batch's size. Over a link where a round trip costs a
millisecond, every round trip more costs every batch that millisecond (docs/benchmarks.md,
"Over a link with latency"). Counts, never times.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from types import ModuleType
from typing import Any

import pytest

from conveyor import Job, Registry, Worker
from conveyor.drivers import driver_from_url
from conveyor.drivers.base import Driver, Failure
from conveyor.job import ErrorInfo
from tests.backends import eventually, mysql, postgres, redis, require_service
from tests.backends.proxy import Proxy
from tests.contract.helpers import make_job, release_of, reservation

pytestmark = pytest.mark.timeout(30)

#: kind -> (its tests.backends module, the real server's port, URL through the proxy's {port},
#: what removes a prefix's tables or keys)
SERVERS: dict[str, tuple[ModuleType, int, str, Callable[[str], Awaitable[object]]]] = {
    "postgres": (
        postgres,
        5432,
        "postgresql://postgres@127.0.0.1:{port}/test?prefix={prefix}",
        postgres.drop_tables,
    ),
    "mysql": (mysql, 3306, "mysql://root@127.0.0.1:{port}/test?prefix={prefix}", mysql.drop_tables),
    "redis": (redis, 6379, "redis://127.0.0.1:{port}/0?prefix={prefix}", redis.delete_prefix),
}

#: Each verb's round trips are counted on the last of this many cycles: the first ones pay a
#: round trip more, once (a new connection's set-up; psycopg preparing a statement after its
#: fifth run costs the sixth or seventh one).
CYCLES = 8
#: The last cycles, whose counts are compared.
STEADY = 3


@pytest.fixture(params=list(SERVERS))
async def through(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Proxy, Driver]]:
    """A proxy in front of the server, and a driver through it under a prefix of its own."""
    backend, port, url, remove = SERVERS[request.param]
    require_service(request.param, port, backend.START)
    prefix = backend.fresh_prefix()
    proxy = Proxy(port)
    await proxy.start()
    driver = driver_from_url(url.format(port=proxy.port, prefix=prefix))
    try:
        await driver.open()
        yield proxy, driver
    finally:
        await driver.close()
        await proxy.close()
        await remove(prefix)


async def _counted(proxy: Proxy, call: Awaitable[Any]) -> tuple[int, Any]:
    proxy.reset()
    result = await call
    return proxy.requests, result


async def _cycle(proxy: Proxy, driver: Driver) -> dict[str, int]:
    """Push 12 jobs, reserve 10, renew them, then ack 5, release 3 and fail 2: each verb's
    round trips."""
    trips: dict[str, int] = {}
    trips["push"], _ = await _counted(proxy, driver.push(make_job()))
    trips["push_many"], _ = await _counted(proxy, driver.push_many([make_job() for _ in range(11)]))
    trips["reserve"], jobs = await _counted(proxy, driver.reserve(["q"], 10, 30.0, "w"))
    assert len(jobs) == 10
    held = [reservation(job) for job in jobs]
    trips["renew"], renewed = await _counted(proxy, driver.renew(held, 30.0))
    trips["ack"], acked = await _counted(proxy, driver.ack(held[:5]))
    releases = [release_of(job) for job in jobs[5:8]]
    trips["release"], released = await _counted(proxy, driver.release(releases))
    error = ErrorInfo("ValueError", "no", "")
    failures = [Failure(job.id, job.reservation or "", error) for job in jobs[8:]]
    trips["fail"], failed = await _counted(proxy, driver.fail(failures))
    assert (len(renewed), len(acked), len(released), len(failed)) == (10, 5, 3, 2)
    await driver.reserve(["q"], 10, 30.0, "w")  # the released and the twelfth: out of the way
    return trips


#: kind -> what the idle worker's wait sends: the request to see pass before pushing.
WAITS = {"postgres": b"LISTEN", "mysql": b"BEGIN NOT ATOMIC", "redis": b"BLPOP"}


@pytest.mark.parametrize("kind", list(SERVERS))
async def test_an_idle_worker_behind_a_slow_link_wakes_for_a_push_from_elsewhere(
    kind: str,
) -> None:
    # The worker's link holds each chunk 5 ms each way; the push comes from another address
    # (no in-process wake-up, no doorbell), as from another machine. Its poll interval is
    # longer than the test's timeout: only the driver's wake-up (LISTEN/NOTIFY, MariaDB's
    # probe on the server, the blocking pop) can start the job.
    backend, port, url, remove = SERVERS[kind]
    require_service(kind, port, backend.START)
    prefix = backend.fresh_prefix()
    proxy = Proxy(port, delay=0.005, record=True)
    await proxy.start()
    registry = Registry()
    registry.queue("q", driver=url.format(port=proxy.port, prefix=prefix), workers=["w"])
    registry.worker("w", concurrency=1, poll_interval=60)
    pusher = Registry()
    pusher.queue("q", driver=url.format(port=port, prefix=prefix), workers=["w"])
    pusher.worker("w")  # never run
    started = asyncio.Event()

    @registry.job("j")
    async def run(job: Job[dict[str, int]]) -> None:
        started.set()

    @pusher.job("j")
    async def never(job: Job[dict[str, int]]) -> None:
        """Only pushed from here."""

    worker = Worker(registry, "w", schedules=False)
    task = asyncio.create_task(worker.run())
    try:
        await eventually(lambda: _seen(proxy, WAITS[kind]))
        await pusher.push("q", "j", {})
        await asyncio.wait_for(started.wait(), 20)
    finally:
        worker.stop()
        await task
        await registry.close()
        await pusher.close()
        await proxy.close()
        await remove(prefix)


async def _seen(proxy: Proxy, request: bytes) -> bool:
    return any(request in chunk for chunk in proxy.sent or [])


async def test_a_batch_is_reserved_renewed_and_settled_in_one_round_trip_each(
    through: tuple[Proxy, Driver],
) -> None:
    proxy, driver = through
    for _ in range(CYCLES - STEADY):
        await _cycle(proxy, driver)
    steady = [await _cycle(proxy, driver) for _ in range(STEADY)]
    # The fewest of the last cycles: a round trip that is not the call's own (a pooled
    # connection idle past IDLE_CHECK checked first, say: a postgres reserve counted 2 once,
    # in a whole-suite run on a loaded machine) comes now and then; the call's own, every time.
    trips = {verb: min(cycle[verb] for cycle in steady) for verb in steady[0]}
    assert trips == {
        "push": 1,
        "push_many": trips["push_many"],  # below: a constant, not one per job
        "reserve": 1,
        "renew": 1,
        "ack": 1,
        "release": 1,
        "fail": 1,
    }
    assert trips["push_many"] <= 4
