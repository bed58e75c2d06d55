"""A worker that stops reserving on amqp: the driver cancels its consumers of the queues no
other worker of it reserves, and gives back what they were sent and had not handed out, in
order, neither an attempt nor a rescue; a worker still reserving goes on, even one whose
reserve races the stop. The real broker on 127.0.0.1:5672, a prefix per test.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from conveyor.drivers.amqp import AmqpDriver
from conveyor.errors import BackendUnavailableError
from tests.contract.helpers import make_job
from tests.drivers.test_amqp import LONG_LEASE, Make, make, reserve_count

__all__ = ["make"]  # the fixture, used by name


async def sent(driver: AmqpDriver, queue: str, count: int) -> None:
    """Wait until `count` deliveries of `queue` reached the driver (not handed out yet)."""
    deadline = time.monotonic() + 5
    while driver._ready_count(queue) < count:
        assert time.monotonic() < deadline, f"{driver._ready_count(queue)} of {count} came"
        await asyncio.sleep(0.02)


async def test_jobs_given_back_at_a_stop_keep_their_order_and_are_no_attempt_or_rescue(
    make: Make,
) -> None:
    stopping, pusher, other = await make(), await make(), await make()
    assert await stopping.reserve(["q"], 5, LONG_LEASE, "w1") == []  # consumes, 5 slots free
    jobs = [make_job() for _ in range(4)]
    await pusher.push_many(jobs)
    await sent(stopping, "q", 4)

    await stopping.stop_reserving(["q"], "w1")
    got = [(job.id, job.attempt, job.rescued) for job in await reserve_count(other, 4, "w2")]

    assert got == [(job.id, 1, 0) for job in jobs]
    assert stopping._unacked == set()
    assert stopping._consumers == {}


async def test_a_stop_leaves_the_queues_another_worker_of_the_driver_reserves(
    make: Make,
) -> None:
    shared, pusher = await make(), await make()
    assert await shared.reserve(["a", "b"], 5, LONG_LEASE, "w1") == []
    assert await shared.reserve(["b"], 5, LONG_LEASE, "w2") == []
    await pusher.push(make_job("b"))
    await sent(shared, "b", 1)

    await shared.stop_reserving(["a", "b"], "w1")

    assert set(shared._consumers.values()) == {"b"}  # "a" no longer consumed
    assert shared._ready_count("b") == 1  # kept for w2, not given back
    [job] = await shared.reserve(["b"], 5, LONG_LEASE, "w2")
    assert (job.queue, job.attempt, job.rescued) == ("b", 1, 0)


async def test_a_reserve_racing_a_stop_gets_every_job_and_consumes_on(make: Make) -> None:
    shared, pusher = await make(), await make()
    assert await shared.reserve(["q"], 5, LONG_LEASE, "w1") == []
    jobs = [make_job() for _ in range(3)]
    await pusher.push_many(jobs)
    await sent(shared, "q", 3)

    stopping = asyncio.create_task(shared.stop_reserving(["q"], "w1"))
    await asyncio.sleep(0)  # the stop is cancelling the consumer: w2 starts reserving now
    got = await shared.reserve(["q"], 5, LONG_LEASE, "w2")
    await stopping
    got += await reserve_count(shared, 3 - len(got), "w2")
    late = make_job()
    await pusher.push(late)
    got += await reserve_count(shared, 1, "w2")

    assert sorted((job.id, job.attempt, job.rescued) for job in got) == sorted(
        (job.id, 1, 0) for job in [*jobs, late]
    )


async def test_a_queue_consumed_again_after_a_stop_gets_a_consumer_tag_of_its_own(
    make: Make,
) -> None:
    # Tags were numbered by how many consumers there were: once one was cancelled, the next
    # took the tag of one still consuming, and the broker closed the channel for it.
    driver, pusher = await make(), await make()
    assert await driver.reserve(["a", "b"], 5, LONG_LEASE, "w1") == []
    await driver.stop_reserving(["a"], "w1")
    assert await driver.reserve(["a"], 5, LONG_LEASE, "w1") == []  # consumes "a" anew
    jobs = [make_job("a"), make_job("b")]
    await pusher.push_many(jobs)

    got: list[str] = []
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        got += [job.id for job in await driver.reserve(["a", "b"], 5, LONG_LEASE, "w1")]
    assert sorted(got) == sorted(job.id for job in jobs)


async def test_jobs_a_stop_could_not_copy_go_back_to_the_queue_not_left_held(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Taken off the driver's deliveries and then not published (no confirm in time), they
    # would stay unacknowledged on a live connection that no worker reserves from: requeued
    # instead, they come back marked redelivered (a rescue), never stranded.
    stopping, pusher, other = await make(), await make(), await make()
    assert await stopping.reserve(["q"], 5, LONG_LEASE, "w1") == []
    jobs = [make_job() for _ in range(2)]
    await pusher.push_many(jobs)
    await sent(stopping, "q", 2)

    async def unconfirmed(messages: Any, what: str, *, delayed: bool = False) -> None:
        raise BackendUnavailableError(f"RabbitMQ did not confirm {what} in time")

    monkeypatch.setattr(stopping, "_publish_all", unconfirmed)
    with pytest.raises(BackendUnavailableError, match="giving back prefetched jobs"):
        await stopping.stop_reserving(["q"], "w1")

    got = await reserve_count(other, 2, "w2")
    assert sorted((job.id, job.attempt, job.rescued) for job in got) == sorted(
        (job.id, 1, 1) for job in jobs
    )
    assert stopping._unacked == set()
