"""renew, ack, release and fail: what each changes, and fencing by reservation token."""

from __future__ import annotations

import asyncio
import time

from conveyor.drivers.base import Driver, Failure, Release, Reservation
from conveyor.job import ErrorInfo, JobInfo, JobState
from tests.backends import needs

from .helpers import (
    LONG_LEASE,
    PAST_SHORT_LEASE,
    SHORT_LEASE,
    assert_between,
    failure_of,
    make_job,
    push_and_reserve,
    release_of,
    reservation,
)

STALE = "0" * 32


def stale(job: JobInfo) -> Reservation:
    """A reservation of the job under a token `reserve` never handed out."""
    return Reservation(job.id, STALE)


async def snapshot(driver: Driver, job: JobInfo) -> JobInfo:
    got = await driver.get(job.id)
    assert got is not None
    return got


# ack


@needs("lookup")
async def test_ack_marks_job_succeeded_and_sets_finished_at(driver: Driver) -> None:
    reserved = await push_and_reserve(driver)
    before = time.time()

    assert await driver.ack([reservation(reserved)]) == {reserved.id}

    got = await snapshot(driver, reserved)
    assert got.state is JobState.SUCCEEDED
    assert_between(got.finished_at, before, time.time())


@needs("exact_counts")
async def test_ack_settles_a_batch(driver: Driver) -> None:
    await driver.push_many([make_job() for _ in range(3)])
    jobs = await driver.reserve(["q"], 3, LONG_LEASE, "w1")

    done = await driver.ack([reservation(job) for job in jobs])

    assert done == {job.id for job in jobs}
    assert (await driver.counts(["q"]))["q"].succeeded == 3


@needs("exact_counts")
async def test_one_ack_of_several_queues_counts_each_queue_and_only_what_it_settled(
    driver: Driver,
) -> None:
    """SQLite counts a batch's acks in one statement per batch (its migration 0010), not by a
    row trigger: each queue gets its own jobs, a refused item counts nowhere, and jobs that
    leave the succeeded state (purged, pruned) leave the count."""
    await driver.push_many([make_job("a") for _ in range(3)] + [make_job("b") for _ in range(2)])
    jobs = await driver.reserve(["a", "b"], 5, LONG_LEASE, "w1")
    late = jobs.pop()

    assert await driver.ack([reservation(job) for job in jobs] + [stale(late)]) == {
        job.id for job in jobs
    }
    assert await driver.ack([]) == set()

    counts = await driver.counts(["a", "b"])
    assert counts["a"].succeeded + counts["b"].succeeded == 4
    assert (counts["a"].succeeded, counts["b"].succeeded) == (
        sum(job.queue == "a" for job in jobs),
        sum(job.queue == "b" for job in jobs),
    )
    assert counts[late.queue].reserved == 1
    assert await driver.ack([reservation(late)]) == {late.id}
    assert (await driver.counts([late.queue]))[late.queue].succeeded == (
        3 if late.queue == "a" else 2
    )
    assert await driver.purge("a", JobState.SUCCEEDED) == 3
    assert (await driver.counts(["a", "b"]))["a"].succeeded == 0
    assert (await driver.counts(["a", "b"]))["b"].succeeded == 2


@needs("lookup")
async def test_ack_with_stale_token_changes_nothing(driver: Driver) -> None:
    reserved = await push_and_reserve(driver)
    before = await snapshot(driver, reserved)

    assert await driver.ack([stale(reserved)]) == set()

    assert await snapshot(driver, reserved) == before


@needs("lookup")
async def test_ack_returns_only_ids_it_changed(driver: Driver) -> None:
    await driver.push_many([make_job(), make_job()])
    good, bad = await driver.reserve(["q"], 2, LONG_LEASE, "w1")

    done = await driver.ack([reservation(good), stale(bad), Reservation("f" * 32, STALE)])

    assert done == {good.id}
    assert (await snapshot(driver, bad)).state is JobState.RESERVED


@needs("lookup")
async def test_ack_batch_naming_a_job_twice_settles_it_under_its_valid_token(
    driver: Driver,
) -> None:
    reserved = await push_and_reserve(driver)

    # Whichever comes last in the batch, the stale token never outweighs the valid one.
    assert await driver.ack([reservation(reserved), stale(reserved)]) == {reserved.id}
    assert (await snapshot(driver, reserved)).state is JobState.SUCCEEDED


async def test_renew_batch_naming_a_job_twice_renews_it_under_its_valid_token(
    driver: Driver,
) -> None:
    reserved = await push_and_reserve(driver, lease=SHORT_LEASE)

    assert await driver.renew([reservation(reserved), stale(reserved)], LONG_LEASE) == {reserved.id}
    await asyncio.sleep(PAST_SHORT_LEASE)
    assert await driver.reserve(["q"], 1, LONG_LEASE, "w2") == []


@needs("lookup")
async def test_release_and_fail_batches_naming_a_job_twice_use_its_valid_token(
    driver: Driver,
) -> None:
    await driver.push_many([make_job(), make_job()])
    released, failed = await driver.reserve(["q"], 2, LONG_LEASE, "w1")
    stale_release = Release(released.id, STALE, 60, ErrorInfo("E", "stale"))

    assert await driver.release([release_of(released), stale_release]) == {released.id}
    stale_failure = Failure(failed.id, STALE, ErrorInfo("E", "stale"))
    assert await driver.fail([failure_of(failed), stale_failure]) == {failed.id}
    got = await snapshot(driver, released)
    assert (got.state, got.error) == (JobState.PENDING, None)
    got = await snapshot(driver, failed)
    assert (got.state, got.error) == (JobState.FAILED, ErrorInfo("ValueError", "boom"))


async def test_ack_twice_is_refused_the_second_time(driver: Driver) -> None:
    reserved = await push_and_reserve(driver)
    await driver.ack([reservation(reserved)])

    assert await driver.ack([reservation(reserved)]) == set()


@needs("lookup")
@needs("exact_counts")
async def test_ack_refuses_job_never_reserved(driver: Driver) -> None:
    job = make_job()
    await driver.push(job)

    assert await driver.ack([Reservation(job.id, STALE)]) == set()
    assert await driver.get(job.id) is not None
    assert (await driver.counts(["q"]))["q"].pending == 1


@needs("lookup")
async def test_ack_refuses_released_job(driver: Driver) -> None:
    reserved = await push_and_reserve(driver)
    await driver.release([release_of(reserved)])

    assert await driver.ack([reservation(reserved)]) == set()
    assert (await snapshot(driver, reserved)).state is JobState.PENDING


@needs("timed_leases")
async def test_ack_after_lease_ran_out_succeeds_while_nobody_took_job_over(
    driver: Driver,
) -> None:
    reserved = await push_and_reserve(driver, lease=SHORT_LEASE)
    await asyncio.sleep(PAST_SHORT_LEASE)

    assert await driver.ack([reservation(reserved)]) == {reserved.id}
    assert (await snapshot(driver, reserved)).state is JobState.SUCCEEDED


async def test_concurrent_acks_of_one_reservation_succeed_once(
    driver_pair: tuple[Driver, Driver],
) -> None:
    reserved = await push_and_reserve(driver_pair[0])

    results = await asyncio.gather(
        *(driver_pair[i % 2].ack([reservation(reserved)]) for i in range(4))
    )

    assert sorted(len(result) for result in results) == [0, 0, 0, 1]


async def test_acked_job_is_never_reserved_again(driver: Driver) -> None:
    reserved = await push_and_reserve(driver, lease=SHORT_LEASE)
    await driver.ack([reservation(reserved)])
    await asyncio.sleep(PAST_SHORT_LEASE)

    assert await driver.reserve(["q"], 1, LONG_LEASE, "w1") == []


# renew


@needs("timed_leases")
async def test_renew_extends_the_lease(driver: Driver) -> None:
    reserved = await push_and_reserve(driver, lease=SHORT_LEASE)
    before = time.time()

    assert await driver.renew([reservation(reserved)], LONG_LEASE) == {reserved.id}

    got = await snapshot(driver, reserved)
    assert got.state is JobState.RESERVED
    assert_between(got.lease_expires_at, before + LONG_LEASE, time.time() + LONG_LEASE)


async def test_renewed_job_is_not_reserved_again_after_first_lease(driver: Driver) -> None:
    reserved = await push_and_reserve(driver, lease=SHORT_LEASE)
    await driver.renew([reservation(reserved)], LONG_LEASE)
    await asyncio.sleep(PAST_SHORT_LEASE)

    assert await driver.reserve(["q"], 1, LONG_LEASE, "w2") == []


@needs("timed_leases")
async def test_renew_keeps_token_and_attempt(driver: Driver) -> None:
    reserved = await push_and_reserve(driver)
    await driver.renew([reservation(reserved)], LONG_LEASE)

    got = await snapshot(driver, reserved)

    assert (got.reservation, got.attempt, got.worker) == (reserved.reservation, 1, "w1")
    assert await driver.ack([reservation(reserved)]) == {reserved.id}


@needs("timed_leases")
async def test_renew_with_stale_token_changes_nothing(driver: Driver) -> None:
    reserved = await push_and_reserve(driver, lease=SHORT_LEASE)
    before = await snapshot(driver, reserved)

    assert await driver.renew([stale(reserved)], LONG_LEASE) == set()

    assert await snapshot(driver, reserved) == before


@needs("timed_leases")
async def test_renew_refuses_job_taken_over(driver: Driver) -> None:
    first = await push_and_reserve(driver, lease=SHORT_LEASE)
    await asyncio.sleep(PAST_SHORT_LEASE)
    [again] = await driver.reserve(["q"], 1, LONG_LEASE, "w2")

    assert await driver.renew([reservation(first)], LONG_LEASE) == set()
    assert (await snapshot(driver, again)).reservation == again.reservation


@needs("timed_leases")
async def test_renew_refuses_finished_job(driver: Driver) -> None:
    reserved = await push_and_reserve(driver)
    await driver.ack([reservation(reserved)])

    assert await driver.renew([reservation(reserved)], LONG_LEASE) == set()
    assert (await snapshot(driver, reserved)).state is JobState.SUCCEEDED


# release


@needs("lookup")
async def test_release_to_the_past_makes_job_reservable_again(driver: Driver) -> None:
    reserved = await push_and_reserve(driver)

    assert await driver.release([release_of(reserved, -1)]) == {reserved.id}

    assert (await snapshot(driver, reserved)).state is JobState.PENDING
    [again] = await driver.reserve(["q"], 1, LONG_LEASE, "w2")
    assert again.id == reserved.id
    assert again.attempt == 2
    assert again.reservation != reserved.reservation


@needs("exact_counts")
async def test_release_to_the_future_shows_as_delayed(driver: Driver) -> None:
    reserved = await push_and_reserve(driver)
    before = time.time()

    await driver.release([release_of(reserved, 60)])

    got = await snapshot(driver, reserved)
    assert got.state is JobState.DELAYED
    assert_between(got.available_at, before + 60, time.time() + 60)
    counts = (await driver.counts(["q"]))["q"]
    assert (counts.delayed, counts.pending, counts.reserved) == (1, 0, 0)
    assert await driver.reserve(["q"], 1, LONG_LEASE, "w2") == []


@needs("lookup")
async def test_release_counts_the_attempt_by_default(driver: Driver) -> None:
    reserved = await push_and_reserve(driver)

    await driver.release([release_of(reserved)])

    assert (await snapshot(driver, reserved)).attempt == 1


@needs("lookup")
async def test_release_without_counting_gives_the_attempt_back(driver: Driver) -> None:
    reserved = await push_and_reserve(driver)

    await driver.release([release_of(reserved, count_attempt=False)])

    assert (await snapshot(driver, reserved)).attempt == 0
    [again] = await driver.reserve(["q"], 1, LONG_LEASE, "w2")
    assert again.attempt == 1


@needs("lookup")
async def test_release_records_the_error(driver: Driver) -> None:
    reserved = await push_and_reserve(driver)
    error = ErrorInfo("TimeoutError", "took too long", "Traceback (most recent call last): ...")

    await driver.release([release_of(reserved, error=error)])

    assert (await snapshot(driver, reserved)).error == error


@needs("lookup")
async def test_release_does_not_finish_the_job(driver: Driver) -> None:
    reserved = await push_and_reserve(driver)

    await driver.release([release_of(reserved)])

    assert (await snapshot(driver, reserved)).finished_at is None


@needs("lookup")
async def test_release_with_stale_token_changes_nothing(driver: Driver) -> None:
    reserved = await push_and_reserve(driver)
    before = await snapshot(driver, reserved)

    released = await driver.release([Release(reserved.id, STALE, -1)])

    assert released == set()
    assert await snapshot(driver, reserved) == before


@needs("lookup")
async def test_release_returns_only_ids_it_changed(driver: Driver) -> None:
    await driver.push_many([make_job(), make_job()])
    good, bad = await driver.reserve(["q"], 2, LONG_LEASE, "w1")

    released = await driver.release([release_of(good), Release(bad.id, STALE)])

    assert released == {good.id}
    assert (await snapshot(driver, bad)).state is JobState.RESERVED


# fail


@needs("lookup")
async def test_fail_moves_job_to_failed_with_error(driver: Driver) -> None:
    reserved = await push_and_reserve(driver)
    error = ErrorInfo("KeyError", "'user'", 'Traceback (most recent call last):\n  File "x"\n')
    before = time.time()

    assert await driver.fail([failure_of(reserved, error)]) == {reserved.id}

    got = await snapshot(driver, reserved)
    assert got.state is JobState.FAILED
    assert got.error == error
    assert_between(got.finished_at, before, time.time())


@needs("lookup")
async def test_fail_with_stale_token_changes_nothing(driver: Driver) -> None:
    reserved = await push_and_reserve(driver)
    before = await snapshot(driver, reserved)

    failed = await driver.fail([Failure(reserved.id, STALE, ErrorInfo("E", "m"))])

    assert failed == set()
    assert await snapshot(driver, reserved) == before


async def test_fail_returns_only_ids_it_changed(driver: Driver) -> None:
    await driver.push_many([make_job(), make_job()])
    good, bad = await driver.reserve(["q"], 2, LONG_LEASE, "w1")

    failed = await driver.fail([failure_of(good), Failure(bad.id, STALE, ErrorInfo("E", "m"))])

    assert failed == {good.id}
    counts = (await driver.counts(["q"]))["q"]
    assert (counts.failed, counts.reserved) == (1, 1)


async def test_failed_job_is_never_reserved_again(driver: Driver) -> None:
    reserved = await push_and_reserve(driver, lease=SHORT_LEASE)
    await driver.fail([failure_of(reserved)])
    await asyncio.sleep(PAST_SHORT_LEASE)

    assert await driver.reserve(["q"], 1, LONG_LEASE, "w1") == []


@needs("lookup")
async def test_fail_refuses_job_already_acked(driver: Driver) -> None:
    reserved = await push_and_reserve(driver)
    await driver.ack([reservation(reserved)])

    assert await driver.fail([failure_of(reserved)]) == set()
    assert (await snapshot(driver, reserved)).state is JobState.SUCCEEDED


@needs("timed_leases")
async def test_release_ends_the_lease_and_sets_when_the_job_is_due_again(driver: Driver) -> None:
    reserved = await push_and_reserve(driver)
    before = time.time()

    await driver.release([release_of(reserved, 30.0)])

    got = await snapshot(driver, reserved)
    assert got.lease_expires_at is None and got.reserved_at == reserved.reserved_at
    assert_between(got.available_at, before + 30, time.time() + 30)


@needs("lookup")
@needs("exact_counts")
async def test_ack_and_push_stores_the_successors_and_acks(driver: Driver) -> None:
    page = await push_and_reserve(driver)
    successor = make_job(queue="other", meta={"page": 1})
    again = make_job()  # its id stored already: the push stores nothing
    await driver.push(again)

    acked = await driver.ack_and_push([reservation(page)], [successor, again])

    assert acked == {page.id}
    got = await driver.get(page.id)
    assert got is not None and got.state is JobState.SUCCEEDED
    stored = await driver.get(successor.id)
    assert stored is not None and stored.state is JobState.PENDING
    assert (stored.queue, stored.meta) == ("other", {"page": 1})
    assert (await driver.counts(["q", "other"]))["q"].pending == 1


@needs("lookup")
async def test_ack_and_push_with_a_stale_token_still_pushes(driver: Driver) -> None:
    page = await push_and_reserve(driver)
    successor = make_job()

    assert await driver.ack_and_push([Reservation(page.id, STALE)], [successor]) == set()

    assert (await driver.get(page.id)).state is JobState.RESERVED  # type: ignore[union-attr]
    assert (await driver.get(successor.id)) is not None
