"""The Redis driver against its server's own states, on a redis-server of the test's own
(tests/backends/private.py): memory full under `maxmemory`, scripts flushed, a restart
without persistence, a Unix socket, a small proto-max-bulk-len. The shared server is never
reconfigured or flushed."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from redis.asyncio import Redis

import conveyor.drivers.redis.driver as driver_module
from conveyor import Job, JobState, Registry, Worker
from conveyor.drivers import driver_from_url
from conveyor.drivers.base import Reservation
from conveyor.drivers.redis import RedisDriver
from conveyor.errors import BackendUnavailableError, DriverError
from tests.backends.private import PrivateRedis, private_redis, spare_port, wait_for_port
from tests.contract.helpers import make_job

LONG_LEASE = 30.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateRedis]:
    with private_redis(tmp_path) as own:
        yield own


@pytest.fixture
async def raw(server: PrivateRedis) -> AsyncIterator[Redis]:
    client = Redis.from_url(server.url, decode_responses=True)
    yield client
    await client.aclose()


async def test_a_server_out_of_memory_is_unavailable_for_now_not_a_refusal(
    server: PrivateRedis, raw: Redis
) -> None:
    driver = RedisDriver(server.url)
    try:
        await driver.push(make_job())
        [job] = await driver.reserve(["q"], 1, LONG_LEASE, "w1")
        await raw.config_set("maxmemory", "1")  # noeviction, the default: writes are refused

        with pytest.raises(BackendUnavailableError, match="maxmemory"):
            await driver.push(make_job())
        with pytest.raises(BackendUnavailableError, match="maxmemory"):
            await driver.ack([Reservation(job.id, job.reservation or "")])

        await raw.config_set("maxmemory", "0")
        assert await driver.ack([Reservation(job.id, job.reservation or "")]) == {job.id}
    finally:
        await driver.close()


async def test_a_worker_keeps_its_acks_while_the_server_is_out_of_memory(
    server: PrivateRedis, raw: Redis
) -> None:
    """Before, each refused ack counted as a refusal of the job: after three the job that
    succeeded was written as failed (or, that refused too, ran again after its lease)."""
    driver = RedisDriver(server.url)
    registry = Registry()
    registry.queue("q", driver=driver, workers=["w"])
    registry.worker("w", poll_interval=0.05)
    started = asyncio.Event()
    go_on = asyncio.Event()

    @registry.job("slow")
    async def slow(job: Job[int]) -> None:
        started.set()
        await go_on.wait()

    job_id = await registry.push("q", "slow", 1)
    worker = Worker(registry, "w")
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(started.wait(), 10)
        await raw.config_set("maxmemory", "1")
        go_on.set()
        await asyncio.sleep(3)  # the settler's writes are refused meanwhile, several times
        await raw.config_set("maxmemory", "0")

        async def succeeded() -> None:
            while (info := await driver.get(job_id)) is None or info.state != JobState.SUCCEEDED:
                assert info is None or info.state != JobState.FAILED, info.errors
                await asyncio.sleep(0.05)

        await asyncio.wait_for(succeeded(), 20)
    finally:
        await raw.config_set("maxmemory", "0")
        worker.stop(now=True)
        await asyncio.wait_for(task, 20)
        await registry.close()


async def test_a_server_whose_snapshots_fail_is_unavailable_for_now(tmp_path: Path) -> None:
    """`stop-writes-on-bgsave-error` (the default) refuses writes with MISCONF until a
    snapshot succeeds again: the server's state, as memory running short is."""
    folder = tmp_path / "data"
    folder.mkdir()
    with private_redis(folder) as server:
        driver = RedisDriver(server.url)
        raw = Redis.from_url(server.url, decode_responses=True)
        try:
            await driver.push(make_job())
            await raw.config_set("save", "3600 1")
            shutil.rmtree(folder)  # its snapshot's file cannot be made
            await raw.bgsave()
            while (await raw.info("persistence"))["rdb_last_bgsave_status"] != "err":
                await asyncio.sleep(0.05)

            with pytest.raises(BackendUnavailableError, match="MISCONF"):
                await driver.push(make_job())
        finally:
            await raw.aclose()
            await driver.close()


async def test_a_server_busy_running_a_script_is_unavailable_for_now(
    server: PrivateRedis, raw: Redis
) -> None:
    driver = RedisDriver(server.url)
    other = Redis.from_url(server.url)
    try:
        await driver.push(make_job())
        await raw.config_set("busy-reply-threshold", "50")
        spin = "local t = redis.call('TIME')[1] + 3"
        spin += " while tonumber(redis.call('TIME')[1]) < t do end"
        busy = asyncio.create_task(other.eval(spin, 0))
        await asyncio.sleep(0.3)

        with pytest.raises(BackendUnavailableError, match="BUSY"):
            await driver.push(make_job())
        await busy
    finally:
        await other.aclose()
        await driver.close()


async def test_a_replica_cut_off_from_its_master_is_unavailable_for_now(tmp_path: Path) -> None:
    """MASTERDOWN (`replica-serve-stale-data no`), as a failover leaves a URL for a moment."""
    port = spare_port()
    replica = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path), "--replicaof", "127.0.0.1",
         str(spare_port()), "--replica-serve-stale-data", "no"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    driver = RedisDriver(f"redis://127.0.0.1:{port}/0")
    try:
        wait_for_port(port, up=True)
        with pytest.raises(BackendUnavailableError, match="point the URL at the master"):
            await driver.push(make_job())
    finally:
        await driver.close()
        replica.kill()
        replica.wait(5)


async def test_a_user_without_config_runs_a_worker_that_says_what_it_could_not_check(
    server: PrivateRedis, raw: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A managed Redis often denies CONFIG (or renames it): the worker runs its jobs, and says
    at start, where before it said nothing, that it could not check the server's durability."""
    await raw.execute_command("ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", "-config")
    url = server.url.replace("redis://", "redis://app:pw@")
    registry = Registry(default_driver=url)
    registry.queue("mail", workers=["main"])
    registry.worker("main")
    ran: list[int] = []

    @registry.job("hello", queue="mail")
    async def hello(job: Job[int]) -> None:
        ran.append(job.payload)

    await registry.push("mail", "hello", 1)
    with caplog.at_level(logging.INFO, logger="conveyor.worker"):
        await Worker(registry, "main", burst=True).run()
    await registry.close()

    assert ran == [1]
    [line] = [r.getMessage() for r in caplog.records if "could not read" in r.getMessage()]
    assert "queue 'mail'" in line and "'config|get'" in line and "pw" not in line


# -- SCRIPT FLUSH: the server forgets the scripts, which are loaded again ------------------------


@pytest.fixture
async def driver(server: PrivateRedis) -> AsyncIterator[RedisDriver]:
    opened = RedisDriver(server.url)
    await opened.open()
    yield opened
    await opened.close()


async def test_scripts_are_loaded_again_after_script_flush(driver: RedisDriver, raw: Redis) -> None:
    await driver.push(make_job())

    await raw.script_flush()
    job = make_job()

    assert await driver.push(job) == job.id
    [reserved] = await driver.reserve(["q"], 1, LONG_LEASE, "w1")
    await raw.script_flush()
    assert await driver.ack([Reservation(reserved.id, reserved.reservation or "")]) == {reserved.id}


async def test_pipelined_scripts_are_sent_again_after_script_flush(
    driver: RedisDriver, raw: Redis
) -> None:
    await raw.script_flush()

    # Several queues: push_many is a MULTI/EXEC of several script calls.
    jobs = [make_job("a"), make_job("b"), make_job("a")]
    assert await driver.push_many(jobs) == [job.id for job in jobs]
    reserved = await driver.reserve(["a", "b"], 3, LONG_LEASE, "w1")
    await raw.script_flush()

    # Several queues: one ack script call per queue, pipelined.
    done = await driver.ack([Reservation(job.id, job.reservation or "") for job in reserved])

    assert done == {job.id for job in jobs}


async def test_push_in_thread_loads_the_script_again_after_script_flush(
    driver: RedisDriver, raw: Redis
) -> None:
    await driver.push(make_job())
    await raw.script_flush()
    job = make_job()

    assert await asyncio.to_thread(driver.push_in_thread, job) == job.id
    assert await driver.get(job.id) is not None


# -- a restart without persistence: the server forgets everything --------------------------------


@pytest.fixture
def forgetful(tmp_path: Path) -> Iterator[PrivateRedis]:
    with private_redis(tmp_path, persistent=False) as own:
        yield own


def restart(server: PrivateRedis) -> None:
    server.kill()
    server.start()


async def test_a_job_pushed_after_a_restart_without_persistence_can_be_found(
    forgetful: PrivateRedis,
) -> None:
    """The set of queues that `get` and `cancel` search went with the restart; before, a
    producer that had pushed to the queue never added it again, so `conveyor job ID` said no
    such job, and it could not be cancelled, until the producer was restarted."""
    producer = RedisDriver(forgetful.url, socket_connect_timeout=0.5)
    looker = RedisDriver(forgetful.url, socket_connect_timeout=0.5)
    try:
        await producer.push(make_job())
        restart(forgetful)
        many = [make_job(), make_job("other")]

        await producer.push_many(many)

        for job in many:
            found = await looker.get(job.id)
            assert found is not None and found.state == JobState.PENDING
        assert await looker.cancel([many[0].id]) == {many[0].id}
    finally:
        await producer.close()
        await looker.close()


@pytest.mark.parametrize("sent_from", ["loop", "thread"])
async def test_a_single_push_after_a_restart_without_persistence_can_be_found(
    forgetful: PrivateRedis, sent_from: str
) -> None:
    producer = RedisDriver(forgetful.url, socket_connect_timeout=0.5)
    looker = RedisDriver(forgetful.url, socket_connect_timeout=0.5)
    try:
        await producer.push(make_job())
        restart(forgetful)
        job = make_job()

        if sent_from == "loop":
            assert await producer.push(job) == job.id
        else:
            assert await asyncio.to_thread(producer.push_in_thread, job) == job.id

        found = await looker.get(job.id)
        assert found is not None and found.state == JobState.PENDING
    finally:
        await producer.close()
        await looker.close()


# -- a Unix socket ---------------------------------------------------------------------------------


async def test_a_server_on_a_unix_socket_is_reached_by_its_unix_url(tmp_path: Path) -> None:
    """redis-py's form, unix:///path?db=N&password=...; before, the socket's path was taken for
    a database number (a ConfigError), and past that the TCP keepalive settings failed every
    connection with a TypeError."""
    sock = tmp_path / "redis.sock"
    server = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", str(sock), "--save", "",
         "--appendonly", "no", "--requirepass", "se/cr#t"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    driver = None
    try:
        while not sock.exists():
            assert server.poll() is None, "redis-server did not start"
            await asyncio.sleep(0.02)
        driver = driver_from_url(f"unix://{sock}?db=2&password=se%2Fcr%23t&timeout=5")
        assert isinstance(driver, RedisDriver) and "se/cr" not in driver.where()
        job = make_job()

        await driver.push(job)
        assert await asyncio.to_thread(driver.push_in_thread, make_job()) is not None
        await driver.wait(["q"], 0.05)  # the blocking client's BLPOP
        [got, _] = await driver.reserve(["q"], 2, LONG_LEASE, "w1")

        assert got.id == job.id
        raw = Redis(unix_socket_path=str(sock), password="se/cr#t", db=2)
        try:
            assert await raw.exists(driver.keys("q").job + job.id) == 1
        finally:
            await raw.aclose()
    finally:
        if driver is not None:
            await driver.close()
        server.kill()
        server.wait(5)


# -- payloads near proto-max-bulk-len ------------------------------------------------------------


@pytest.fixture
def small_bulk(tmp_path: Path) -> Iterator[str]:
    """A redis-server whose proto-max-bulk-len is its least, 1 MB (512 MB by default)."""
    port = spare_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--proto-max-bulk-len", "1mb", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, up=True)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.kill()
        server.wait(5)


async def test_a_batch_of_payloads_past_proto_max_bulk_len_is_cut_to_fit(
    small_bulk: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each payload fits, their sum in one script call does not: before, the batch was refused
    whole (at the default 512 MB: 1,000 jobs of 600 KB, each within max_payload_bytes)."""
    monkeypatch.setattr(driver_module, "CHUNK_CHARS", 512 * 1024, raising=False)
    driver = RedisDriver(small_bulk)
    try:
        jobs = [make_job(payload=json.dumps("x" * 400_000)) for _ in range(4)]
        jobs.append(make_job(queue="other"))

        assert await driver.push_many(jobs) == [job.id for job in jobs]
        reserved = await driver.reserve(["q"], 10, LONG_LEASE, "w1")
        assert {job.id for job in reserved} == {job.id for job in jobs[:4]}
    finally:
        await driver.close()


async def test_a_payload_past_proto_max_bulk_len_names_the_setting(small_bulk: str) -> None:
    driver = RedisDriver(small_bulk)
    try:
        big = replace(make_job(), payload=json.dumps("x" * 1_100_000))
        with pytest.raises(DriverError, match="proto-max-bulk-len"):
            await driver.push(big)
        assert await driver.push(make_job()) is not None  # the connection was replaced
    finally:
        await driver.close()
