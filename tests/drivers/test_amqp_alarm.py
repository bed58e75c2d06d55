"""The amqp driver while RabbitMQ's disk alarm blocks publishers, on a private node (the
shared broker's alarms are never touched): `rabbitmqctl set_disk_free_limit 10000GB` raises
the alarm, a limit of 50MB clears it.

RabbitMQ 3.10 sends connection.blocked when a connection publishes after an alarm began, and
reads nothing more from it (its acks and calls included) until the alarm clears. Before, every
push then wrote its message into that unread connection and, unconfirmed, said "did not confirm
a push in time ... nothing of it counts as stored; try again", though each was stored once the
alarm cleared (a push tried again stored its job twice), and nothing said why.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from conveyor import Job, Registry, Worker
from conveyor.drivers.amqp import AmqpDriver
from conveyor.drivers.amqp.connection import is_blocked
from conveyor.errors import BackendUnavailableError
from conveyor.job import JobInfo
from tests.backends.private_rabbitmq import PrivateRabbitmq
from tests.contract.helpers import make_job
from tests.drivers.test_amqp import Item

pytestmark = pytest.mark.timeout(120)

#: Each call's deadline on the private node, in seconds, and so the heartbeat: short, so a
#: blocked call ends soon, but not 1 s: a broker that blocks a connection reads none of it,
#: heartbeats included, and on a loaded machine it dropped the connection as silent (the whole
#: suite: twice in a row) before the call after the refused push could meet the block.
TIMEOUT = 3.0


@pytest.fixture(scope="module")
def node() -> Iterator[PrivateRabbitmq]:
    server = PrivateRabbitmq()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
async def driver(node: PrivateRabbitmq) -> AsyncIterator[AmqpDriver]:
    """A driver on a prefix of its own; the alarm cleared after the test, whatever happened."""
    made = AmqpDriver(f"{node.url}?timeout={TIMEOUT}", prefix=f"alarm.{uuid.uuid4().hex[:8]}.")
    await made.open()
    try:
        yield made
    finally:
        node.clear_disk_alarm()
        await made.close()


async def _reserve_until(driver: AmqpDriver, job_id: str) -> list[JobInfo]:
    """Everything reserved from queue q up to and with job `job_id` (pushed last)."""
    jobs: list[JobInfo] = []
    deadline = time.monotonic() + 20
    while job_id not in {job.id for job in jobs}:
        assert time.monotonic() < deadline, f"job {job_id} never came: {len(jobs)} came"
        jobs += await driver.reserve(["q"], 100, 60, "w")
    return jobs


async def _push_until_refused(driver: AmqpDriver, stored: list[str]) -> str:
    """Push until the broker, told of its alarm (on its own time: a loaded machine takes a
    while), blocks the connection; what the refused push said. The ids pushed go in `stored`."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            stored.append(await driver.push(make_job()))
        except BackendUnavailableError as exc:
            # The broker's connection.blocked may come after the push's deadline on a loaded
            # machine: the calls that follow are the blocked connection's once it has come.
            while not is_blocked(driver._connection) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            return str(exc)
        await asyncio.sleep(0.01)
    raise AssertionError(f"no push was refused in 20 s: {len(stored)} stored")


async def test_a_push_while_the_disk_alarm_blocks_publishers_names_it_and_stores_nothing(
    node: PrivateRabbitmq, driver: AmqpDriver
) -> None:
    stored = [(await driver.push(make_job()))]
    node.raise_disk_alarm()
    began = await _push_until_refused(driver, stored)
    # The push that met the alarm was written: the broker stores it once the alarm clears.
    assert "blocking publishers (low on disk)" in began, began
    assert "stores it once the alarm clears" in began and "twice" in began, began
    with pytest.raises(BackendUnavailableError) as raised:
        await driver.push(make_job())  # nothing written: never stored
    said = str(raised.value)
    assert "blocking publishers (low on disk)" in said and "disk_free_limit" in said, said
    assert "Nothing of a push was sent" in said and "rabbitmqctl status" in said, said

    node.clear_disk_alarm()
    last = await driver.push(make_job())
    jobs = await _reserve_until(driver, last)

    assert len(jobs) == len(stored) + 2  # the one that met the alarm, and the last
    assert {*stored, last} <= {job.id for job in jobs}


async def test_a_call_past_the_first_blocked_publish_names_the_alarm(
    node: PrivateRabbitmq, driver: AmqpDriver
) -> None:
    node.raise_disk_alarm()
    await _push_until_refused(driver, [])
    with pytest.raises(BackendUnavailableError) as raised:
        await driver.reserve(["other"], 1, 60, "w")  # consuming: calls of its own
    said = str(raised.value)
    assert "low on disk" in said and "Nothing of this call was sent" in said, said

    node.clear_disk_alarm()
    # Before, the reserve's calls went out unanswered, the channel was closed and written to
    # again, and the broker, reading it all once the alarm cleared, closed the connection.
    assert await driver.reserve(["other"], 1, 60, "w") == []
    last = await driver.push(make_job())
    assert [job.id for job in await _reserve_until(driver, last)][-1] == last


async def test_a_worker_under_the_disk_alarm_loses_no_job_and_carries_on_when_it_clears(
    node: PrivateRabbitmq, driver: AmqpDriver, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry()
    registry.queue("q", driver=driver, workers=["w"])
    registry.worker("w", concurrency=4, poll_interval=0.05, stop_timeout=5)
    done: list[int] = []
    tries: list[int] = []
    ran = asyncio.Event()

    @registry.job("item")
    async def item(job: Job[Item]) -> None:
        done.append(job.payload.n)

    @registry.job("flaky", retry=1, retry_delay=0.1)
    async def flaky(job: Job[Item]) -> None:
        tries.append(job.attempt)
        ran.set()
        if job.attempt == 1:
            raise RuntimeError("first try fails")  # its retry publishes: blocked

    await registry.push("q", "flaky", Item(0))
    await registry.push_many("q", "item", [Item(n) for n in range(20)])
    node.raise_disk_alarm()
    worker = Worker(registry, "w")
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(ran.wait(), 20)
        await asyncio.sleep(4 * TIMEOUT)  # the retry waits, times out, backs off, waits
        assert tries == [1] and not task.done()
        node.clear_disk_alarm()
        deadline = time.monotonic() + 30
        while (len(set(done)) < 20 or tries != [1, 2]) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
    # The retry that met the alarm may run twice (at least once): its publish, written as the
    # alarm began, is stored once it clears, and so is the one the settler tried again.
    assert set(done) == set(range(20)) and tries[:2] == [1, 2] and set(tries[1:]) == {2}
    counts = (await driver.counts(["q"]))["q"]
    assert (counts.pending, counts.reserved, counts.failed) == (0, 0, 0)
    assert "low on disk" in caplog.text, caplog.text


async def test_a_worker_stopped_under_the_disk_alarm_stops_in_time_and_keeps_its_jobs(
    node: PrivateRabbitmq, driver: AmqpDriver
) -> None:
    registry = Registry()
    registry.queue("q", driver=driver, workers=["w"])
    registry.worker("w", concurrency=2, poll_interval=0.05, stop_timeout=2)
    tries: list[int] = []
    ran = asyncio.Event()

    @registry.job("flaky", retry=1, retry_delay=0.1)
    async def flaky(job: Job[Item]) -> None:
        tries.append(job.attempt)
        ran.set()
        if job.attempt == 1:
            raise RuntimeError("first try fails")

    job_id = await registry.push("q", "flaky", Item(0))
    node.raise_disk_alarm()
    worker = Worker(registry, "w")
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(ran.wait(), 20)
    await asyncio.sleep(2 * TIMEOUT)  # its retry waits on the alarm
    worker.stop()
    # Bounded: the stop timeout, and a call's deadline (telling the driver it stops).
    await asyncio.wait_for(task, 2 + 3 * TIMEOUT)
    await asyncio.wait_for(driver.close(), 4 * TIMEOUT)
    node.clear_disk_alarm()

    # Its release unwritten, the job went back to its queue with the connection: kept.
    jobs = await _reserve_until(driver, job_id)
    assert [(job.id, job.attempt) for job in jobs] == [(job_id, 1)]
