"""Rescues: a job whose worker stopped renewing its lease is taken back by the next reserve.

A rescue charges the job an attempt only if it was marked as running alone (`renew(...,
alone=True)`, which a worker does before running a rescued job with nothing beside it): a
death among other jobs may be another job's doing. `rescued` counts the rescues;
retry_failed starts the count again.
"""

from __future__ import annotations

import asyncio

from conveyor.drivers.base import Driver
from conveyor.job import JobInfo, JobState
from tests.backends import needs

from .helpers import (
    LONG_LEASE,
    PAST_SHORT_LEASE,
    SHORT_LEASE,
    failure_of,
    make_job,
    push_and_reserve,
    release_of,
    reservation,
)


async def rescue(driver: Driver, queues: list[str] | None = None) -> list[JobInfo]:
    """Let every SHORT_LEASE run out, then reserve what came back."""
    await asyncio.sleep(PAST_SHORT_LEASE)
    return await driver.reserve(queues or ["q"], 10, SHORT_LEASE, "rescuer")


async def test_reserve_of_a_pending_job_counts_an_attempt_not_a_rescue(driver: Driver) -> None:
    reserved = await push_and_reserve(driver)

    assert (reserved.attempt, reserved.rescued) == (1, 0)


@needs("lookup")
@needs("timed_leases")
async def test_first_rescue_counts_no_attempt(driver: Driver) -> None:
    first = await push_and_reserve(driver, lease=SHORT_LEASE)

    [again] = await rescue(driver)

    assert again.id == first.id
    assert (again.attempt, again.rescued) == (1, 1)
    got = await driver.get(first.id)
    assert got is not None and (got.attempt, got.rescued) == (1, 1)


@needs("timed_leases")
async def test_rescues_of_a_job_never_alone_count_no_attempt(driver: Driver) -> None:
    await push_and_reserve(driver, lease=SHORT_LEASE)
    await rescue(driver)

    [second] = await rescue(driver)
    [third] = await rescue(driver)

    assert (second.attempt, second.rescued) == (1, 2)
    assert (third.attempt, third.rescued) == (1, 3)


@needs("timed_leases")
async def test_each_rescue_of_a_job_running_alone_counts_an_attempt(driver: Driver) -> None:
    first = await push_and_reserve(driver, lease=SHORT_LEASE)
    assert await driver.renew([reservation(first)], SHORT_LEASE, alone=True) == {first.id}

    [second] = await rescue(driver)
    assert (second.attempt, second.rescued, second.alone) == (2, 1, False)
    await driver.renew([reservation(second)], SHORT_LEASE, alone=True)
    [third] = await rescue(driver)

    assert (third.attempt, third.rescued) == (3, 2)


@needs("lookup")
@needs("timed_leases")
async def test_the_alone_mark_shows_and_plain_renewals_keep_it(driver: Driver) -> None:
    reserved = await push_and_reserve(driver)

    await driver.renew([reservation(reserved)], LONG_LEASE, alone=True)
    await driver.renew([reservation(reserved)], LONG_LEASE)

    got = await driver.get(reserved.id)
    assert got is not None and got.alone


@needs("timed_leases")
async def test_rescues_counted_per_job_in_one_batch(driver: Driver) -> None:
    lonely = await push_and_reserve(driver, lease=SHORT_LEASE)
    await driver.renew([reservation(lonely)], SHORT_LEASE, alone=True)
    # On a queue of its own: on a loaded machine the lonely job's lease may run out before
    # this reserve, which would then take it back instead.
    crowded = await push_and_reserve(driver, make_job("q2"), lease=SHORT_LEASE)
    fresh = make_job()
    await driver.push(fresh)

    got = {job.id: (job.attempt, job.rescued) for job in await rescue(driver, ["q", "q2"])}

    assert got == {lonely.id: (2, 1), crowded.id: (1, 1), fresh.id: (1, 0)}


@needs("timed_leases")
async def test_release_keeps_the_rescued_count(driver: Driver) -> None:
    await push_and_reserve(driver, lease=SHORT_LEASE)
    [rescued] = await rescue(driver)

    assert await driver.release([release_of(rescued)]) == {rescued.id}
    [again] = await driver.reserve(["q"], 1, LONG_LEASE, "w2")

    assert (again.attempt, again.rescued) == (2, 1)


@needs("timed_leases")
async def test_retry_failed_starts_the_rescued_count_again(driver: Driver) -> None:
    await push_and_reserve(driver, lease=SHORT_LEASE)
    [rescued] = await rescue(driver)
    await driver.fail([failure_of(rescued)])

    assert await driver.retry_failed("q") == 1
    [again] = await driver.reserve(["q"], 1, LONG_LEASE, "w2")

    assert (again.attempt, again.rescued) == (1, 0)


@needs("timed_leases")
async def test_rescue_across_queues_counts_like_one_queue(driver: Driver) -> None:
    await push_and_reserve(driver, make_job(queue="a"), lease=SHORT_LEASE)
    await push_and_reserve(driver, make_job(queue="b"), lease=SHORT_LEASE)

    rescued = await rescue(driver, ["a", "b"])

    assert sorted((job.queue, job.attempt, job.rescued) for job in rescued) == [
        ("a", 1, 1),
        ("b", 1, 1),
    ]


@needs("lookup")
@needs("timed_leases")
async def test_acked_rescued_job_is_succeeded(driver: Driver) -> None:
    await push_and_reserve(driver, lease=SHORT_LEASE)
    [rescued] = await rescue(driver)

    assert await driver.ack([reservation(rescued)]) == {rescued.id}

    got = await driver.get(rescued.id)
    assert got is not None and got.state is JobState.SUCCEEDED and got.rescued == 1


@needs("unique")
async def test_a_job_whose_lease_ran_out_holds_its_unique_key_through_its_rescue(
    driver: Driver,
) -> None:
    reserved = await push_and_reserve(driver, make_job(unique="k"), lease=SHORT_LEASE)
    await asyncio.sleep(PAST_SHORT_LEASE)
    assert await driver.push(make_job(unique="k")) == reserved.id  # dead worker: still held

    assert [job.id for job in await rescue(driver)] == [reserved.id]
    assert await driver.push(make_job(unique="k")) == reserved.id
