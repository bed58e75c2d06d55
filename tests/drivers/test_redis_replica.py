"""The Redis driver on a master that is made a replica under it (REPLICAOF), without Sentinel:
a private master and replica (tests/backends/private.py), the master demoted and the replica
promoted by hand, as an operator or a failover script does. Writes then answer READONLY: each
call says the server is a replica now and what to do, and a worker backs off and carries on
once a master answers at that address again."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from conveyor import Job, Registry, Worker
from conveyor.drivers.redis import RedisDriver
from conveyor.errors import BackendUnavailableError
from tests.backends.private import PrivateRedis, private_redis, private_replicated_redis
from tests.contract.helpers import make_job

pytestmark = pytest.mark.timeout(60)

REPLICA_NOW = "this server is a replica now.*point the URL at the master, or use Sentinel"


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[PrivateRedis, PrivateRedis]]:
    with private_replicated_redis(tmp_path) as servers:
        yield servers


def replicaof(server: PrivateRedis, master: PrivateRedis | None) -> None:
    """REPLICAOF `master` on `server`, or REPLICAOF NO ONE (promote it) for None."""
    where = ("NO", "ONE") if master is None else ("127.0.0.1", str(master.port))
    with redis.Redis(port=server.port) as client:
        client.execute_command("REPLICAOF", *where)


def swap(master: PrivateRedis, replica: PrivateRedis) -> None:
    """The replica promoted, the master made its replica."""
    replicaof(replica, None)
    replicaof(master, replica)


async def test_every_write_to_a_master_turned_replica_names_the_fix(
    pair: tuple[PrivateRedis, PrivateRedis],
) -> None:
    """Before, READONLY read "is unavailable (...): check that it is running and reachable",
    though the server was running and reachable."""
    master, replica = pair
    driver = RedisDriver(master.url, prefix="sentinel-replica:")
    try:
        await driver.push(make_job())
        swap(master, replica)

        with pytest.raises(BackendUnavailableError, match=REPLICA_NOW):
            await driver.push(make_job())
        with pytest.raises(BackendUnavailableError, match=REPLICA_NOW):
            await driver.push_many([make_job(), make_job(queue="other")])
        with pytest.raises(BackendUnavailableError, match=REPLICA_NOW):
            await asyncio.to_thread(driver.push_in_thread, make_job())
        with pytest.raises(BackendUnavailableError, match=REPLICA_NOW):
            await driver.reserve(["q"], 1, 30.0, "w1")
        assert (await driver.counts(["q"]))["q"].pending == 1  # reads still answer
    finally:
        await driver.close()


async def test_a_worker_on_a_master_turned_replica_backs_off_then_runs_jobs_again(
    pair: tuple[PrivateRedis, PrivateRedis], caplog: pytest.LogCaptureFixture
) -> None:
    """The worker logs each refused reserve with the fix and waits longer each time (no
    spin, no crash); once the server is a master again, it runs a job pushed there."""
    master, replica = pair
    driver = RedisDriver(master.url, prefix="sentinel-replica:")
    registry = Registry()
    registry.queue("q", driver=driver, workers=["w"])
    registry.worker("w", poll_interval=0.05)
    ran = asyncio.Event()

    @registry.job("work")
    async def work(job: Job[int]) -> None:
        ran.set()

    swap(master, replica)
    worker = Worker(registry, "w")
    caplog.set_level(logging.WARNING, logger="conveyor")
    task = asyncio.create_task(worker.run())
    try:
        refusals: list[float] = []
        while len(refusals) < 4:
            await asyncio.sleep(0.05)
            assert not task.done(), task
            refusals = [
                float(found[1])
                for record in caplog.records
                if (
                    found := re.search(
                        r"reserve failed .*replica now.*again in ([\d.]+)s", record.getMessage()
                    )
                )
            ]
        assert refusals == sorted(refusals) and refusals[-1] > refusals[0], refusals

        replicaof(master, None)
        await registry.push("q", "work", 1)
        await asyncio.wait_for(ran.wait(), 30)
        assert not task.done()
    finally:
        worker.stop(now=True)
        await asyncio.wait_for(task, 20)
        await registry.close()


async def test_a_master_short_of_replicas_is_unavailable_for_now(tmp_path: Path) -> None:
    """`min-replicas-to-write` (which bounds what a failover loses) refuses writes with
    NOREPLICAS while too few replicas are in reach. Before, that was a refusal of the command
    (DriverError): a worker took its outcomes for refused ones, as with MISCONF before; and a
    pipeline's MISCONF, its message naming the command first, was one too."""
    with private_redis(tmp_path, options=["--min-replicas-to-write", "1"]) as server:
        driver = RedisDriver(server.url, prefix="sentinel-replica:")
        try:
            short = "cannot write for now.*NOREPLICAS.*min-replicas-to-write"
            with pytest.raises(BackendUnavailableError, match=short):
                await driver.push(make_job())
            with pytest.raises(BackendUnavailableError, match=short):
                await driver.push_many([make_job(), make_job(queue="other")])
            with pytest.raises(BackendUnavailableError, match=short):
                await driver.reserve(["q"], 1, 30.0, "w1")
        finally:
            await driver.close()
