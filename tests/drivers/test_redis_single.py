"""Single pushes on Redis. A job without meta or a unique key is push_one.lua, its arguments
push_many's run for a batch of one, laid flat (`push_one`), and it stores what push_many
stores; any other job is push.lua with push_many's argument. The blocking facade's push,
sent from the calling thread (`push_in_thread`): the same job as the async push stores, from
several threads at once, NOSCRIPT handled, the hooks and the event loop's own thread still
served by the loop, and a silent or unreachable server failing with BackendUnavailableError
within the driver's timeout.

The shared Redis on 127.0.0.1:6379, each test under a key prefix of its own; for the faults, a
TCP proxy in front of it (tests/backends/proxy.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis

import conveyor.drivers.redis.connection as connection_module
from conveyor import JobState, Registry
from conveyor.drivers.redis import RedisDriver
from conveyor.drivers.redis.connection import make_client
from conveyor.drivers.redis.records import push_jobs, push_one
from conveyor.errors import BackendUnavailableError
from conveyor.hooks import Event
from conveyor.job import NewJob, new_id
from tests.backends import require_service
from tests.backends.proxy import Proxy
from tests.backends.redis import START, URL, delete_prefix, fresh_prefix
from tests.contract.helpers import (
    Mail,
    mail_registry,
    make_job,
    push_from_threads,
    queue_driver,
    stored_alike,
)

pytestmark = pytest.mark.timeout(60)

#: Seconds a failing push may take beyond its timeout before the test calls it hung.
SLACK = 1.5


@pytest.mark.parametrize(
    "job",
    [
        NewJob(id=new_id(), queue="q", name="n", payload='{"a": "é \\" \\n \u2028"}'),
        NewJob(
            id="order.17:a-b",
            queue='q "é"',
            name="n\\",
            payload="{}",
            delay=-3.5,
            max_attempts=4,
            priority=-7,
            timeout=30,
            retry_delay='{"kind": "fixed"}',
        ),
        NewJob(id="a", queue="q", name="n", payload="{}", delay=60.0, priority=2**70),
        NewJob(id="a", queue="q", name="n", payload="{}", unique="u"),
        NewJob(id="a", queue="q", name="n", payload="{}", meta={"trace": "x"}),
    ],
    ids=["plain", "every-option", "delayed", "unique", "meta"],
)
def test_a_single_push_sends_what_push_many_sends_for_one_job(job: NewJob) -> None:
    if job.meta or job.unique is not None:
        assert push_one(job) is None  # push.lua, with push_jobs((job,))
        return
    [[delay, ranked, _, fields, items]] = json.loads(push_jobs((job,)))
    assert items == [job.id, job.payload]
    assert push_one(job) == [job.id, job.payload, delay, ranked, *fields]
    assert push_one(job) == [job.id, job.payload, delay, ranked, *fields]  # from the kept rest


@pytest.mark.parametrize(
    "args",
    [
        ("EVALSHA", "f" * 40, 2, "k:{q}:pending", "k:{q}:job:", '[["0.0", "é", 1.5]]'),
        ("EVALSHA", "f" * 40, 1, b"k:\xff", 0.1, 1e20, 10**20),
        ("EVALSHA", "f" * 40, 1, "id\udcff"),  # a byte kept with surrogateescape
    ],
    ids=["script-call", "bytes-and-numbers", "lone-surrogate"],
)
def test_a_script_call_is_packed_as_the_connection_packs_it(args: tuple[object, ...]) -> None:
    connection = make_client(URL, {}).connection_pool.make_connection()
    assert connection_module._pack(connection, args) == b"".join(connection.pack_command(*args))


def make_registry(url: str) -> Registry:
    return mail_registry(RedisDriver(url))


def driver_of(registry: Registry) -> RedisDriver:
    return queue_driver(registry, RedisDriver)


@pytest.fixture
def prefix() -> Iterator[str]:
    require_service("redis", 6379, START)
    chosen = fresh_prefix()
    yield chosen
    asyncio.run(delete_prefix(chosen))


@pytest.fixture
def registry(prefix: str) -> Iterator[Registry]:
    """A registry on the shared Redis, used only through the blocking facade."""
    registry = make_registry(f"{URL}?prefix={prefix}")
    yield registry
    registry.blocking.close()


def test_blocking_push_after_the_first_is_sent_from_the_calling_thread(
    registry: Registry,
) -> None:
    first = registry.blocking.push("q", "mail", Mail("a@example.com"))  # opens the driver
    assert driver_of(registry)._thread_client is None

    second = registry.blocking.push("q", "mail", Mail("a@example.com"))

    assert driver_of(registry)._thread_client is not None
    mine, theirs = stored_alike(
        registry.blocking.job_info(second), registry.blocking.job_info(first)
    )
    assert mine == theirs
    assert registry.blocking.queue_info()["q"].pending == 2


def test_blocking_push_from_a_thread_keeps_every_option(registry: Registry) -> None:
    registry.blocking.push("q", "mail", Mail("first"))
    options = dict(priority=7, timeout=30.0, meta={"k": "v"}, retry=4)

    job_id = registry.blocking.push("q", "mail", Mail("b"), delay=3600, **options)  # type: ignore[arg-type]
    again = registry.blocking.push("q", "mail", Mail("c"), unique="u1")
    same = registry.blocking.push("q", "mail", Mail("d"), unique="u1")
    chosen = registry.blocking.push("q", "mail", Mail("e"), job_id="order-17")
    repeated = registry.blocking.push("q", "mail", Mail("f"), job_id="order-17")

    info = registry.blocking.job_info(job_id)
    assert info is not None
    assert (info.state, info.priority, info.timeout, info.meta) == (
        JobState.DELAYED, 7, 30.0, {"k": "v"},
    )  # fmt: skip
    assert info.max_attempts == 5
    assert info.available_at - info.created_at == pytest.approx(3600, abs=0.01)
    assert same == again
    assert chosen == repeated == "order-17"
    assert driver_of(registry)._thread_client is not None
    counts = registry.blocking.queue_info()["q"]
    assert (counts.pending, counts.delayed) == (3, 1)


def test_blocking_pushes_from_several_threads_at_once_are_all_stored(registry: Registry) -> None:
    registry.blocking.push("q", "mail", Mail("first"))
    threads, each = 8, 25
    ids = push_from_threads(
        lambda text: registry.blocking.push("q", "mail", Mail(text)), threads, each
    )
    every = [job_id for mine in ids for job_id in mine]
    assert len(set(every)) == threads * each
    assert registry.blocking.queue_info()["q"].pending == threads * each + 1
    payloads = {registry.blocking.job_info(job_id).payload for job_id in ids[3]}  # type: ignore[union-attr]
    assert payloads == {f'{{"to":"3-{k}"}}' for k in range(each)}


def test_blocking_push_with_a_hook_goes_through_the_event_loop(registry: Registry) -> None:
    heard: list[str] = []

    def hook(event: Event) -> None:
        heard.append(event.job_id)

    registry.hook("pushed")(hook)
    ids = [registry.blocking.push("q", "mail", Mail(str(n))) for n in range(3)]

    assert heard == ids
    assert driver_of(registry)._thread_client is None


async def test_blocking_push_on_the_registrys_own_loop_is_refused(prefix: str) -> None:
    registry = make_registry(f"{URL}?prefix={prefix}")
    try:
        await registry.push("q", "mail", Mail("a"))
        with pytest.raises(RuntimeError, match="await the registry's own method"):
            registry.blocking.push("q", "mail", Mail("b"))
    finally:
        await registry.close()


async def test_blocking_push_from_a_thread_beside_the_running_loop(prefix: str) -> None:
    """As a plain handler of a worker pushes: the loop that opened the driver runs meanwhile."""
    registry = make_registry(f"{URL}?prefix={prefix}")
    try:
        await registry.push("q", "mail", Mail("a"))
        job_id = await asyncio.to_thread(registry.blocking.push, "q", "mail", Mail("b"))
        assert driver_of(registry)._thread_client is not None
        info = await registry.job_info(job_id)
        assert info is not None and info.state is JobState.PENDING
    finally:
        await registry.close()
    assert driver_of(registry)._thread_client is None  # closed with the driver


# -- the driver ------------------------------------------------------------------------------


@pytest.fixture
async def driver(prefix: str) -> AsyncIterator[RedisDriver]:
    opened = RedisDriver(URL, prefix=prefix)
    await opened.open()
    yield opened
    await opened.close()


async def test_a_push_on_a_connection_the_server_closed_is_sent_again_on_a_new_one(
    driver: RedisDriver,
) -> None:
    await driver.push(make_job())
    own = await driver._redis().execute_command("CLIENT ID")  # the pool's one connection
    with redis.Redis.from_url(URL) as killer:
        await asyncio.to_thread(killer.execute_command, "CLIENT KILL ID", own)
    job = make_job()

    assert await driver.push(job) == job.id
    assert (await driver.counts(["q"]))["q"].pending == 2
    assert await driver._redis().execute_command("CLIENT ID") != own


async def test_push_in_thread_declines_the_first_push_to_a_queue(driver: RedisDriver) -> None:
    assert await asyncio.to_thread(driver.push_in_thread, make_job()) is None

    await driver.push(make_job())
    job = make_job()

    assert await asyncio.to_thread(driver.push_in_thread, job) == job.id
    assert (await driver.counts(["q"]))["q"].pending == 2


async def test_push_in_thread_of_a_stored_id_stores_nothing_twice(driver: RedisDriver) -> None:
    await driver.push(make_job())
    job = make_job()
    await asyncio.to_thread(driver.push_in_thread, job)

    assert await asyncio.to_thread(driver.push_in_thread, job) == job.id
    assert (await driver.counts(["q"]))["q"].pending == 2


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"delay": 60.0},
        {"delay": -3.5, "priority": -7, "max_attempts": 4, "timeout": 30.0,
         "retry_delay": '{"kind": "fixed"}'},
        {"priority": 2**70},
    ],
    ids=["plain", "delayed", "every-option", "huge-priority"],
)  # fmt: skip
async def test_a_single_push_stores_what_push_many_stores(
    driver: RedisDriver, options: dict[str, Any]
) -> None:
    await driver.push(make_job())  # the queue is known: a push is then push_one.lua alone
    single, batch = make_job(**options), make_job(**options)

    assert await driver.push(single) == single.id
    assert await driver.push(single) == single.id  # stored already: nothing twice
    assert await driver.push_many([batch]) == [batch.id]

    client, keys = driver._redis(), driver.keys("q")
    mine, theirs = [await client.hgetall(keys.job + job.id) for job in (single, batch)]
    assert float(mine.pop("available_at")) - float(mine.pop("created_at")) == pytest.approx(
        float(theirs.pop("available_at")) - float(theirs.pop("created_at")), abs=1e-5
    )
    assert (mine.pop("id"), theirs.pop("id")) == (single.id, batch.id)
    assert mine == theirs
    pending = await client.zrange(keys.pending, 0, -1)
    placed = [[m[:16] for m in pending if m.endswith(job.id)] for job in (single, batch)]
    delayed = [await client.zscore(keys.delayed, job.id) is not None for job in (single, batch)]
    assert placed[0] == placed[1] and delayed[0] == delayed[1]
    assert len(placed[0]) + delayed[0] == 1
    counts = (await driver.counts(["q"]))["q"]
    assert counts.pending + counts.delayed == 3


# -- faults ----------------------------------------------------------------------------------


@pytest.fixture
async def proxy(prefix: str) -> AsyncIterator[Proxy]:
    proxy = Proxy(6379)
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.mark.parametrize("connected", [True, False], ids=["open-connection", "new-connection"])
async def test_push_in_thread_on_a_silent_server_fails_within_its_timeout(
    proxy: Proxy, prefix: str, connected: bool
) -> None:
    driver = RedisDriver(f"redis://127.0.0.1:{proxy.port}/0?timeout=1&prefix={prefix}")
    try:
        await driver.push(make_job())
        if connected:
            await asyncio.to_thread(driver.push_in_thread, make_job())  # its connection is open
        # Open connections go silent, and so do new ones for the next two seconds.
        proxy.blackhole(new_for=0.0 if connected else 2.0)

        started = time.monotonic()
        with pytest.raises(BackendUnavailableError, match=f"127.0.0.1:{proxy.port}"):
            await asyncio.to_thread(driver.push_in_thread, make_job())
        assert time.monotonic() - started < 1 + SLACK

        await asyncio.sleep(2.0 - (time.monotonic() - started))
        job = make_job()  # the silent connection was dropped: the next one is new
        assert await asyncio.to_thread(driver.push_in_thread, job) == job.id
    finally:
        await driver.close()


async def test_push_in_thread_on_an_unreachable_server_fails_within_its_timeout(
    proxy: Proxy, prefix: str
) -> None:
    driver = RedisDriver(f"redis://127.0.0.1:{proxy.port}/0?timeout=1&prefix={prefix}")
    try:
        await driver.push(make_job())
        await asyncio.to_thread(driver.push_in_thread, make_job())
        await proxy.cut()  # open connections broken, new ones refused

        started = time.monotonic()
        with pytest.raises(BackendUnavailableError, match="is unavailable"):
            await asyncio.to_thread(driver.push_in_thread, make_job())
        assert time.monotonic() - started < 1 + SLACK
    finally:
        await driver.close()
