"""reserve: which due jobs it takes, in what order, and what it records on them."""

from __future__ import annotations

import asyncio
import time

from conveyor.drivers.base import Driver
from conveyor.job import JobState
from tests.backends import needs

from .helpers import (
    LONG_LEASE,
    PAST_SHORT_LEASE,
    SHORT_DELAY,
    SHORT_LEASE,
    assert_between,
    assert_time,
    make_job,
    push_and_reserve,
    reservation,
    reserve_all_one_by_one,
)


async def test_reserve_from_empty_queue_returns_nothing(driver: Driver) -> None:
    assert await driver.reserve(["q"], 10, LONG_LEASE, "w1") == []


async def test_reserve_from_no_queues_returns_nothing(driver: Driver) -> None:
    await driver.push(make_job())

    assert await driver.reserve([], 10, LONG_LEASE, "w1") == []


async def test_reserve_respects_limit(driver: Driver) -> None:
    await driver.push_many([make_job() for _ in range(5)])

    first = await driver.reserve(["q"], 3, LONG_LEASE, "w1")
    rest = await driver.reserve(["q"], 3, LONG_LEASE, "w1")

    assert (len(first), len(rest)) == (3, 2)
    assert not {job.id for job in first} & {job.id for job in rest}


async def test_reserve_marks_job_reserved_with_attempt_one(driver: Driver) -> None:
    await driver.push(make_job())

    [job] = await driver.reserve(["q"], 1, LONG_LEASE, "w1")

    assert job.state is JobState.RESERVED
    assert job.attempt == 1
    assert job.reservation


async def test_reserve_records_worker_and_lease_end(driver: Driver) -> None:
    await driver.push(make_job())
    before = time.time()

    [job] = await driver.reserve(["q"], 1, LONG_LEASE, "mailer-1")

    after = time.time()
    assert job.worker == "mailer-1"
    assert_between(job.reserved_at, before, after)
    assert_between(job.lease_expires_at, before + LONG_LEASE, after + LONG_LEASE)
    assert job.available_at <= job.reserved_at  # still when it became due


@needs("lookup")
@needs("timed_leases")
async def test_get_shows_what_reserve_recorded(driver: Driver) -> None:
    reserved = await push_and_reserve(driver, worker="mailer-1")

    got = await driver.get(reserved.id)

    assert got is not None
    assert got.state is JobState.RESERVED
    assert (got.attempt, got.reservation, got.worker) == (1, reserved.reservation, "mailer-1")
    assert_time(got.available_at, reserved.available_at)
    assert_time(got.reserved_at, reserved.reserved_at)
    assert_time(got.lease_expires_at, reserved.lease_expires_at)


async def test_reserve_returns_the_pushed_fields(driver: Driver) -> None:
    job = make_job(payload='{"a": 1}', max_attempts=4, priority=2, meta={"m": "x"})

    reserved = await push_and_reserve(driver, job)

    assert (reserved.queue, reserved.name, reserved.payload) == ("q", "j", '{"a": 1}')
    assert (reserved.max_attempts, reserved.priority, reserved.meta) == (4, 2, {"m": "x"})


@needs("priorities")
async def test_reserve_takes_highest_priority_first(driver: Driver) -> None:
    low = make_job(priority=-1, delay=-3)
    mid = make_job(priority=0, delay=-2)
    high = make_job(priority=10, delay=-1)
    await driver.push_many([mid, low, high])

    assert await reserve_all_one_by_one(driver, ["q"]) == [high.id, mid.id, low.id]


@needs("ordered")
async def test_reserve_takes_earliest_available_among_equal_priority(driver: Driver) -> None:
    jobs = [make_job(delay=-age) for age in (2, 5, 1, 4, 3)]
    await driver.push_many(jobs)

    order = await reserve_all_one_by_one(driver, ["q"])

    assert order == [job.id for job in sorted(jobs, key=lambda job: job.delay)]


@needs("ordered")
async def test_reserve_takes_jobs_pushed_one_at_a_time_in_push_order(driver: Driver) -> None:
    # Pushed back to back, many share their due time at the backend clock's precision (a
    # millisecond on sqlite): the order they were pushed in must still break the tie.
    jobs = [make_job() for _ in range(100)]
    for job in jobs:
        await driver.push(job)

    order = await reserve_all_one_by_one(driver, ["q"])

    assert order == [job.id for job in jobs]


@needs("ordered")
async def test_reserve_lists_its_jobs_best_first(driver: Driver) -> None:
    # A worker starts the jobs of one reserve in the order of its list (a worker of
    # concurrency 1 with prefetch takes two): earliest due first among equal priorities, even
    # where the push order (the ids) says otherwise.
    jobs = [make_job(delay=-age) for age in (1, 4, 2, 5, 3)] + [make_job(priority=1, delay=-1)]
    for job in jobs:
        await driver.push(job)

    got = await driver.reserve(["q"], len(jobs), LONG_LEASE, "w1")

    best_first = sorted(jobs, key=lambda job: (-job.priority, job.delay))
    assert [job.id for job in got] == [job.id for job in best_first]


@needs("ordered")
async def test_reserve_orders_by_priority_across_queues(driver: Driver) -> None:
    old_low = make_job(queue="a", priority=0, delay=-10)
    new_high = make_job(queue="b", priority=5, delay=-1)
    old_high = make_job(queue="a", priority=5, delay=-2)
    await driver.push_many([old_low, new_high, old_high])

    order = await reserve_all_one_by_one(driver, ["a", "b"])

    assert order == [old_high.id, new_high.id, old_low.id]


@needs("priorities")
async def test_reserve_takes_a_higher_priority_from_a_later_queue_first(driver: Driver) -> None:
    # No queue comes strictly first: a backlog in the first queue named holds back no job of
    # a higher priority in another (amqp, unordered among equal priorities, orders this too).
    backlog = [make_job(queue="a", priority=0) for _ in range(3)]
    urgent = make_job(queue="b", priority=5)
    await driver.push_many([*backlog, urgent])

    order = await reserve_all_one_by_one(driver, ["a", "b"])

    assert order[0] == urgent.id
    assert set(order[1:]) == {job.id for job in backlog}


async def test_reserve_takes_jobs_of_different_priorities_in_one_call(driver: Driver) -> None:
    jobs = [make_job(priority=p) for p in (5, 0, -5)]
    await driver.push_many(jobs)

    got = await driver.reserve(["q"], 3, LONG_LEASE, "w1")

    assert {job.id for job in got} == {job.id for job in jobs}


@needs("priorities")
async def test_reserve_limit_takes_the_highest_priorities(driver: Driver) -> None:
    high = [make_job(priority=9, delay=-1), make_job(priority=5, delay=0)]
    await driver.push_many([make_job(priority=0, delay=-5), *high])

    got = await driver.reserve(["q"], 2, LONG_LEASE, "w1")

    assert {job.id for job in got} == {job.id for job in high}


async def test_reserve_takes_due_job_behind_delayed_higher_priority_job(driver: Driver) -> None:
    await driver.push(make_job(priority=5, delay=60))
    due = make_job(priority=0)
    await driver.push(due)

    assert [job.id for job in await driver.reserve(["q"], 1, LONG_LEASE, "w1")] == [due.id]


async def test_reserve_takes_lower_priority_job_while_higher_one_is_reserved(
    driver: Driver,
) -> None:
    high, low = make_job(priority=5), make_job(priority=0)
    await driver.push_many([high, low])
    [first] = await driver.reserve(["q"], 1, LONG_LEASE, "w1")

    second = await driver.reserve(["q"], 1, LONG_LEASE, "w2")

    assert first.id == high.id
    assert [job.id for job in second] == [low.id]


async def test_reserve_takes_only_named_queues(driver: Driver) -> None:
    wanted = [make_job(queue="a"), make_job(queue="b")]
    await driver.push_many([*wanted, make_job(queue="c")])

    got = await driver.reserve(["a", "b"], 10, LONG_LEASE, "w1")

    assert {job.id for job in got} == {job.id for job in wanted}
    assert (await driver.counts(["c"]))["c"].pending == 1


async def test_reserve_skips_delayed_job(driver: Driver) -> None:
    await driver.push(make_job(delay=60))

    assert await driver.reserve(["q"], 10, LONG_LEASE, "w1") == []


async def test_reserve_takes_delayed_job_once_due(driver: Driver) -> None:
    job = make_job(delay=SHORT_DELAY)
    await driver.push(job)
    assert await driver.reserve(["q"], 1, LONG_LEASE, "w1") == []

    await asyncio.sleep(SHORT_DELAY + 0.1)  # until a little after it is due

    assert [got.id for got in await driver.reserve(["q"], 1, LONG_LEASE, "w1")] == [job.id]


async def test_reserve_skips_job_with_valid_lease(driver: Driver) -> None:
    await push_and_reserve(driver)

    assert await driver.reserve(["q"], 10, LONG_LEASE, "w2") == []


@needs("timed_leases")
async def test_reserve_takes_job_whose_lease_ran_out(driver: Driver) -> None:
    first = await push_and_reserve(driver, lease=SHORT_LEASE, worker="w1")
    await asyncio.sleep(PAST_SHORT_LEASE)

    [again] = await driver.reserve(["q"], 1, LONG_LEASE, "w2")

    assert again.id == first.id
    assert again.state is JobState.RESERVED
    assert (again.attempt, again.rescued) == (1, 1)  # see test_rescue.py
    assert again.reservation and again.reservation != first.reservation
    assert again.worker == "w2"


@needs("timed_leases")
async def test_job_taken_over_refuses_first_token(driver: Driver) -> None:
    first = await push_and_reserve(driver, lease=SHORT_LEASE, worker="w1")
    await asyncio.sleep(PAST_SHORT_LEASE)
    [again] = await driver.reserve(["q"], 1, LONG_LEASE, "w2")

    assert await driver.ack([reservation(first)]) == set()
    assert await driver.ack([reservation(again)]) == {first.id}


async def test_concurrent_reserves_never_share_a_job(driver: Driver) -> None:
    await driver.push_many([make_job() for _ in range(20)])

    batches = await asyncio.gather(
        *(driver.reserve(["q"], 3, LONG_LEASE, f"w{i}") for i in range(10))
    )

    ids = [job.id for batch in batches for job in batch]
    assert len(ids) == len(set(ids)) == 20


@needs("exact_counts")
@needs("timed_leases")
async def test_concurrent_reserves_on_two_connections_never_share_a_job(
    driver_pair: tuple[Driver, Driver],
) -> None:
    await driver_pair[0].push_many([make_job() for _ in range(20)])

    batches = await asyncio.gather(
        *(driver_pair[i % 2].reserve(["q"], 3, LONG_LEASE, f"w{i}") for i in range(10))
    )

    ids = [job.id for batch in batches for job in batch]
    assert len(ids) == len(set(ids)) == 20
    assert (await driver_pair[1].counts(["q"]))["q"].reserved == 20


@needs("timed_leases")
async def test_concurrent_reserves_of_expired_lease_hand_it_to_one_caller(
    driver_pair: tuple[Driver, Driver],
) -> None:
    await push_and_reserve(driver_pair[0], lease=SHORT_LEASE)
    await asyncio.sleep(PAST_SHORT_LEASE)

    batches = await asyncio.gather(
        *(driver_pair[i % 2].reserve(["q"], 1, LONG_LEASE, f"w{i}") for i in range(6))
    )

    assert sum(len(batch) for batch in batches) == 1
