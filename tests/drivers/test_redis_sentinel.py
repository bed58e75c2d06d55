"""The Redis driver behind Sentinel (redis+sentinel://): the URL read and checked, then a
private master, replica and sentinel (tests/backends/private.py): pushes, reserves, pushes
from a plain thread and the BLPOP wake-up all reach the master the sentinel names, and follow
it when the master is killed and the sentinel promotes the replica."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from conveyor import ConveyorError, Job, Registry, Worker
from conveyor.drivers import driver_from_url
from conveyor.drivers.redis import RedisDriver
from conveyor.drivers.redis.sentinel import SentinelUrl
from conveyor.errors import BackendUnavailableError, ConfigError
from tests.backends.private import PrivateRedis, PrivateSentinel, private_sentinel, spare_port
from tests.contract.helpers import make_job

pytestmark = pytest.mark.timeout(90)

PREFIX = "sentinel-test:"


# -- the URL -----------------------------------------------------------------------------------


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_master_settings() -> None:
    url = "redis+sentinel://:pw@s1,s2:26380,[::1]:26381/mymaster/3?sentinel_password=sp"
    where = SentinelUrl.parse(url)
    assert where.sentinels == [("s1", 26379), ("s2", 26380), ("::1", 26381)]
    assert where.service == "mymaster"
    assert (where.password, where.tls) == ("sp", False)
    assert where.plain == "redis://:pw@s1:26379/3"  # the master's settings, as redis:// reads them
    assert SentinelUrl.parse("rediss+sentinel://s1/m").plain == "rediss://s1:26379/"


def test_driver_from_url_takes_a_sentinel_url_without_connecting() -> None:
    driver = driver_from_url("redis+sentinel://127.0.0.1:1/mymaster")
    assert isinstance(driver, RedisDriver)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://s1:26379", "names no service"),
        ("redis+sentinel://s1:26379/", "names no service"),
        ("redis+sentinel://s1:port/m", "'port' of sentinel 's1' is not a number"),
        ("redis+sentinel://s1,,s2/m", "a sentinel's host is empty"),
        ("redis+sentinel://s1/m/zero", r"'zero' is not a number\): write it as redis\+sentinel://"),
        ("redis+sentinel://s1/m?master_name=m", "unknown option 'master_name'"),
        ("redis+sentinel://s1/m?ssl_ca_certs=/ca.pem", "write rediss:// for TLS"),
    ],
)
def test_a_bad_sentinel_url_is_refused_naming_what_to_write(url: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        RedisDriver(url)


def test_the_sentinels_password_is_never_shown() -> None:
    with pytest.raises(ConfigError) as refused:
        RedisDriver("redis+sentinel://:master-secret@s1/m?sentinel_password=s-secret&bad=1")
    assert "secret" not in str(refused.value), refused.value


# -- a master, a replica and a sentinel ---------------------------------------------------------


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[PrivateSentinel, PrivateRedis, PrivateRedis]]:
    with private_sentinel(tmp_path) as found:
        yield found


async def test_every_part_of_the_driver_reaches_the_master_the_sentinel_names(
    servers: tuple[PrivateSentinel, PrivateRedis, PrivateRedis],
) -> None:
    sentinel, master, _ = servers
    driver = RedisDriver(f"{sentinel.url}?prefix={PREFIX}")
    try:
        job_id = await driver.push(make_job())
        thread_id = await asyncio.to_thread(driver.push_in_thread, make_job())
        with redis.Redis(port=master.port, decode_responses=True) as raw:
            assert raw.scard(f"{PREFIX}queues") == 1  # written on the master itself
        reserved = await driver.reserve(["q"], 2, 30.0, "w1")
        assert {job.id for job in reserved} == {job_id, thread_id}

        waiting = asyncio.create_task(driver.wait(["q"], 60.0))
        await asyncio.sleep(0.2)  # BLPOP sent
        await driver.push(make_job())
        await asyncio.wait_for(waiting, 30)  # woken by the push, long before its 60 s
        assert (await driver.counts(["q"]))["q"].pending == 1
    finally:
        await driver.close()


async def test_a_service_no_sentinel_knows_names_the_fix(
    servers: tuple[PrivateSentinel, PrivateRedis, PrivateRedis],
) -> None:
    sentinel, _, _ = servers
    driver = RedisDriver(sentinel.url.replace(sentinel.SERVICE, "nosuch"))
    try:
        with pytest.raises(BackendUnavailableError, match="no sentinel names a live master"):
            await driver.push(make_job())
    finally:
        await driver.close()


async def test_sentinels_out_of_reach_are_named_by_address() -> None:
    """Before, redis-py's words named each sentinel by its client's repr, 1,500 characters."""
    ports = spare_port(), spare_port()
    driver = RedisDriver(f"redis+sentinel://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/m")
    try:
        with pytest.raises(BackendUnavailableError) as refused:
            await driver.push(make_job())
    finally:
        await driver.close()
    said = str(refused.value)
    assert f"sentinel 127.0.0.1:{ports[0]} - " in said and "<redis" not in said, said
    assert len(said) < 800, said


async def test_the_master_and_the_sentinels_each_get_their_own_password(tmp_path: Path) -> None:
    with private_sentinel(tmp_path, master_password="m-pw", password="s-pw") as found:
        sentinel, _, _ = found
        url = sentinel.url.replace("//", "//:m-pw@") + f"?prefix={PREFIX}"
        driver = RedisDriver(f"{url}&sentinel_password=s-pw")
        without = RedisDriver(url)
        try:
            assert await driver.push(make_job())
            with pytest.raises(BackendUnavailableError, match="no sentinel names"):
                await without.push(make_job())  # the sentinel refuses it: no password
        finally:
            await driver.close()
            await without.close()


async def test_a_worker_and_a_pusher_follow_the_master_through_a_failover(
    servers: tuple[PrivateSentinel, PrivateRedis, PrivateRedis],
) -> None:
    """The master is killed once every push so far reached the replica (WAIT): the sentinel
    promotes the replica, and the pusher and the worker carry on against it without a
    restart. Every push that returned runs; pushes in the gap are refused with
    BackendUnavailableError. Replication is asynchronous: without the WAIT, a push the master
    acknowledged but had not yet sent on could be lost (docs/reliability.md)."""
    sentinel, master, replica = servers
    driver = RedisDriver(f"{sentinel.url}?prefix={PREFIX}")
    registry = Registry()
    registry.queue("q", driver=driver, workers=["w"])
    registry.worker("w", concurrency=4, poll_interval=0.05, lease=2.0)
    runs: Counter[str] = Counter()
    first_run: dict[str, float] = {}

    @registry.job("work")
    async def work(job: Job[int]) -> None:
        runs[job.id] += 1
        first_run.setdefault(job.id, time.monotonic())

    pushed: dict[str, float] = {}  # id -> when its push returned
    refused = 0
    pushing = asyncio.Lock()  # held by each push; the test takes it to pause the pusher
    killed_at = 0.0

    async def push_on() -> None:
        nonlocal refused
        while not killed_at or sum(at > killed_at for at in pushed.values()) < 50:
            async with pushing:
                try:
                    pushed[await registry.push("q", "work", len(pushed))] = time.monotonic()
                except ConveyorError:
                    refused += 1
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.005)

    worker = Worker(registry, "w")
    working = asyncio.create_task(worker.run())
    pusher = asyncio.create_task(push_on())
    try:
        while len(runs) < 50:
            await asyncio.sleep(0.05)
        async with pushing:  # every push so far reached the replica, then the master dies
            with redis.Redis(port=master.port) as raw:
                raw.set(f"{PREFIX}fence", 1)
                assert raw.execute_command("WAIT", 1, 5000) == 1
            master.kill()
            killed_at = time.monotonic()
        await asyncio.wait_for(pusher, 60)
        promoted = sentinel.master_port()
        await driver.push(make_job(queue="other"))  # a thread's first push goes by the loop
        thread_id = await asyncio.to_thread(driver.push_in_thread, make_job(queue="other"))
        assert thread_id is not None
        waiting = asyncio.create_task(driver.wait(["other"], 60.0))  # BLPOP on the new master
        await asyncio.sleep(0.2)
        await driver.push(make_job(queue="other"))
        await asyncio.wait_for(waiting, 30)

        async def all_ran() -> None:
            while set(pushed) - set(runs):
                await asyncio.sleep(0.05)

        await asyncio.wait_for(all_ran(), 60)
        assert not working.done()
    finally:
        pusher.cancel()
        worker.stop(now=True)
        await asyncio.wait_for(working, 20)
    assert promoted == replica.port
    assert await driver.get(thread_id) is not None
    await registry.close()
    after = [at for job_id, at in pushed.items() if pushed[job_id] > killed_at]
    back = min(first_run[job_id] for job_id, at in pushed.items() if at > killed_at)
    twice = sum(count > 1 for count in runs.values())
    print(
        f"sentinel failover (down-after 1 s): {len(pushed)} pushes returned, {refused}"
        f" refused in the gap, pushes back {min(after) - killed_at:.1f} s and the worker"
        f" running jobs again {back - killed_at:.1f} s after the master died; lost 0, run"
        f" twice {twice}"
    )


async def test_a_call_cancelled_while_it_asks_the_sentinels_stays_cancelled(
    servers: tuple[PrivateSentinel, PrivateRedis, PrivateRedis],
) -> None:
    """Cancelled at each step of its first call (connecting: the sentinels asked, then the
    master), a call raises CancelledError. Before, the sentinels' connections had a socket
    timeout, which redis-py enforces on writes with asyncio.wait_for: on Python 3.11 that
    swallows a cancellation arriving as the write completes, and the call went on as if
    never cancelled. A worker's heartbeat so swallowed its stop's cancel and slept on: the
    stop never ended (the worker suite through a sentinel URL hung on it)."""
    sentinel, _, _ = servers
    ignored = []
    for steps in range(40):
        driver = RedisDriver(f"{sentinel.url}?prefix={PREFIX}")
        call = asyncio.create_task(driver.beat("identity", "w"))
        for _ in range(steps):
            await asyncio.sleep(0)
        if call.cancel():
            try:
                await call
                ignored.append(steps)
            except asyncio.CancelledError:
                pass
        await driver.close()
    assert not ignored, f"cancelled after {ignored} steps, the call went on"
