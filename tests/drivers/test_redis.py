"""What only the Redis driver has: Lua scripts reloaded after NOSCRIPT, wake-ups across
connections, hash tags, key prefixes, its URL, error translation and reconnecting.

The protocol's behaviour is tested by the contract suite (tests/contract), which runs on Redis
too; these tests cover the rest. They use the Redis on 127.0.0.1:6379 under a random prefix,
and for reconnecting, a second redis-server of their own on a free loopback port.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection as RedisConnection
from redis.asyncio.connection import SSLConnection
from redis.crc import key_slot

import conveyor.drivers.redis.driver as driver_module
import conveyor.drivers.redis.inspection as inspection
from conveyor import Job, JobState, Registry, Worker, core
from conveyor.drivers import driver_from_url
from conveyor.drivers.base import Failure, QueueCounts, Release, Reservation, WorkerCounts
from conveyor.drivers.redis import RedisDriver
from conveyor.drivers.redis.scripts import SCRIPT_NAMES, load_scripts
from conveyor.errors import BackendUnavailableError, ConfigError, DriverError
from conveyor.job import ErrorInfo
from tests.backends import require_service
from tests.backends.private import private_redis
from tests.backends.redis import damage
from tests.contract.helpers import make_job
from tests.contract.test_hostile_names import registry_on

URL = "redis://127.0.0.1:6379/0"
START = 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no'
LONG_LEASE = 30.0


@pytest.fixture(autouse=True)
def redis_running() -> None:
    """Skip (or, under CI, fail) unless the shared Redis answers."""
    require_service("redis", 6379, START)


def fresh_prefix() -> str:
    return f"conveyor-test:{uuid.uuid4().hex[:12]}:"


async def delete_prefix(prefix: str) -> None:
    client = Redis.from_url(URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.delete(*keys[start : start + 1000])
    finally:
        await client.aclose()


@pytest.fixture
async def raw() -> AsyncIterator[Redis]:
    """A plain client on the shared server, to look behind the driver's back."""
    client = Redis.from_url(URL, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Awaitable[RedisDriver]]]:
    """Opens drivers on one fresh prefix (or on the prefix given); all closed and every key
    under those prefixes deleted at the end."""
    default = fresh_prefix()
    opened: list[RedisDriver] = []

    async def open_driver(url: str = URL, prefix: str | None = None) -> RedisDriver:
        driver = RedisDriver(url, prefix=prefix or default)
        await driver.open()
        opened.append(driver)
        return driver

    yield open_driver
    for driver in opened:
        await driver.close()
    for prefix in {driver.prefix for driver in opened} | {default}:
        await delete_prefix(prefix)


async def keys_under(raw: Redis, prefix: str) -> list[str]:
    return sorted([key async for key in raw.scan_iter(match=f"{prefix}*", count=10_000)])


# -- scripts -----------------------------------------------------------------------------------


def test_every_verb_has_a_script_documenting_keys_and_argv() -> None:
    scripts = load_scripts()

    assert set(scripts) == set(SCRIPT_NAMES)
    for script in scripts.values():
        header = script.source.split("]]", 1)[0]
        assert header.startswith(f"--[[\n  {script.name}:"), script.name
        assert "KEYS[1]" in header and ("ARGV[1]" in header or "No ARGV" in header), script.name


async def test_push_of_an_id_already_stored_stores_nothing_twice(connect) -> None:
    # A push retried after a lost reply must not store the job twice or reset it.
    driver = await connect()
    job = make_job()
    await driver.push(job)
    [reserved] = await driver.reserve(["q"], 1, LONG_LEASE, "w1")

    assert await driver.push(job) == job.id

    got = await driver.get(job.id)
    assert got is not None and got.state is JobState.RESERVED
    assert (await driver.counts(["q"]))["q"].pending == 0
    assert reserved.id == job.id


# -- wake-ups ----------------------------------------------------------------------------------


async def test_push_from_another_connection_wakes_wait_within_milliseconds(connect) -> None:
    waiting, pushing = await connect(), await connect()
    assert await waiting.reserve(["q"], 1, LONG_LEASE, "w1") == []
    latencies = []
    for _ in range(5):
        waiter = asyncio.create_task(waiting.wait(["q"], 5.0))
        await asyncio.sleep(0.05)  # let it block on the server
        begin = time.perf_counter()
        await pushing.push(make_job())
        await asyncio.wait_for(waiter, 5.0)
        latencies.append(time.perf_counter() - begin)
        assert len(await waiting.reserve(["q"], 10, LONG_LEASE, "w1")) == 1

    # A few milliseconds on loopback; the bound leaves room for a loaded test machine.
    assert sorted(latencies)[2] < 0.05, latencies


async def test_wait_returns_when_a_delayed_job_falls_due(connect) -> None:
    driver = await connect()
    due = time.time() + 0.3  # the server's clock is this host's
    await driver.push(make_job(delay=0.3))
    assert await driver.reserve(["q"], 1, LONG_LEASE, "w1") == []
    begin = time.monotonic()

    await driver.wait(["q"], 5.0)

    # Measured from the due time, not from `begin`: the push and reserve before it may take a
    # good part of the 0.3 s on a loaded machine. Not before it fell due, and well before the
    # 5 s timeout.
    early = due - time.time()
    elapsed = time.monotonic() - begin
    assert early <= 0.05, early
    assert elapsed < 2.0, elapsed
    assert len(await driver.reserve(["q"], 1, LONG_LEASE, "w1")) == 1


async def test_wait_returns_when_a_lease_runs_out(connect) -> None:
    driver = await connect()
    await driver.push(make_job())
    reserved_at = time.time()  # the lease starts after this: it runs out 0.3 s on, or later
    await driver.reserve(["q"], 1, 0.3, "crashed")
    begin = time.monotonic()

    await driver.wait(["q"], 5.0)

    # Not before the lease ran out, and well before the 5 s timeout.
    assert time.time() - reserved_at >= 0.25
    assert time.monotonic() - begin < 2.0
    assert len(await driver.reserve(["q"], 1, LONG_LEASE, "w2")) == 1


async def test_wait_on_several_queues_wakes_on_any(connect) -> None:
    waiting, pushing = await connect(), await connect()
    waiter = asyncio.create_task(waiting.wait(["a", "b", "c"], 5.0))
    await asyncio.sleep(0.05)
    begin = time.monotonic()

    await pushing.push(make_job("c"))

    await asyncio.wait_for(waiter, 5.0)
    assert time.monotonic() - begin < 2.0  # long before the wait's own 5 s


async def test_wake_up_list_stays_short_and_is_dropped_once_drained(connect, raw) -> None:
    driver = await connect()
    await driver.push_many([make_job() for _ in range(500)])
    wake = driver.keys("q").wake

    assert await raw.llen(wake) == 64
    while await driver.reserve(["q"], 200, LONG_LEASE, "w1"):
        pass
    assert await raw.exists(wake) == 0


async def test_wait_cancelled_at_any_moment_ends_at_once(connect) -> None:
    # Regression: redis-py sends with asyncio.wait_for, which on Python 3.11 may swallow a
    # cancel that lands as a write completes; wait then blocked for its whole timeout, and a
    # stopping worker with it.
    driver = await connect()
    await driver.reserve(["q"], 1, LONG_LEASE, "w1")
    for delay in (0.0, 0.0, 0.0005, 0.001, 0.002, 0.005, 0.05):
        waiter = asyncio.create_task(driver.wait(["q"], 5.0))
        await asyncio.sleep(delay)
        begin = time.monotonic()
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert time.monotonic() - begin < 2.0, delay  # long before the wait's own 5 s
        assert waiter.cancelled(), delay


async def test_wait_survives_cancellation_and_waits_again(connect) -> None:
    # The worker cancels `wait` when it stops or another driver woke it first.
    waiting, pushing = await connect(), await connect()
    waiter = asyncio.create_task(waiting.wait(["q"], 5.0))
    await asyncio.sleep(0.05)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)

    again = asyncio.create_task(waiting.wait(["q"], 5.0))
    await asyncio.sleep(0.05)
    await pushing.push(make_job())
    await asyncio.wait_for(again, 2.0)  # long before the wait's own 5 s


# -- layout ------------------------------------------------------------------------------------


async def fill_every_state(driver: RedisDriver, queue: str) -> None:
    await driver.push_many(
        [
            make_job(queue, unique="u"),
            make_job(queue, delay=60),
            make_job(queue),
            make_job(queue),
            make_job(queue, priority=-1),
        ]
    )
    one, two, three = await driver.reserve([queue], 3, LONG_LEASE, "w1")
    await driver.ack([Reservation(one.id, one.reservation or "")])
    await driver.fail([Failure(two.id, two.reservation or "", ErrorInfo("E", "boom"))])
    assert three.state is JobState.RESERVED


async def test_every_key_of_a_queue_shares_its_hash_tag(connect, raw: Redis) -> None:
    driver = await connect()
    for queue in ("mail", "reports:daily"):
        await fill_every_state(driver, queue)
    await driver.record_stats("w", WorkerCounts(processed=1))

    keys = await keys_under(raw, driver.prefix)

    shared = {driver.prefix + "queues", driver.prefix + "stats"}
    assert shared <= set(keys)
    for queue in ("mail", "reports:daily"):
        mine = [key for key in keys if key.startswith(f"{driver.prefix}{{{queue}}}:")]
        kinds = {key.split("}:", 1)[1].split(":", 1)[0] for key in mine}
        assert {"job", "pending", "delayed", "reserved", "succeeded", "failed"} <= kinds
        assert {key_slot(key.encode()) for key in mine} == {key_slot(queue.encode())}
    assert set(keys) - shared == {
        key for key in keys if "{mail}:" in key or "{reports:daily}:" in key
    }


async def test_prefixes_keep_drivers_apart(connect, raw: Redis) -> None:
    first = await connect(prefix=fresh_prefix())
    second = await connect(prefix=fresh_prefix())
    job = make_job(unique="k")
    await first.push(job)

    assert await second.get(job.id) is None
    assert (await second.counts(["q"]))["q"].pending == 0
    assert await second.reserve(["q"], 10, LONG_LEASE, "w1") == []
    other = make_job(unique="k")
    assert await second.push(other) == other.id
    assert all(key.startswith(first.prefix) for key in await keys_under(raw, first.prefix))
    assert len(await keys_under(raw, first.prefix)) == len(await keys_under(raw, second.prefix))


def test_default_prefix_is_conveyor() -> None:
    assert RedisDriver(URL).prefix == "conveyor:"


# -- reserve across queues -----------------------------------------------------------------------


async def test_reserve_across_queues_takes_the_best_jobs_up_to_the_limit(connect) -> None:
    driver = await connect()
    a_high = make_job("a", priority=5, delay=-3)
    a_low = make_job("a", priority=0, delay=-9)
    b_high = make_job("b", priority=5, delay=-2)
    c_mid = make_job("c", priority=1, delay=-1)
    await driver.push_many([a_high, a_low, b_high, c_mid])

    first = await driver.reserve(["a", "b", "c"], 3, LONG_LEASE, "w1")
    rest = await driver.reserve(["a", "b", "c"], 3, LONG_LEASE, "w1")

    assert [job.id for job in first] == [a_high.id, b_high.id, c_mid.id]
    assert [job.id for job in rest] == [a_low.id]


async def test_reserve_orders_a_lapsed_lease_among_pending_jobs_by_priority(connect) -> None:
    driver = await connect()
    lapsed = make_job(priority=3)
    await driver.push(lapsed)
    await driver.reserve(["q"], 1, 0.05, "crashed")
    low, high = make_job(priority=0, delay=-1e9), make_job(priority=9)
    await driver.push_many([low, high])
    await asyncio.sleep(0.1)

    order = [job.id for job in await driver.reserve(["q"], 3, LONG_LEASE, "w2")]

    assert order == [high.id, lapsed.id, low.id]


async def test_reserve_over_many_queues_takes_jobs_spread_across_them_in_two_round_trips(
    connect, monkeypatch
) -> None:
    """Jobs pushed in turn to 20 queues: the best 10 of all of them, in order, in two round
    trips (each queue's best read, then the takes together). Before, each round took jobs
    from the best queue only up to the next queue's best: one job per round trip here."""
    driver = await connect()
    queues = [f"q{n}" for n in range(20)]
    jobs = [make_job(queues[n % 20], priority=n % 3, delay=n - 100) for n in range(60)]
    await driver.push_many(jobs)
    best = sorted(jobs, key=lambda job: (-job.priority, job.delay))[:10]
    trips = 0
    call, run = driver._call, driver._run

    async def counted_call(*args: Any, **kwargs: Any) -> Any:
        nonlocal trips
        trips += 1
        return await call(*args, **kwargs)

    async def counted_run(*args: Any, **kwargs: Any) -> Any:
        nonlocal trips
        trips += 1
        return await run(*args, **kwargs)

    monkeypatch.setattr(driver, "_call", counted_call)
    monkeypatch.setattr(driver, "_run", counted_run)
    taken = await driver.reserve(queues, 10, LONG_LEASE, "w1")

    assert [job.id for job in taken] == [job.id for job in best]
    assert trips == 2


async def test_reserve_over_many_queues_fills_up_past_entries_of_jobs_gone(connect, raw) -> None:
    """A queue's best entry may be a job since finished (here purged behind its back): the
    reserve still takes as many jobs as are due, from the entries behind it."""
    driver = await connect()
    queues = ["a", "b", "c"]
    jobs = [make_job(queue, delay=-n) for n, queue in enumerate(queues * 3)]
    await driver.push_many(jobs)
    gone = min(jobs[::3], key=lambda job: job.delay)  # "a"'s oldest: among the best
    await raw.delete(f"{driver.prefix}{{a}}:job:{gone.id}")

    taken = await driver.reserve(queues, 8, LONG_LEASE, "w1")

    assert sorted(job.id for job in taken) == sorted(job.id for job in jobs if job is not gone)


# -- batches -----------------------------------------------------------------------------------


async def test_push_many_larger_than_one_script_call(connect, monkeypatch) -> None:
    monkeypatch.setattr(driver_module, "CHUNK", 7)
    driver = await connect()
    jobs = [make_job(unique=str(n % 20)) for n in range(50)]

    ids = await driver.push_many(jobs)

    assert ids == [jobs[n % 20].id for n in range(50)]
    assert (await driver.counts(["q"]))["q"].pending == 20


async def test_more_concurrent_calls_than_connections_wait_their_turn(connect) -> None:
    driver = await connect()
    jobs = [make_job() for _ in range(300)]  # the pool holds 64 connections

    ids = await asyncio.gather(*(driver.push(job) for job in jobs))

    assert ids == [job.id for job in jobs]
    assert (await driver.counts(["q"]))["q"].pending == 300


async def test_prune_deletes_more_than_one_batch(connect, monkeypatch) -> None:
    monkeypatch.setattr(driver_module, "PRUNE_BATCH", 2)
    driver = await connect()
    await driver.push_many([make_job() for _ in range(5)])
    jobs = await driver.reserve(["q"], 5, LONG_LEASE, "w1")
    await driver.ack([Reservation(job.id, job.reservation or "") for job in jobs])

    assert await driver.prune("q", -1) == 5
    assert (await driver.counts(["q"]))["q"].succeeded == 0


@pytest.mark.parametrize("act", ["retry", "purge"])
async def test_retry_or_purge_by_name_walks_the_failed_ids_once(connect, monkeypatch, act) -> None:
    """Each page of NAMED_BATCH walks failed_ids on from the last id of the page before, and
    no page reads every id of the state. Before, each page was a list_jobs that read (and
    sorted) every id: a retry by name of 100,000 of 200,000 failed jobs took about a minute,
    and the time grew with the square of the backlog."""
    monkeypatch.setattr(core, "NAMED_BATCH", 2)
    monkeypatch.setattr(inspection, "WALK", 3)  # 3 ids looked at per call, pages of 2
    driver = await connect()
    await driver.push_many([make_job(name=name) for name in "abaabaaba"])
    jobs = await driver.reserve(["q"], 9, LONG_LEASE, "w1")
    await driver.fail([Failure(job.id, job.reservation or "", ErrorInfo("E", "x")) for job in jobs])
    named = sorted(job.id for job in jobs if job.name == "a")
    starts: list[str | None] = []
    walk, read = driver._walk, driver._ids_of

    async def walked(*args: Any, **kwargs: Any) -> list[str]:
        starts.append(kwargs["after"])
        return await walk(*args, **kwargs)

    async def never(*args: Any) -> list[str]:
        raise AssertionError("every failed id read")

    monkeypatch.setattr(driver, "_walk", walked)
    monkeypatch.setattr(driver, "_ids_of", never)
    registry = registry_on(driver)

    if act == "retry":
        assert await registry.retry_failed("q", name="a") == 6
    else:
        assert await registry.purge("q", JobState.FAILED, name="a") == 6

    assert starts == [None, named[1], named[3], named[5]]
    monkeypatch.setattr(driver, "_ids_of", read)
    left = await driver.list_jobs("q", JobState.FAILED)
    assert [job.name for job in left] == ["b", "b", "b"]
    assert (await driver.counts(["q"]))["q"].pending == (6 if act == "retry" else 0)


async def test_settle_with_a_token_reserve_never_made_is_refused(connect) -> None:
    driver = await connect()
    await driver.push(make_job())
    [job] = await driver.reserve(["q"], 1, LONG_LEASE, "w1")

    forged = [Reservation(job.id, "x"), Reservation(job.id, "0" * 32 + ":other")]

    assert await driver.ack(forged) == set()
    assert await driver.renew(forged, LONG_LEASE) == set()


# -- URLs and errors ---------------------------------------------------------------------------


def test_url_sets_prefix_and_keeps_other_options() -> None:
    driver = RedisDriver.from_url("redis://127.0.0.1:6379/3?prefix=app:&socket_timeout=2")

    assert driver.prefix == "app:"
    assert driver.url == "redis://127.0.0.1:6379/3?socket_timeout=2"


@pytest.mark.parametrize("written", ["?timeout=3000000", "?timeout=1e12"])
def test_a_timeout_past_24_days_is_refused_when_the_driver_is_made(written: str) -> None:
    """Before, it was taken, and every call failed as a server out of reach ("a bytes-like
    object is required"): TCP_USER_TIMEOUT, in milliseconds, cannot hold it."""
    with pytest.raises(ConfigError, match=r"up to 2073600 \(24 days\)"):
        RedisDriver(f"redis://127.0.0.1:6379/0{written}")


async def test_a_timeout_of_24_days_is_kept(connect) -> None:
    driver = await connect(f"{URL}?timeout={24 * 86_400}")

    assert await driver.push(make_job()) is not None
    assert await asyncio.to_thread(driver.push_in_thread, make_job()) is not None


def test_prefix_argument_wins_over_url() -> None:
    assert RedisDriver("redis://127.0.0.1?prefix=a:", prefix="b:").prefix == "b:"


def test_driver_from_url_makes_redis_and_tls_drivers() -> None:
    plain = driver_from_url("redis://127.0.0.1:6379/0")
    tls = driver_from_url("rediss://:secret@127.0.0.1:6380/0?prefix=t:")

    assert isinstance(plain, RedisDriver) and isinstance(tls, RedisDriver)
    assert tls.prefix == "t:"
    pool = tls._redis().connection_pool  # type: ignore[attr-defined]
    assert pool.connection_class is SSLConnection
    assert pool.connection_kwargs["password"] == "secret"


def test_url_from_environment(monkeypatch) -> None:
    monkeypatch.setenv("CONVEYOR_REDIS_URL", "redis://127.0.0.1:6379/5?prefix=env:")

    driver = driver_from_url("redis")

    assert isinstance(driver, RedisDriver)
    assert (driver.url, driver.prefix) == ("redis://127.0.0.1:6379/5", "env:")


def test_password_never_shows() -> None:
    driver = RedisDriver("redis://user:hunter2@127.0.0.1:6379/0")

    assert "hunter2" not in repr(driver)
    with pytest.raises(ConfigError) as bad:
        RedisDriver("redis://user:hunter2@127.0.0.1:notaport/0")
    assert "hunter2" not in str(bad.value)


async def test_unreachable_server_raises_backend_unavailable_without_password() -> None:
    driver = RedisDriver(f"redis://:hunter2@127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    try:
        with pytest.raises(BackendUnavailableError) as down:
            await driver.push(make_job())
    finally:
        await driver.close()

    assert "hunter2" not in str(down.value)
    assert "127.0.0.1" in str(down.value)


async def test_server_errors_are_driver_errors(connect, raw: Redis) -> None:
    driver = await connect()
    await raw.set(driver.keys("q").pending, "not a sorted set")

    with pytest.raises(DriverError) as refused:
        await driver.reserve(["q"], 1, LONG_LEASE, "w1")

    assert not isinstance(refused.value, BackendUnavailableError)
    assert "WRONGTYPE" in str(refused.value)
    assert "give conveyor a prefix of its own (?prefix=)" in str(refused.value)


async def test_a_database_number_past_the_servers_says_which_setting_bounds_it() -> None:
    driver = RedisDriver(URL.rpartition("/")[0] + "/100000", prefix=fresh_prefix())

    with pytest.raises(DriverError, match="past the server's `databases` setting"):
        await driver.open()
    await driver.close()


# -- reconnecting ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Server:
    """A redis-server of this test's own on a free loopback port, without persistence."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [shutil.which("redis-server") or "redis-server", "--port", str(self.port)]
        command += ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self.process = None


@pytest.fixture
def server() -> Iterator[Server]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed here")
    own = Server()
    own.start()
    yield own
    own.stop()


async def test_driver_reconnects_after_the_server_comes_back(server: Server) -> None:
    driver = RedisDriver(server.url, socket_connect_timeout=0.5)
    await driver.open()
    try:
        await driver.push(make_job())
        server.stop()
        with pytest.raises(BackendUnavailableError):
            await driver.push(make_job())

        server.start()
        job = make_job()

        assert await driver.push(job) == job.id
        assert [got.id for got in await driver.reserve(["q"], 1, LONG_LEASE, "w1")] == [job.id]
    finally:
        await driver.close()


async def test_worker_carries_on_when_the_server_comes_back(server: Server) -> None:
    registry = Registry()
    registry.queue("q", driver=RedisDriver(server.url, socket_connect_timeout=0.5), workers=["w"])
    registry.worker("w", poll_interval=0.05)
    ran: list[int] = []
    event = asyncio.Event()

    @registry.job("tick")
    async def tick(job: Job[int]) -> None:
        ran.append(job.payload)
        event.set()

    worker = Worker(registry, "w")
    task = asyncio.create_task(worker.run())
    try:
        await registry.push("q", "tick", 1)
        await asyncio.wait_for(event.wait(), 5)
        server.stop()
        await asyncio.sleep(0.5)  # the worker's reserve fails meanwhile, and it backs off
        server.start()
        event.clear()
        await registry.push("q", "tick", 2)

        await asyncio.wait_for(event.wait(), 10)
        assert ran == [1, 2]
    finally:
        worker.stop(now=True)
        await asyncio.wait_for(task, 10)
        await registry.close()


# -- damaged jobs: a script does all its writes or none -----------------------------------------


async def test_every_script_meeting_a_damaged_job_settles_the_whole_batch(connect) -> None:
    # Redis keeps the writes a script made before it failed: a script that tripped over one
    # damaged job half-way would lose the jobs before it. So every script takes them in stride.
    driver = await connect()
    jobs = [make_job() for _ in range(5)]
    await driver.push_many(jobs)
    reserved = await driver.reserve(["q"], 5, LONG_LEASE, "w1")
    victim = reserved[2].id
    for field, raw in (("attempt", "x"), ("rank", None), ("available_at", "soon")):
        await damage(driver.prefix, victim, field, raw)
    ids = {job.id for job in jobs}

    given_back = [Release(job.id, job.reservation or "", 0.0, None, False) for job in reserved]
    assert await driver.release(given_back) == ids
    again = await driver.reserve(["q"], 5, LONG_LEASE, "w1")
    assert {job.id for job in again} == ids
    failures = [Failure(job.id, job.reservation or "", ErrorInfo("E", "x")) for job in again]
    assert await driver.fail(failures) == ids
    assert await driver.retry_failed("q") == 5
    await damage(driver.prefix, victim, "available_at", "soon")
    assert await driver.purge("q", JobState.PENDING) == 5
    assert (await driver.counts(["q"]))["q"] == QueueCounts()


async def test_close_leaves_a_push_in_another_thread_to_finish(tmp_path: Path) -> None:
    """close() while a plain thread's push waits for its reply (the blocking facade closed
    under a Flask thread's push): the push gets its reply on its own connection. close() cut
    that connection under it: mostly the push was sent again on a new one, but about once in
    200 closes (4 threads pushing) it waited out its whole timeout, then failed."""
    with private_redis(tmp_path) as server:
        driver = driver_from_url(f"{server.url}?timeout=5")
        assert isinstance(driver, RedisDriver)
        await driver.open()
        job = make_job()
        admin = Redis.from_url(server.url)
        try:
            await driver.push(make_job())  # the queue known: a push may go from a thread
            assert await asyncio.to_thread(driver.push_in_thread, make_job())  # connected
            await admin.execute_command("CLIENT", "PAUSE", "500", "WRITE")
            pushing = asyncio.ensure_future(asyncio.to_thread(driver.push_in_thread, job))
            await asyncio.sleep(0.2)  # the push is sent and waits for the pause to end
            connections = (await admin.info("stats"))["total_connections_received"]
            await driver.close()
            started = time.monotonic()
            assert await pushing == job.id
            assert time.monotonic() - started < 4  # its reply, not its 5 s timeout
            # On the connection it was sent on: not cut under it, then sent again.
            assert (await admin.info("stats"))["total_connections_received"] == connections
            assert await driver.get(job.id) is not None
        finally:
            await admin.aclose()
            await driver.close()


async def commands_run(admin: Redis) -> dict[str, int]:
    """Calls per command since the server started (INFO commandstats), scripts' own too."""
    stats = await admin.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


async def test_a_page_of_pending_jobs_reads_the_page_not_the_whole_state(server: Server) -> None:
    """A page walks pending_ids from its cursor. Before, every page read every id of the
    state (a ZRANGE of the whole pending set, sorted here): with 400,000 pending jobs 0.5 s
    a page, and the server held for 100 ms. Counted on a server of the test's own."""
    driver = RedisDriver(server.url)
    await driver.open()
    admin = Redis.from_url(server.url, decode_responses=True)
    try:
        jobs = [make_job() for _ in range(3000)]
        await driver.push_many(jobs)
        ids = sorted(job.id for job in jobs)
        await driver.list_jobs("q", JobState.PENDING, 1)
        before = await commands_run(admin)

        page = await driver.list_jobs("q", JobState.PENDING, 10, 5, after=ids[1000])

        ran = {
            name: calls - before.get(name, 0) for name, calls in (await commands_run(admin)).items()
        }
        assert [job.id for job in page] == ids[1006:1016]
        assert 0 < ran["hmget"] <= 2 * 15  # the 15 ids walked (offset and limit), the page's
        assert ran["zrangebylex"] == 1
        assert not {"zrange", "zrangebyscore", "zscan"} & {name for name in ran if ran[name]}
    finally:
        await admin.aclose()
        await driver.close()


async def test_pending_jobs_stored_before_pending_ids_existed_are_listed(connect, raw) -> None:
    """Jobs pushed by a driver without pending_ids (an upgrade): the first listing adds them."""
    driver = await connect()
    due, later = [make_job() for _ in range(3)], [make_job(delay=60.0) for _ in range(2)]
    await driver.push_many(due + later)
    index = driver.keys("q").pending_ids
    await raw.delete(index)

    pending = await driver.list_jobs("q", JobState.PENDING)
    delayed = await driver.list_jobs("q", JobState.DELAYED)

    assert [job.id for job in pending] == sorted(job.id for job in due)
    assert [job.id for job in delayed] == sorted(job.id for job in later)
    assert await raw.zcard(index) == 5


async def test_failed_jobs_stored_before_failed_ids_existed_are_listed(connect, raw) -> None:
    driver = await connect()
    await driver.push_many([make_job(), make_job(), make_job()])
    jobs = await driver.reserve(["q"], 3, LONG_LEASE, "w1")
    await driver.fail([Failure(job.id, job.reservation or "", ErrorInfo("E", "x")) for job in jobs])
    index = driver.keys("q").failed_ids
    await raw.delete(index)

    listed = await driver.list_jobs("q", JobState.FAILED, 2, after=min(job.id for job in jobs))

    assert [job.id for job in listed] == sorted(job.id for job in jobs)[1:]
    assert await raw.zcard(index) == 3


async def test_an_id_an_older_reserve_left_in_pending_ids_is_dropped(connect, raw) -> None:
    driver = await connect()
    jobs = [make_job(), make_job()]
    await driver.push_many(jobs)
    [taken] = await driver.reserve(["q"], 1, LONG_LEASE, "w1")
    index = driver.keys("q").pending_ids
    await raw.zadd(index, {taken.id: 0})  # as a reserve of an older driver leaves it

    listed = await driver.list_jobs("q", JobState.PENDING)

    assert [job.id for job in listed] == [job.id for job in jobs if job.id != taken.id]
    assert await raw.zscore(index, taken.id) is None


async def test_a_queues_throughput_is_one_command_not_one_per_minute_and_state(
    connect: Callable[..., Awaitable[RedisDriver]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """120 ZCOUNTs (and a TIME) for an hour, each packed and parsed by the client: the
    dashboard's queues page took 0.5 s on 300 queues. A script counts them on the server."""
    driver = await connect()
    jobs = [make_job() for _ in range(3)]
    await driver.push_many(jobs)
    held = await driver.reserve(["q"], 3, LONG_LEASE, "w1")
    await driver.ack([Reservation(job.id, job.reservation or "") for job in held[:2]])
    await driver.fail([Failure(held[2].id, held[2].reservation or "", ErrorInfo("E", "x"))])
    await driver.throughput("q", 60)  # the script loaded
    packed: list[tuple[object, ...]] = []
    pack = RedisConnection.pack_command

    def counted(self: RedisConnection, *args: Any) -> Any:
        packed.append(args)
        return pack(self, *args)

    monkeypatch.setattr(RedisConnection, "pack_command", counted)
    seen = await driver.throughput("q", 60)

    assert (sum(seen.succeeded), sum(seen.failed), seen.succeeded[-1]) == (2, 1, 2)
    assert len(packed) == 1, [args[0] for args in packed]
