"""stop_reserving: once no worker of a driver reserves a queue, the driver holds none of its
jobs but those handed out: what is pushed or released after goes to another worker, jobs
handed out stay held, and a reserve after it takes jobs again."""

from __future__ import annotations

import asyncio
import time

from conveyor.drivers.base import Driver
from conveyor.job import JobInfo

from .helpers import LONG_LEASE, make_job, push_and_reserve, release_of, reservation


async def reserve_until(driver: Driver, count: int, worker: str) -> list[JobInfo]:
    """`count` jobs of queue q: a broker sends deliveries in its own time, so one reserve
    right after a push may hand out only some. Fails if they do not all come."""
    deadline = time.monotonic() + 5
    jobs: list[JobInfo] = []
    while len(jobs) < count:
        jobs += await driver.reserve(["q"], count - len(jobs), LONG_LEASE, worker)
        if len(jobs) < count:
            assert time.monotonic() < deadline, f"{len(jobs)} of {count} jobs came"
            await asyncio.sleep(0.02)
    return jobs


async def test_jobs_pushed_or_released_after_a_worker_stopped_reserving_go_to_another(
    driver_pair: tuple[Driver, Driver],
) -> None:
    # On amqp the stopped worker's consumers went on taking deliveries, held unacknowledged
    # by a process that would never run them, until its connection closed.
    stopped, other = driver_pair
    released = await push_and_reserve(stopped)
    assert await stopped.release([release_of(released)]) == {released.id}
    await stopped.stop_reserving(["q"], "w1")
    pushed = [make_job() for _ in range(3)]
    await stopped.push_many(pushed)

    jobs = await reserve_until(other, 4, "w2")

    assert {job.id: (job.attempt, job.rescued) for job in jobs} == {
        released.id: (2, 0),  # released, not rescued: given back, it was no death
        **{job.id: (1, 0) for job in pushed},
    }


async def test_a_reserve_after_stop_reserving_takes_jobs_again(driver: Driver) -> None:
    assert await driver.reserve(["q"], 5, LONG_LEASE, "w1") == []
    await driver.stop_reserving(["q"], "w1")
    job = make_job()
    await driver.push(job)

    assert [held.id for held in await reserve_until(driver, 1, "w1")] == [job.id]


async def test_jobs_handed_out_stay_held_after_stop_reserving(driver: Driver) -> None:
    job = await push_and_reserve(driver, worker="w1")
    await driver.stop_reserving(["q"], "w1")

    assert await driver.renew([reservation(job)], LONG_LEASE) == {job.id}
    assert await driver.ack([reservation(job)]) == {job.id}


async def test_another_worker_of_the_driver_goes_on_reserving(driver: Driver) -> None:
    assert await driver.reserve(["q"], 5, LONG_LEASE, "w1") == []
    assert await driver.reserve(["q", "other"], 5, LONG_LEASE, "w2") == []
    await driver.stop_reserving(["q"], "w1")
    job = make_job()
    await driver.push(job)

    assert [held.id for held in await reserve_until(driver, 1, "w2")] == [job.id]
